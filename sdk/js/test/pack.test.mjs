// `npm pack` yields a tarball that installs on its own (no runtime dependencies), loads as
// ESM in Node and type-checks from its declarations.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const npm = (args, cwd) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' });

test('npm pack yields an installable tarball with ESM and declarations', () => {
  const dir = mkdtempSync(join(tmpdir(), 'waygate-sdk-pack-'));
  try {
    npm(['pack', '--pack-destination', dir], root);
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tarball, 'a tarball');
    const app = join(dir, 'app');
    execFileSync('mkdir', [app]);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    npm(['install', '--offline', join(dir, tarball)], app);
    const listing = execFileSync('tar', ['-tzf', join(dir, tarball)], { encoding: 'utf8' });
    assert.match(listing, /package\/dist\/index\.d\.ts/);
    assert.doesNotMatch(listing, /package\/(src|test|node_modules)\//, 'only dist and the README ship');

    const loaded = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('@waygate/client'); console.log(Object.keys(m).sort().join(','))"],
      { cwd: app, encoding: 'utf8' },
    );
    for (const name of ['DeviceClient', 'TerminalClient', 'Waygate', 'WaygateError']) assert.ok(loaded.trim().split(',').includes(name), loaded);

    writeFileSync(
      join(app, 'use.ts'),
      `import { Waygate, DeviceClient, type ChannelMessage } from '@waygate/client';
const wg = new Waygate('ws://localhost:8080/ws', { getToken: async () => 'jwt', autoConnect: false });
wg.subscribe('news').on('message', (m: ChannelMessage) => m.offset.toFixed());
const p: Promise<{ offset: number }> = wg.publish('news', { a: 1 });
void p;
// @ts-expect-error: the event name is checked
wg.on('no-such-event', () => {});
new DeviceClient({ deviceId: 'd', wsEndpoint: 'ws://x', sessionToken: 't', handlers: { echo: async (args, ctx) => ({ args, at: ctx.deadline.toISOString() }) } });
`,
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: 'ES2020', moduleResolution: 'bundler', target: 'ES2020', lib: ['ES2020', 'DOM'], types: [] }, files: ['use.ts'] }),
    );
    try {
      execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', app], { encoding: 'utf8' });
    } catch (e) {
      assert.fail(`the declarations do not type-check a user's code:\n${e.stdout}${e.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
