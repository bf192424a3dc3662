// The browser bundle: one ESM file with every client, built the same way by `npm run build`
// (which also writes the copy the gateway serves) and by `npm run check:bundle` (which compares).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

export const root = fileURLToPath(new URL('..', import.meta.url));
/** The copy embedded in the waygate binary (served at /terminal/assets/waygate-client.js). */
export const servedCopy = fileURLToPath(new URL('../../../crates/waygate-server/assets/waygate-client.js', import.meta.url));

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

/** Bundles `entry` (or source text via `stdin`) and returns the output text. */
export async function bundle({ entry = 'src/index.ts', stdin, minify = false } = {}) {
  const out = await esbuild.build({
    absWorkingDir: root,
    entryPoints: stdin ? undefined : [entry],
    stdin: stdin ? { contents: stdin, resolveDir: root, loader: 'ts' } : undefined,
    bundle: true,
    format: 'esm',
    target: 'es2020',
    platform: 'neutral',
    minify,
    legalComments: 'none',
    banner: minify ? undefined : { js: `// ${pkg.name} ${pkg.version}: generated from sdk/js by \`npm run build\`; do not edit.` },
    write: false,
  });
  return out.outputFiles[0].text;
}
