// The shared scenarios in headless Chromium (Debian's package, driven by playwright-core),
// on a page that loads the built bundle, the same file the gateway's terminal page uses.
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { chromium } from 'playwright-core';

import { harnessFunctions, startProxy, startServer } from './harness.mjs';
import * as scenarios from './scenarios.mjs';

const HISTORY = 20;
const BROWSERS = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
const executable = process.env.CHROMIUM ?? BROWSERS.find((p) => existsSync(p));
const files = {
  '/sdk.js': new URL('../dist/waygate-client.js', import.meta.url),
  '/scenarios.mjs': new URL('./scenarios.mjs', import.meta.url),
};
const PAGE = `<!doctype html><meta charset="utf-8"><title>sdk test</title>
<script type="module">
import * as sdk from '/sdk.js';
import * as scenarios from '/scenarios.mjs';
window.runScenario = async (name, ctx) => {
  const h = { ...ctx, call: (fn, ...args) => window.harness(fn, args) };
  await scenarios[name](sdk, h);
  return 'ok';
};
document.title = 'ready';
</script>`;

// Without Chromium the tests skip loudly; under CI=true they fail (scripts/install-chromium.sh).
const missing = executable ? false : 'SKIPPED: no chromium (scripts/install-chromium.sh installs it)';
if (missing && process.env.CI === 'true') throw new Error('chromium is required under CI=true: run scripts/install-chromium.sh');

describe('shared scenarios in headless Chromium', { skip: missing }, () => {
  let server;
  let proxy;
  let site;
  let browser;
  let page;
  let ctx;
  before(async () => {
    server = await startServer({ WAYGATE_HISTORY_SIZE: String(HISTORY) });
    proxy = await startProxy(server.http);
    const fns = harnessFunctions(server, proxy, await server.user('browser@example.com'));
    site = http.createServer((req, res) => {
      const file = files[req.url];
      if (file) {
        res.writeHead(200, { 'Content-Type': 'text/javascript' });
        res.end(readFileSync(file));
      } else {
        res.writeHead(200, { 'Content-Type': 'text/html' });
        res.end(PAGE);
      }
    });
    await new Promise((r) => site.listen(0, '127.0.0.1', r));
    browser = await chromium.launch({ executablePath: executable, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    page = await browser.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(`page error: ${e.message}`));
    await page.exposeFunction('harness', (name, args) => fns[name](...args));
    await page.goto(`http://127.0.0.1:${site.address().port}/`);
    await page.waitForFunction(() => document.title === 'ready', null, { timeout: 15_000 }).catch((e) => {
      throw new Error(`the test page did not load the bundle: ${e.message}; console: ${logs.join(' | ')}`);
    });
    ctx = { direct: server.ws(), proxied: proxy.ws(), historySize: HISTORY };
  });
  after(async () => {
    await browser?.close();
    await new Promise((r) => (site ? site.close(r) : r()));
    await proxy?.close();
    await server?.stop();
  });
  for (const name of scenarios.shared) {
    test(name, async () => {
      await page.evaluate(([n, c]) => window.runScenario(n, c), [name, ctx]);
    });
  }
});
