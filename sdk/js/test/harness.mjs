// Test harness (Node only): a real `waygate serve` on ephemeral ports with a temporary SQLite
// database, a TCP proxy the test can cut, freeze or block, HTTP helpers, HS256 JWTs.
import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../..', import.meta.url));

export const PASSWORD = 'password123';
export const API_KEY = 'sdk-test-api-key';

/** The `waygate` binary: $WAYGATE_BIN, else the debug build in $CARGO_TARGET_DIR or target/. */
export function waygateBin() {
  const candidates = [
    process.env.WAYGATE_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, 'debug/waygate'),
    join(repo, 'target/debug/waygate'),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`no waygate binary (tried ${candidates.join(', ')}): run \`cargo build -p waygate\` or set WAYGATE_BIN`);
  }
  return found;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 20 ms; throws after `ms`. */
export async function until(cond, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

function run(bin, args, { cwd, env, stdin }) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${args.join(' ')} exited ${code}: ${out}`))));
    child.stdin.end(stdin ?? '');
  });
}

/**
 * Starts `waygate serve` in a fresh temporary directory (its SQLite database lives there) and
 * waits for the ready file.
 */
export async function startServer(extraEnv = {}) {
  const bin = waygateBin();
  const dir = mkdtempSync(join(tmpdir(), 'waygate-sdk-'));
  const ready = join(dir, 'ready.json');
  const env = {
    PATH: process.env.PATH,
    WAYGATE_LOG: 'info',
    DATABASE_URL: `sqlite://${join(dir, 'waygate.db')}`,
    WAYGATE_API_KEY: API_KEY,
    WAYGATE_HEARTBEAT_SECONDS: '1',
    ...extraEnv,
  };
  const log = join(dir, 'serve.log');
  const child = spawn(bin, ['serve', '--host', '127.0.0.1', '--port', '0', '--ws-port', 'off', '--ready-file', ready], {
    cwd: dir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logStream = createWriteStream(log);
  child.stdout.pipe(logStream);
  child.stderr.pipe(logStream);
  let exited = null;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  await until(() => {
    if (exited) throw new Error(`waygate serve exited early (${JSON.stringify(exited)}): ${readFileSync(log, 'utf8')}`);
    return existsSync(ready) && readFileSync(ready, 'utf8').endsWith('}');
  }, 'the ready file', 30_000);
  const info = JSON.parse(readFileSync(ready, 'utf8'));
  const http = info.http;
  const server = {
    bin,
    dir,
    env,
    http,
    url: (path) => `http://${http}${path}`,
    ws: (path = '/ws') => `ws://${http}${path}`,
    logs: () => readFileSync(log, 'utf8'),
    async stop() {
      if (!exited) {
        child.kill('SIGKILL');
        await until(() => exited, 'waygate to exit', 10_000);
      }
      rmSync(dir, { recursive: true, force: true });
    },
    /** `waygate user add` (password on stdin) and a login; returns the session token. */
    async user(email) {
      await run(bin, ['user', 'add', email], { cwd: dir, env, stdin: `${PASSWORD}\n` });
      const res = await api(server, 'POST', '/api/auth/login', { body: { email, password: PASSWORD } });
      if (res.status !== 200) throw new Error(`login: ${res.status} ${JSON.stringify(res.json)}`);
      return res.json.token;
    },
    /** Runs `waygate agent` for a node; returns a stopper. */
    agent(nodeId, token) {
      const a = spawn(bin, ['agent', '--gateway', `ws://${http}`, '--node-id', nodeId, '--max-backoff-secs', '1'], {
        cwd: dir,
        env: { PATH: process.env.PATH, WAYGATE_LOG: 'warn', WAYGATE_AGENT_TOKEN: token, HOME: dir, SHELL: '/bin/sh' },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      return () => a.kill('SIGKILL');
    },
  };
  return server;
}

/** One HTTP call; `token` is a bearer (session token or API key). Returns {status, json}. */
export async function api(server, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(server.url(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/**
 * A TCP proxy in front of the gateway. `cut()` resets every link (the client sees the socket
 * close), `freeze()` silently drops every byte of the current links both ways (a dead link:
 * only heartbeats can tell), `block(true)` refuses new links until `block(false)`.
 */
export async function startProxy(target) {
  const split = (t) => [t.slice(0, t.lastIndexOf(':')), Number(t.slice(t.lastIndexOf(':') + 1))];
  let [host, port] = split(target);
  const links = new Set();
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(port, host);
    const link = { client, upstream, frozen: false };
    links.add(link);
    client.on('data', (d) => link.frozen || upstream.write(d));
    upstream.on('data', (d) => link.frozen || client.write(d));
    const end = () => {
      links.delete(link);
      if (link.frozen) return; // a dead link passes nothing on, not even its end
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const addr = `127.0.0.1:${server.address().port}`;
  const frozen = [];
  return {
    addr,
    ws: (path = '/ws') => `ws://${addr}${path}`,
    get links() {
      return links.size;
    },
    cut() {
      for (const l of [...links]) {
        l.client.resetAndDestroy();
        l.upstream.destroy();
      }
      links.clear();
    },
    freeze() {
      for (const l of links) {
        l.frozen = true;
        frozen.push(l);
      }
      links.clear();
    },
    block(on) {
      blocked = on;
    },
    /** New links go to another gateway (e.g. a restarted one). */
    retarget(addr) {
      [host, port] = split(addr);
    },
    async close() {
      blocked = true;
      for (const l of [...links, ...frozen]) {
        l.client.destroy();
        l.upstream.destroy();
      }
      await new Promise((r) => server.close(r));
    },
  };
}

/** True when a Redis answers PING on 127.0.0.1:6379 (or $WAYGATE_TEST_REDIS_URL's host and port). */
export function redisUrl() {
  return process.env.WAYGATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
}

export function redisReachable(url = redisUrl()) {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port || 6379), u.hostname);
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(2000, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

/** An HS256 JWT. */
export function jwt(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

export const randomName = (prefix) => `${prefix}-${randomBytes(4).toString('hex')}`;

/**
 * The functions scenarios call through `h.call(name, ...args)`, in Node directly and in the
 * browser through Playwright's exposed binding.
 */
export function harnessFunctions(server, proxy, userToken) {
  return {
    async publishHttp(channel, data) {
      const res = await api(server, 'POST', `/api/channels/${encodeURIComponent(channel)}/publish`, { token: API_KEY, body: data });
      if (res.status !== 200) throw new Error(`HTTP publish: ${res.status} ${JSON.stringify(res.json)}`);
      return res.json;
    },
    async deleteConnection(id) {
      const res = await api(server, 'DELETE', `/api/connections/${id}`, { token: API_KEY });
      return res.status;
    },
    async proxy(action, arg) {
      if (action === 'cut') proxy.cut();
      else if (action === 'freeze') proxy.freeze();
      else if (action === 'block') proxy.block(arg);
      else throw new Error(`unknown proxy action ${action}`);
      return true;
    },
    async registerDevice(name) {
      const res = await api(server, 'POST', '/api/gateway/devices', {
        token: userToken,
        body: { name, platform: 'test', capabilities: ['sdk-test'] },
      });
      if (res.status !== 201) throw new Error(`register device: ${res.status} ${JSON.stringify(res.json)}`);
      // Through the proxy, so the test can cut the device's link.
      const path = new URL(res.json.wsEndpoint).pathname;
      return { deviceId: res.json.deviceId, sessionToken: res.json.sessionToken, wsEndpoint: proxy.ws(path) };
    },
    async toolCall(body) {
      return api(server, 'POST', '/api/gateway/tool-calls', { token: userToken, body });
    },
    async getToolCall(id) {
      return api(server, 'GET', `/api/gateway/tool-calls/${id}`, { token: userToken });
    },
    async cancelToolCall(id) {
      return api(server, 'POST', `/api/gateway/tool-calls/${id}/cancel`, { token: userToken });
    },
  };
}
