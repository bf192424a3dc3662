// Scenarios that run unchanged in Node (test/node.test.mjs) and in headless Chromium
// (test/browser.test.mjs, loading the built bundle). Each gets the SDK module and a harness
// `h`: `h.direct` / `h.proxied` (realtime URLs straight to the gateway / through the test's TCP
// proxy) and `h.call(name, ...args)` for what only the test process can do (HTTP with the API
// key, cutting the proxy). Plain JavaScript, no imports: the browser loads this file as is.

const LIMIT = 15_000;
const FAST = { reconnectDelayMs: 50, reconnectMaxDelayMs: 400 };

function fail(message) {
  throw new Error(message);
}

function eq(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${what}: expected ${e}, got ${a}`);
}

/** Resolves with the first `event` whose arguments satisfy `pred`; fails after LIMIT ms. */
function next(emitter, event, pred = () => true, what = event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${LIMIT} ms waiting for ${what}`));
    }, LIMIT);
    const off = emitter.on(event, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args[0]);
    });
  });
}

async function until(cond, what) {
  const deadline = Date.now() + LIMIT;
  while (!cond()) {
    if (Date.now() > deadline) fail(`timed out after ${LIMIT} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function rejects(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    eq(e.code, code, `${what}: error code`);
    return e;
  }
  fail(`${what}: expected a rejection with ${code}`);
}

const unique = (prefix) => `${prefix}-${Math.random().toString(16).slice(2, 10)}`;

/** Messages received on a subscription, and what they add up to. */
function collect(sub) {
  const got = [];
  sub.on('message', (m) => got.push(m));
  return got;
}
const offsets = (got) => got.map((m) => m.offset);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

export async function pubsub(sdk, h) {
  const channel = unique('news');
  const reader = new sdk.Waygate(h.direct);
  const writer = new sdk.Waygate(h.direct);
  try {
    const sub = reader.subscribe(channel);
    const got = collect(sub);
    const info = await next(sub, 'subscribed');
    eq(info.offset, 0, 'a new channel starts at offset 0');
    eq(await writer.publish(channel, { n: 1 }), { offset: 1 }, 'first publish ack');
    eq(await writer.publish(channel, { n: 2 }), { offset: 2 }, 'second publish ack');
    await h.call('publishHttp', channel, { n: 3 });
    await until(() => got.length === 3, 'three messages');
    eq(got.map((m) => [m.offset, m.data.n, m.channel]), [[1, 1, channel], [2, 2, channel], [3, 3, channel]], 'messages in order');
    await rejects(writer.publish('not a valid channel!', 1), 'bad_request', 'publish to an invalid channel');
    // A second subscriber from now on sees only what comes next.
    const late = writer.subscribe(channel);
    const lateGot = collect(late);
    eq((await next(late, 'subscribed')).offset, 3, 'late subscriber starts at the newest offset');
    await writer.publish(channel, { n: 4 });
    await until(() => got.length === 4 && lateGot.length === 1, 'the fourth message on both');
    eq(offsets(lateGot), [4], 'late subscriber offsets');
    writer.unsubscribe(channel);
    await writer.publish(channel, { n: 5 });
    await until(() => got.length === 5, 'the fifth message');
    eq(lateGot.length, 1, 'nothing after unsubscribe');
  } finally {
    reader.close();
    writer.close();
  }
}

export async function presence(sdk, h) {
  const channel = unique('room');
  const a = new sdk.Waygate(h.direct);
  const b = new sdk.Waygate(h.direct);
  try {
    const sa = a.subscribe(channel);
    const sb = b.subscribe(channel);
    await Promise.all([next(sa, 'subscribed'), next(sb, 'subscribed')]);
    const p = await sa.presence();
    eq(p.count, 2, 'presence count');
    eq(p.members.map((m) => m.connectionId).sort(), [a.connectionId, b.connectionId].sort(), 'presence members');
    b.unsubscribe(channel);
    // b's unsubscribe and a's question travel on different connections: ask until it shows.
    const deadline = Date.now() + LIMIT;
    let after;
    while ((after = await a.presence(channel)).count !== 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    eq(after.members.map((m) => m.connectionId), [a.connectionId], 'presence after unsubscribe');
  } finally {
    a.close();
    b.close();
  }
}

/**
 * The link goes down (`how`), messages are published while the client cannot reconnect, then
 * it may: every message arrives once, in order, and the stream goes on live.
 */
async function recovery(sdk, h, how) {
  const channel = unique(`recover-${how}`);
  const wg = new sdk.Waygate(h.proxied, FAST);
  try {
    const sub = wg.subscribe(channel);
    const got = collect(sub);
    const gaps = [];
    sub.on('gap', (g) => gaps.push(g));
    await next(sub, 'subscribed');
    await h.call('publishHttp', channel, { n: 1 });
    await h.call('publishHttp', channel, { n: 2 });
    await until(() => got.length === 2, 'the first two messages');
    const first = wg.connectionId;
    const down = next(wg, 'disconnected');
    await h.call('proxy', 'block', true);
    if (how === 'server-close') {
      eq(await h.call('deleteConnection', first), 204, 'DELETE /api/connections/{id}');
    } else if (how === 'cut') {
      await h.call('proxy', 'cut');
    } else {
      await h.call('proxy', 'freeze');
    }
    const info = await down;
    if (how === 'server-close') eq([info.code, info.reason], [1000, 'disconnected by the server'], 'close from the push API');
    if (how === 'dead-link') eq([info.code, info.reason], [sdk.HEARTBEAT_TIMEOUT, 'heartbeat timeout'], 'dead link verdict');
    if (typeof info.reconnectInMs !== 'number') fail('the client must plan a reconnect');
    for (let n = 3; n <= 5; n++) await h.call('publishHttp', channel, { n });
    await h.call('proxy', 'block', false);
    const resumed = await next(sub, 'subscribed', (s) => s.recovered !== undefined, 'the resumed subscription');
    eq(resumed.recovered, true, 'recovered');
    await until(() => got.length === 5, 'the messages published while disconnected');
    if (wg.connectionId === first) fail('expected a new connection');
    await h.call('publishHttp', channel, { n: 6 });
    await until(() => got.length === 6, 'the next live message');
    eq(offsets(got), range(1, 6), 'offsets once and in order');
    eq(got.map((m) => m.data.n), range(1, 6), 'payloads in order');
    eq(gaps, [], 'no gap');
  } finally {
    await h.call('proxy', 'block', false);
    wg.close();
  }
}

export const reconnectAfterServerClose = (sdk, h) => recovery(sdk, h, 'server-close');
export const reconnectAfterCut = (sdk, h) => recovery(sdk, h, 'cut');
export const reconnectAfterDeadLink = (sdk, h) => recovery(sdk, h, 'dead-link');

/** More was published while disconnected than the history keeps (h.historySize): `gap`. */
export async function gap(sdk, h) {
  const channel = unique('gap');
  const wg = new sdk.Waygate(h.proxied, FAST);
  try {
    const sub = wg.subscribe(channel);
    const got = collect(sub);
    await next(sub, 'subscribed');
    await h.call('publishHttp', channel, { n: 1 });
    await until(() => got.length === 1, 'the first message');
    await h.call('proxy', 'block', true);
    const down = next(wg, 'disconnected');
    await h.call('proxy', 'cut');
    await down;
    const missed = h.historySize + 5;
    for (let n = 2; n <= missed + 1; n++) await h.call('publishHttp', channel, { n });
    const gapSeen = next(sub, 'gap');
    await h.call('proxy', 'block', false);
    const g = await gapSeen;
    eq(g, { channel, from: 1, to: missed + 1, epochChanged: false }, 'gap event');
    await h.call('publishHttp', channel, { n: missed + 2 });
    await until(() => got.length === 2, 'the next live message');
    eq(offsets(got), [1, missed + 2], 'delivery goes on after the gap');
  } finally {
    await h.call('proxy', 'block', false);
    wg.close();
  }
}

/** A device answers real tool calls made over HTTP, reports errors, honours deadlines, re-registers. */
export async function device(sdk, h) {
  const reg = await h.call('registerDevice', unique('device'));
  let aborted = null;
  const dev = new sdk.DeviceClient({
    ...reg,
    ...FAST,
    handlers: {
      echo: async (args, ctx) => ({ echo: args, tool: ctx.tool, callId: ctx.callId }),
      fail: async () => {
        const e = new Error('the disk is full');
        e.code = 'disk_full';
        throw e;
      },
      slow: (_args, ctx) =>
        new Promise((_resolve, reject) => {
          ctx.signal.addEventListener('abort', () => {
            aborted = { reason: ctx.signal.reason.code, deadline: ctx.deadline.getTime() };
            reject(ctx.signal.reason);
          });
        }),
    },
  });
  try {
    const registered = await dev.start();
    eq(registered.deviceId, reg.deviceId, 'ack names the device');
    const ok = await h.call('toolCall', { capability: 'sdk-test', tool: 'echo', args: { hello: 'world' } });
    eq(ok.status, 200, 'tool call status');
    eq(ok.json.status, 'completed', 'tool call completed');
    eq(ok.json.result.echo, { hello: 'world' }, 'handler result');
    eq(ok.json.result.callId, ok.json.id, 'handler saw the call id');

    const bad = await h.call('toolCall', { capability: 'sdk-test', tool: 'fail', args: {} });
    eq([bad.status, bad.json.error.code], [502, 'tool_call_failed'], 'a throwing handler fails the call');
    eq(bad.json.error.details.deviceError, { code: 'disk_full', message: 'the disk is full' }, 'the device error');
    const view = await h.call('getToolCall', bad.json.error.details.callId);
    eq([view.json.status, view.json.error.message], ['failed', 'the disk is full'], 'the failure is recorded');

    const missing = await h.call('toolCall', { capability: 'sdk-test', tool: 'nope', args: {} });
    eq(missing.json.error.code, 'tool_call_failed', 'unknown tool');

    const before = Date.now();
    const late = await h.call('toolCall', { capability: 'sdk-test', tool: 'slow', args: {}, timeoutMs: 800 });
    eq([late.status, late.json.error.code], [504, 'tool_call_timeout'], 'deadline passed');
    await until(() => aborted !== null, 'the handler to be aborted at its deadline');
    eq(aborted.reason, 'tool_call_timeout', 'abort reason');
    if (Math.abs(aborted.deadline - (before + 800)) > 5_000) fail(`deadline ${aborted.deadline} far from ${before + 800}`);

    // Cut the link: the device reconnects, registers again and answers the next call.
    const again = next(dev, 'registered');
    await h.call('proxy', 'cut');
    await again;
    const after = await h.call('toolCall', { capability: 'sdk-test', tool: 'echo', args: { n: 2 } });
    eq([after.status, after.json.result.echo], [200, { n: 2 }], 'tool call after re-register');

    // A dead link (nothing passes any more): the device's heartbeat notices and it registers again.
    const third = next(dev, 'registered');
    const lost = next(dev, 'disconnected');
    await h.call('proxy', 'freeze');
    eq((await lost).code, sdk.HEARTBEAT_TIMEOUT, 'the device noticed the dead link');
    await third;
    const last = await h.call('toolCall', { capability: 'sdk-test', tool: 'echo', args: { n: 3 } });
    eq([last.status, last.json.result.echo], [200, { n: 3 }], 'tool call after a dead link');
  } finally {
    dev.close();
  }
}

/** `close()` ends everything: waiting requests reject, no reconnect follows. */
export async function close(sdk, h) {
  const wg = new sdk.Waygate(h.proxied, FAST);
  await next(wg, 'connected');
  let reconnected = false;
  await h.call('proxy', 'block', true);
  const pending = wg.publish(unique('closing'), 1);
  wg.close();
  await rejects(pending, 'closed', 'a publish pending at close');
  await rejects(wg.publish('x', 1), 'closed', 'a publish after close');
  wg.on('connected', () => (reconnected = true));
  await h.call('proxy', 'block', false);
  await new Promise((r) => setTimeout(r, 300));
  eq(reconnected, false, 'no reconnect after close');
}

/** In the order they run. */
export const shared = ['pubsub', 'presence', 'reconnectAfterServerClose', 'reconnectAfterCut', 'reconnectAfterDeadLink', 'gap', 'device', 'close'];
