// The SDK in Node against a real `waygate serve`: the shared scenarios, then what only Node
// can check (the process exits after close, tokens, terminals, a long run of cuts).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as sdk from '../dist/index.js';
import {
  API_KEY,
  api,
  harnessFunctions,
  jwt,
  randomName,
  redisReachable,
  redisUrl,
  sleep,
  startProxy,
  startServer,
  until,
} from './harness.mjs';
import * as scenarios from './scenarios.mjs';

const HISTORY = 20;

/**
 * Tests of SDK features whose server side is still being built on other branches. They are
 * skipped with the reason printed, never passed silently; `WAYGATE_SDK_PENDING=refresh,cancel,reattach`
 * runs them (and the lead drops an entry here once its server side is merged).
 */
const PENDING = {
  refresh: 'the server does not send refresh_required yet (access control, "JWT lifetime")',
  cancel: 'the server has no POST /api/gateway/tool-calls/{id}/cancel yet (operator console)',
  reattach: 'the server does not name terminal sessions yet ("sessions survive links")',
};
const enabled = new Set((process.env.WAYGATE_SDK_PENDING ?? '').split(',').filter(Boolean));
const pending = (key) => (enabled.has(key) ? false : `PENDING: ${PENDING[key]}; WAYGATE_SDK_PENDING=${key} runs it`);

const waitFor = (emitter, event, pred = () => true, ms = 15_000) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    const off = emitter.on(event, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args[0]);
    });
  });

// Cluster mode keeps offsets and history in Redis and may deliver a message twice around a
// recovery: the same scenarios run there too when a Redis is reachable (always under CI=true).
const redis = await redisReachable();
if (!redis && process.env.CI === 'true') throw new Error(`Redis at ${redisUrl()} is required under CI=true (bash scripts/services.sh)`);
const modes = [
  ['embedded', false, {}],
  ['cluster (Redis)', redis ? false : `SKIPPED: Redis at ${redisUrl()} unreachable`, {
    REDIS_URL: redisUrl(),
    WAYGATE_REDIS_PREFIX: `${randomName('sdk-test')}:`,
  }],
];

for (const [mode, skip, env] of modes) describe(`shared scenarios in Node, ${mode}`, { skip }, () => {
  let server;
  let proxy;
  let h;
  before(async () => {
    server = await startServer({ WAYGATE_HISTORY_SIZE: String(HISTORY), ...env });
    proxy = await startProxy(server.http);
    const fns = harnessFunctions(server, proxy, await server.user('node@example.com'));
    h = { direct: server.ws(), proxied: proxy.ws(), historySize: HISTORY, call: (name, ...args) => fns[name](...args) };
  });
  after(async () => {
    await proxy?.close();
    await server?.stop();
  });
  for (const name of scenarios.shared) {
    test(name, () => scenarios[name](sdk, h));
  }
});

test('the Node process exits on its own after close() (no timers left)', async () => {
  const server = await startServer();
  try {
    const user = await server.user('exit@example.com');
    const fixture = fileURLToPath(new URL('./fixtures/exit.mjs', import.meta.url));
    const child = spawn(process.execPath, ['--experimental-websocket', fixture, server.ws(), server.url(''), user], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    let exit = null;
    child.on('exit', (code, signal) => (exit = { code, signal }));
    try {
      await until(() => exit, 'the child to exit by itself', 20_000);
    } finally {
      child.kill('SIGKILL');
    }
    assert.deepEqual(exit, { code: 0, signal: null }, out);
    assert.match(out, /closed after a heartbeat, a publish, a message and a tool call/);
  } finally {
    await server.stop();
  }
});

test('messages published during repeated link cuts arrive once and in order', async () => {
  const server = await startServer({ WAYGATE_HISTORY_SIZE: '1000' });
  const proxy = await startProxy(server.http);
  const fns = harnessFunctions(server, proxy, null);
  const wg = new sdk.Waygate(proxy.ws(), { reconnectDelayMs: 20, reconnectMaxDelayMs: 200 });
  try {
    const channel = randomName('stress');
    const sub = wg.subscribe(channel);
    const got = [];
    const gaps = [];
    sub.on('message', (m) => got.push(m.offset));
    sub.on('gap', (g) => gaps.push(g));
    await waitFor(sub, 'subscribed');
    let reconnects = 0;
    wg.on('connected', () => reconnects++);
    const total = 300;
    let cuts = 0;
    for (let n = 1; n <= total; n++) {
      await fns.publishHttp(channel, { n });
      if (n % 40 === 0 && proxy.links > 0) {
        proxy.cut();
        cuts++;
      }
    }
    await until(() => got.length >= total, `${total} messages (have ${got.length})`);
    await sleep(200); // anything still in flight would be a duplicate
    assert.deepEqual(got, Array.from({ length: total }, (_, i) => i + 1));
    assert.deepEqual(gaps, []);
    assert.ok(cuts >= 3 && reconnects >= cuts, `${cuts} cuts, ${reconnects} reconnects`);
  } finally {
    wg.close();
    await proxy.close();
    await server.stop();
  }
});

test('a restarted embedded gateway lost the history: gap with epochChanged, then delivery goes on', async () => {
  const first = await startServer();
  const proxy = await startProxy(first.http);
  let second;
  const wg = new sdk.Waygate(proxy.ws(), { reconnectDelayMs: 20, reconnectMaxDelayMs: 200 });
  try {
    const channel = randomName('epoch');
    const sub = wg.subscribe(channel);
    const got = [];
    sub.on('message', (m) => got.push([m.offset, m.data.n]));
    await waitFor(sub, 'subscribed');
    await harnessFunctions(first, proxy, null).publishHttp(channel, { n: 1 });
    await harnessFunctions(first, proxy, null).publishHttp(channel, { n: 2 });
    await until(() => got.length === 2, 'two messages');
    const oldEpoch = sub.epoch;
    proxy.block(true);
    await first.stop();
    second = await startServer();
    proxy.retarget(second.http);
    const gap = waitFor(sub, 'gap');
    proxy.block(false);
    assert.deepEqual(await gap, { channel, from: 2, to: 0, epochChanged: true });
    assert.notEqual(sub.epoch, oldEpoch);
    await harnessFunctions(second, proxy, null).publishHttp(channel, { n: 3 });
    await until(() => got.length === 3, 'the first message of the new epoch');
    assert.deepEqual(got, [[1, 1], [2, 2], [1, 3]]);
  } finally {
    wg.close();
    await proxy.close();
    await first.stop();
    await second?.stop();
  }
});

test('a socket the server never greets is given up after connectTimeoutMs and retried', async () => {
  // Accepts the upgrade, then says nothing (a wrong endpoint, a wedged proxy).
  const accepted = new Set();
  const silent = net.createServer((c) => {
    accepted.add(c);
    c.once('data', (req) => {
      const key = /sec-websocket-key: *(\S+)/i.exec(req.toString())[1];
      const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      c.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    });
    c.on('error', () => {});
  });
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  const wg = new sdk.Waygate(`ws://127.0.0.1:${silent.address().port}/ws`, { connectTimeoutMs: 300, reconnectDelayMs: 20 });
  const drops = [];
  wg.on('disconnected', (d) => drops.push(d.reason));
  try {
    await until(() => drops.length >= 2, 'two given-up sockets');
    assert.deepEqual(drops.slice(0, 2), ['connect timeout', 'connect timeout']);
  } finally {
    wg.close();
    for (const c of accepted) c.destroy();
    silent.close();
  }
});

test('reconnect delays grow, are bounded and jittered, and reset after a stable connection', async () => {
  const server = await startServer();
  const proxy = await startProxy(server.http);
  const wg = new sdk.Waygate(proxy.ws(), { reconnectDelayMs: 20, reconnectMaxDelayMs: 160, stableAfterMs: 300 });
  const delays = [];
  wg.on('disconnected', (d) => delays.push(d.reconnectInMs));
  try {
    await waitFor(wg, 'connected');
    proxy.block(true);
    proxy.cut();
    await until(() => delays.length >= 8, 'eight failed attempts');
    const ceilings = [20, 40, 80, 160, 160, 160, 160, 160];
    delays.slice(0, 8).forEach((d, i) => assert.ok(d >= ceilings[i] / 2 && d <= ceilings[i], `attempt ${i}: ${d} ms, ceiling ${ceilings[i]}`));
    assert.ok(new Set(delays.slice(3, 8)).size > 1, `jittered: ${delays}`);
    // Up for longer than stableAfterMs: the next loss starts from the first delay again.
    proxy.block(false);
    await waitFor(wg, 'connected');
    await sleep(400);
    const after = waitFor(wg, 'disconnected');
    proxy.cut();
    const d = (await after).reconnectInMs;
    assert.ok(d >= 10 && d <= 20, `after a stable connection: ${d} ms`);
  } finally {
    wg.close();
    await proxy.close();
    await server.stop();
  }
});

describe('connect tokens (JWT)', () => {
  const SECRET = 'sdk-test-jwt-secret-0123456789abcdef';
  let server;
  before(async () => {
    server = await startServer({ WAYGATE_JWT_SECRET: SECRET });
  });
  after(() => server?.stop());
  const token = (sub, seconds = 300) => jwt(SECRET, { sub, exp: Math.floor(Date.now() / 1000) + seconds });

  test('a static token authenticates the connection', async () => {
    const wg = new sdk.Waygate(server.ws(), { token: token('static-user') });
    try {
      await waitFor(wg, 'connected');
      const info = await api(server, 'GET', `/api/connections/${wg.connectionId}`, { token: API_KEY });
      assert.equal(info.json.userId, 'static-user');
    } finally {
      wg.close();
    }
  });

  test('getToken is asked before every connect, and a failing getToken is retried', async () => {
    let calls = 0;
    const errors = [];
    const wg = new sdk.Waygate(server.ws(), {
      reconnectDelayMs: 20,
      getToken: async () => {
        calls++;
        if (calls === 1) throw new Error('identity provider down');
        return token(`user-${calls}`);
      },
    });
    wg.on('error', (e) => errors.push(e.code));
    try {
      await waitFor(wg, 'connected');
      assert.deepEqual(errors, ['token_unavailable']);
      const first = wg.connectionId;
      assert.equal((await api(server, 'GET', `/api/connections/${first}`, { token: API_KEY })).json.userId, 'user-2');
      const again = waitFor(wg, 'connected');
      assert.equal((await api(server, 'DELETE', `/api/connections/${first}`, { token: API_KEY })).status, 204);
      await again;
      assert.equal(calls, 3);
      assert.equal((await api(server, 'GET', `/api/connections/${wg.connectionId}`, { token: API_KEY })).json.userId, 'user-3');
    } finally {
      wg.close();
    }
  });

  test('refresh_required is answered with a fresh token from getToken', { skip: pending('refresh'), timeout: 60_000 }, async () => {
    // The server asks 30 s before exp; the first token expires in 33 s.
    let calls = 0;
    const errors = [];
    const wg = new sdk.Waygate(server.ws(), {
      getToken: async () => token('refresher', ++calls === 1 ? 33 : 600),
    });
    wg.on('error', (e) => errors.push(e));
    const drops = [];
    wg.on('disconnected', (d) => drops.push(d));
    try {
      await waitFor(wg, 'connected');
      const id = wg.connectionId;
      await until(() => calls === 2, 'getToken to be asked for the refresh', 15_000);
      // Past the first token's exp the connection is still the same one.
      await sleep(33_000 - 3_000 + 2_000);
      assert.deepEqual(drops, []);
      assert.deepEqual(errors, []);
      assert.equal(wg.connectionId, id);
      assert.equal(wg.connected, true);
    } finally {
      wg.close();
    }
  });
});

test('a device handler is aborted when its call is cancelled', { skip: pending('cancel') }, async () => {
  const server = await startServer();
  const proxy = await startProxy(server.http);
  const fns = harnessFunctions(server, proxy, await server.user('cancel@example.com'));
  let aborted = null;
  const dev = new sdk.DeviceClient({
    ...(await fns.registerDevice('cancel-device')),
    handlers: {
      slow: (_args, ctx) =>
        new Promise((_resolve, reject) => {
          ctx.signal.addEventListener('abort', () => {
            aborted = ctx.signal.reason.code;
            reject(ctx.signal.reason);
          });
        }),
    },
  });
  try {
    await dev.start();
    const called = waitFor(dev, 'call');
    const created = await fns.toolCall({ capability: 'sdk-test', tool: 'slow', args: {}, wait: false, timeoutMs: 60_000 });
    assert.equal(created.status, 202);
    await called;
    const cancelled = waitFor(dev, 'cancelled');
    const res = await fns.cancelToolCall(created.json.id);
    assert.ok(res.status < 300, JSON.stringify(res.json));
    assert.equal((await cancelled).callId, created.json.id);
    await until(() => aborted, 'the handler to be aborted');
    assert.equal(aborted, 'cancelled');
    assert.equal((await fns.getToolCall(created.json.id)).json.status, 'cancelled');
  } finally {
    dev.close();
    await proxy.close();
    await server.stop();
  }
});

describe('terminal', () => {
  const AGENT_TOKEN = 'sdk-test-agent-token';
  let server;
  let stopAgent;
  let user;
  let proxy;
  const allocation = async (node) => {
    const res = await api(server, 'POST', '/api/terminal/allocations', {
      token: user,
      body: { nodeId: node, tenantId: 't', projectId: 'p', command: 'exec /bin/sh' },
    });
    assert.equal(res.status, 201, JSON.stringify(res.json));
    const id = res.json.allocationId;
    await until(async () => (await api(server, 'GET', `/api/terminal/allocations/${id}`, { token: user })).json.nodeOnline, 'the agent');
    return id;
  };
  before(async () => {
    server = await startServer({ WAYGATE_AGENT_TOKEN: AGENT_TOKEN });
    proxy = await startProxy(server.http);
    user = await server.user('term@example.com');
    stopAgent = server.agent('sdk-node', AGENT_TOKEN);
  });
  after(async () => {
    stopAgent?.();
    await proxy?.close();
    await server?.stop();
  });

  test('mints a token, relays bytes and resizes, reports the exit code', async () => {
    const term = new sdk.TerminalClient({ allocationId: await allocation('sdk-node'), baseUrl: server.url(''), authToken: user });
    let out = '';
    const decoder = new TextDecoder();
    term.on('data', (b) => (out += decoder.decode(b, { stream: true })));
    const exit = waitFor(term, 'exit');
    const closed = waitFor(term, 'close');
    await term.connect();
    term.resize(101, 37);
    term.write('stty size; echo sdk-$((6*7))\n');
    await until(() => out.includes('37 101') && out.includes('sdk-42'), `stty's answer (have ${JSON.stringify(out)})`);
    term.write(new TextEncoder().encode('exit 3\n'));
    assert.equal(await exit, 3);
    assert.equal((await closed).code, 1000);
  });

  test('a refused token is the API error', async () => {
    const term = new sdk.TerminalClient({ allocationId: 'no-such-allocation', baseUrl: server.url(''), authToken: user });
    await assert.rejects(term.connect(), (e) => e.code === 'not_found');
  });

  test('reattaches to its session after a lost socket', { skip: pending('reattach') }, async () => {
    const term = new sdk.TerminalClient({
      allocationId: await allocation('sdk-node'),
      baseUrl: server.url(''),
      wsBase: `ws://${proxy.addr}`,
      authToken: user,
    });
    let out = '';
    const decoder = new TextDecoder();
    term.on('data', (b) => (out += decoder.decode(b, { stream: true })));
    const session = waitFor(term, 'session');
    await term.connect();
    const sessionId = await session;
    term.write('echo before-$((1+1))\n');
    await until(() => out.includes('before-2'), 'output before the cut');
    const reopened = waitFor(term, 'open', (o) => o.reattached);
    proxy.cut();
    await reopened;
    assert.equal(term.sessionId, sessionId);
    term.write('echo after-$((2+2))\n');
    await until(() => out.includes('after-4'), 'output after reattaching');
    const exit = waitFor(term, 'exit');
    term.write('exit 0\n');
    assert.equal(await exit, 0);
  });
});
