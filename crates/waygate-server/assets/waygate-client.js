// @waygate/client 0.1.0: generated from sdk/js by `npm run build`; do not edit.

// src/emitter.ts
var Emitter = class {
  constructor() {
    this.listeners = {};
  }
  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    var _a;
    ((_a = this.listeners)[event] ?? (_a[event] = /* @__PURE__ */ new Set())).add(fn);
    return () => this.off(event, fn);
  }
  /** Adds a listener that runs once. */
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }
  off(event, fn) {
    this.listeners[event]?.delete(fn);
  }
  emit(event, ...args) {
    const set = this.listeners[event];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
};

// src/errors.ts
var WaygateError = class _WaygateError extends Error {
  constructor(code, message, correlationId, details) {
    super(message);
    this.name = "WaygateError";
    this.code = code;
    this.correlationId = correlationId;
    this.details = details;
  }
  static from(body) {
    return new _WaygateError(body.code, body.message, body.correlation_id, body.details);
  }
};

// src/link.ts
var HEARTBEAT_TIMEOUT = 4408;
function socketCtor(given) {
  const ctor = given ?? globalThis.WebSocket;
  if (!ctor) {
    throw new Error("no WebSocket available: pass options.WebSocket, use Node >= 22, or run Node 20 with --experimental-websocket");
  }
  return ctor;
}
var Link = class extends Emitter {
  constructor(linkOptions) {
    super();
    this.linkOptions = linkOptions;
    this.ws = null;
    /** `close()` was called: no more sockets, no timers. */
    this.stopped = false;
    this.starting = false;
    this.attempt = 0;
    this.openedAt = 0;
    this.lastRx = 0;
    this.heartbeatMs = 0;
    this.ctor = socketCtor(linkOptions.WebSocket);
  }
  /** Emits one of the events every link has (the subclass's event map includes them). */
  emitLink(event, ...args) {
    this.emit.call(this, event, ...args);
  }
  /** Whether to reconnect after a close with this code. */
  reconnects(_code) {
    return true;
  }
  /** True while a socket is open. */
  get isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }
  /** Starts connecting (no-op while connecting or connected). */
  open() {
    if (this.stopped || this.ws || this.starting) return;
    this.starting = true;
    clearTimeout(this.reconnectTimer);
    this.protocols().then(
      (protocols) => {
        this.starting = false;
        if (this.stopped) return;
        let ws;
        try {
          ws = protocols ? new this.ctor(this.url(), protocols) : new this.ctor(this.url());
        } catch (e) {
          this.emitLink("error", new WaygateError("connect_failed", String(e?.message ?? e)));
          this.retry(1006, "connect failed");
          return;
        }
        this.attach(ws);
      },
      (e) => {
        this.starting = false;
        if (this.stopped) return;
        this.emitLink("error", new WaygateError("token_unavailable", `getToken failed: ${e?.message ?? e}`));
        this.retry(1006, "no token");
      }
    );
  }
  attach(ws) {
    this.ws = ws;
    this.openedAt = 0;
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = this.lastRx = Date.now();
      this.opened();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      if (this.pongTimer !== void 0) {
        clearTimeout(this.pongTimer);
        this.pongTimer = void 0;
      }
      if (typeof ev.data !== "string") return;
      let msg = ev.data;
      try {
        msg = JSON.parse(ev.data);
      } catch {
      }
      this.frame(msg);
    };
    ws.onerror = () => {
      if (this.ws === ws && !this.openedAt) this.drop(1006, "connection failed");
    };
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws) this.drop(1006, "connect timeout");
    }, this.linkOptions.connectTimeoutMs ?? 1e4);
    ws.onclose = (ev) => {
      if (this.ws === ws) this.drop(ev.code, ev.reason);
    };
  }
  /** Sends one JSON frame; false when no socket is open. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }
  /**
   * The server accepted the connection (welcome, or a device's ack): the connect timeout
   * ends and dead-link detection starts with the server's heartbeat interval.
   */
  heartbeat(intervalMs) {
    clearTimeout(this.connectTimer);
    this.heartbeatMs = intervalMs > 0 ? intervalMs : 0;
    clearTimeout(this.idleTimer);
    if (this.heartbeatMs) this.idleTimer = setTimeout(() => this.checkIdle(), this.heartbeatMs);
  }
  checkIdle() {
    const quiet = Date.now() - this.lastRx;
    if (quiet >= this.heartbeatMs && this.pongTimer === void 0 && this.send({ action: "ping", id: "heartbeat" })) {
      const wait = this.linkOptions.pongTimeoutMs ?? Math.min(this.heartbeatMs, 1e4);
      this.pongTimer = setTimeout(() => this.drop(HEARTBEAT_TIMEOUT, "heartbeat timeout"), wait);
    }
    const next = quiet >= this.heartbeatMs ? this.heartbeatMs : this.heartbeatMs - quiet;
    this.idleTimer = setTimeout(() => this.checkIdle(), next);
  }
  stopTimers() {
    clearTimeout(this.idleTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    this.idleTimer = this.pongTimer = this.reconnectTimer = this.connectTimer = void 0;
    this.heartbeatMs = 0;
  }
  /**
   * Forgets the current socket (closing it without waiting: on a dead link the closing
   * handshake would never finish) and reconnects unless stopped.
   */
  drop(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code === HEARTBEAT_TIMEOUT ? 4e3 : 1e3);
    } catch {
    }
    if (this.openedAt && Date.now() - this.openedAt >= (this.linkOptions.stableAfterMs ?? 1e4)) this.attempt = 0;
    this.retry(code, reason);
  }
  retry(code, reason) {
    this.stopTimers();
    let reconnectInMs;
    if (!this.stopped && this.reconnects(code)) {
      const base = this.linkOptions.reconnectDelayMs ?? 500;
      const max = this.linkOptions.reconnectMaxDelayMs ?? 3e4;
      const ceiling = Math.min(max, base * 2 ** Math.min(this.attempt, 30));
      reconnectInMs = Math.round(ceiling * (0.5 + Math.random() / 2));
      this.attempt++;
      this.reconnectTimer = setTimeout(() => this.open(), reconnectInMs);
    }
    this.lost(code, reason);
    this.emitLink("disconnected", { code, reason, reconnectInMs });
  }
  /** Stops for good: closes the socket, cancels every timer. */
  stop(code = 1e3, reason = "closed by the client") {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ws) {
      this.drop(code, reason);
    } else {
      this.stopTimers();
    }
  }
};

// src/waygate.ts
var REFUSALS = ["forbidden", "permission_denied", "bad_request", "unauthorized"];
var MAX_BUFFERED = 1e4;
var Subscription = class extends Emitter {
  constructor(client, channel, options = {}) {
    super();
    this.client = client;
    this.channel = channel;
    /** A subscribe request is in flight: messages wait until its answer tells where to resume. */
    this.waiting = false;
    /** Recovery requests for a hole in the stream that have not filled it yet. */
    this.holeRetries = 0;
    this.buffer = /* @__PURE__ */ new Map();
    this.offset = options.since;
    this.epoch = options.epoch;
  }
  /** Who is subscribed to this channel. */
  presence() {
    return this.client.presence(this.channel);
  }
  /** Publishes to this channel (see `Waygate.publish`). */
  publish(data) {
    return this.client.publish(this.channel, data);
  }
  unsubscribe() {
    this.client.unsubscribe(this.channel);
  }
  /** @internal The subscribe frame for (re)subscribing now. */
  _request(id) {
    this.waiting = true;
    const frame = { action: "subscribe", channel: this.channel, id };
    if (this.offset !== void 0) {
      frame.since = this.offset;
      if (this.epoch !== void 0) frame.epoch = this.epoch;
    }
    return frame;
  }
  /** @internal */
  _subscribed(m) {
    this.waiting = false;
    if (this.offset === void 0) {
      this.offset = m.offset;
    } else if (m.recovered === false) {
      this.emit("gap", {
        channel: this.channel,
        from: this.offset,
        to: m.offset,
        epochChanged: this.epoch !== void 0 && this.epoch !== m.epoch
      });
      this.offset = m.offset;
    }
    this.epoch = m.epoch;
    this.emit("subscribed", m);
    this.drain();
  }
  /** @internal */
  _message(m) {
    if (this.offset !== void 0 && m.offset <= this.offset) return;
    this.buffer.set(m.offset, m);
    if (!this.waiting) this.drain();
  }
  /** @internal The server refused the subscription (for good, or for now: then it is retried). */
  _fail(err) {
    this._reset();
    this.emit("error", err);
  }
  /** @internal The connection is gone: what arrived out of order will be replayed in order. */
  _reset() {
    this.waiting = false;
    this.buffer.clear();
  }
  drain() {
    const buf = this.buffer;
    let next;
    while (this.offset !== void 0 && (next = buf.get(this.offset + 1))) {
      buf.delete(next.offset);
      this.offset = next.offset;
      this.holeRetries = 0;
      this.emit("message", next);
    }
    if (!buf.size) return;
    for (const o of buf.keys()) if (o <= this.offset) buf.delete(o);
    if (!buf.size) return;
    if (buf.size > MAX_BUFFERED || this.holeRetries >= 3) {
      const first = Math.min(...buf.keys());
      this.emit("gap", { channel: this.channel, from: this.offset, to: first - 1, epochChanged: false });
      this.offset = first - 1;
      this.holeRetries = 0;
      this.drain();
      return;
    }
    this.holeRetries++;
    this.client._resubscribe(this);
  }
};
var Waygate = class extends Link {
  constructor(endpoint, options = {}) {
    super(options);
    this.endpoint = endpoint;
    this.options = options;
    this.subs = /* @__PURE__ */ new Map();
    /** Subscribe request id → subscription, to route a refusal to it. */
    this.subRequests = /* @__PURE__ */ new Map();
    this.pending = /* @__PURE__ */ new Map();
    this.nextId = 0;
    this.welcomed = false;
    this.retrySubs = /* @__PURE__ */ new Set();
    if (options.autoConnect !== false) this.open();
  }
  /** True once the server welcomed the current socket. */
  get connected() {
    return this.welcomed && this.isOpen;
  }
  /** Connects (after `autoConnect: false`); no-op when connecting or connected. */
  connect() {
    this.open();
  }
  /** Subscribes to a channel (or returns the existing subscription). */
  subscribe(channel, options) {
    let sub = this.subs.get(channel);
    if (!sub) {
      sub = new Subscription(this, channel, options);
      this.subs.set(channel, sub);
      if (this.connected) this.sendSubscribe(sub);
    }
    return sub;
  }
  unsubscribe(channel) {
    const sub = this.subs.get(channel);
    if (!sub) return;
    this.subs.delete(channel);
    sub._reset();
    this.send({ action: "unsubscribe", channel });
  }
  /** The current subscription to a channel, if any. */
  subscription(channel) {
    return this.subs.get(channel);
  }
  /**
   * Publishes `data` to a channel; resolves with its offset once the server accepted it,
   * rejects with a `WaygateError` carrying the server's code (e.g. `forbidden`).
   * Called while disconnected, the publish waits for the next connection. When the connection
   * drops after it was sent it rejects with `connection_lost`: it may or may not have been published.
   */
  publish(channel, data) {
    return this.request("publish", { channel, data }).then((m) => ({ offset: m.offset }));
  }
  /** Who is subscribed to a channel. */
  presence(channel) {
    return this.request("presence", { channel }).then((m) => ({
      channel: m.channel,
      count: m.count,
      members: m.members
    }));
  }
  /**
   * Sends any action with an `id` and resolves with the server's reply frame (`pong`,
   * `routed`, `response` of an action route, …); rejects on an error frame.
   */
  request(action, fields = {}) {
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new WaygateError("closed", "the client is closed"));
      if (!this.connected && [...this.pending.values()].filter((p2) => !p2.sent).length >= (this.options.maxQueued ?? 1e3)) {
        return reject(new WaygateError("queue_full", "too many requests waiting for a connection"));
      }
      const id = ++this.nextId;
      const frame = { ...fields, action, id };
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new WaygateError("timeout", `no answer to ${action} within the request timeout`));
      }, this.options.requestTimeoutMs ?? 1e4);
      const p = { frame, sent: false, resolve, reject, timer };
      this.pending.set(id, p);
      if (this.connected) p.sent = this.send(frame);
    });
  }
  /** Closes the connection for good: no reconnect, no timers; waiting requests reject with `closed`. */
  close() {
    this.failPending(() => true, "closed", "the client is closed");
    this.stop();
  }
  /** @internal A subscription saw a hole in its stream. */
  _resubscribe(sub) {
    if (this.connected && this.subs.get(sub.channel) === sub) this.sendSubscribe(sub);
  }
  sendSubscribe(sub) {
    const id = ++this.nextId;
    this.subRequests.set(id, sub);
    this.send(sub._request(id));
  }
  url() {
    return this.endpoint;
  }
  async protocols() {
    const token = this.options.getToken ? await this.options.getToken() : this.options.token;
    return token ? ["waygate.jwt", token] : void 0;
  }
  opened() {
  }
  reconnects(code) {
    if (code === 4401 && !this.options.getToken) {
      this.emit("error", new WaygateError("token_expired", "the connect token expired and there is no getToken to renew it"));
      return false;
    }
    return true;
  }
  lost() {
    this.welcomed = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = void 0;
    this.retrySubs.clear();
    this.subRequests.clear();
    for (const sub of this.subs.values()) sub._reset();
    this.failPending((p) => p.sent, "connection_lost", "the connection closed before the server answered");
  }
  failPending(which, code, message) {
    for (const [id, p] of this.pending) {
      if (!which(p)) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new WaygateError(code, message));
    }
  }
  frame(m) {
    if (m === null || typeof m !== "object") {
      this.emit("push", m);
      return;
    }
    switch (m.type) {
      case "welcome":
        return this.welcome(m);
      case "message": {
        this.subs.get(m.channel)?._message(m);
        return;
      }
      case "subscribed": {
        const sub = this.subRequests.get(m.id);
        this.subRequests.delete(m.id);
        if (sub && this.subs.get(sub.channel) === sub) sub._subscribed(m);
        return;
      }
      case "refresh_required":
        return this.refresh();
      case "error":
        return this.error(m);
      case "pong":
      case "unsubscribed":
      case "refreshed":
        this.settle(m);
        return;
      default:
        if (!this.settle(m)) this.emit("push", m);
    }
  }
  /** Resolves the request this frame answers; false when it answers none. */
  settle(m) {
    const p = typeof m.id === "number" ? this.pending.get(m.id) : void 0;
    if (!p) return false;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    p.resolve(m);
    return true;
  }
  welcome(m) {
    this.welcomed = true;
    this.connectionId = m.connectionId;
    this.heartbeat(m.heartbeatIntervalMs);
    this.emit("connected", m);
    for (const sub of this.subs.values()) this.sendSubscribe(sub);
    for (const p of this.pending.values()) {
      if (!p.sent) p.sent = this.send(p.frame);
    }
  }
  error(m) {
    const err = WaygateError.from(m.error ?? { code: "unknown", message: JSON.stringify(m) });
    const sub = typeof m.id === "number" ? this.subRequests.get(m.id) : void 0;
    if (sub) {
      this.subRequests.delete(m.id);
      if (this.subs.get(sub.channel) !== sub) return;
      if (REFUSALS.includes(err.code)) {
        this.subs.delete(sub.channel);
      } else {
        this.retrySubs.add(sub);
        this.retryTimer ?? (this.retryTimer = setTimeout(() => {
          this.retryTimer = void 0;
          for (const s of this.retrySubs) this._resubscribe(s);
          this.retrySubs.clear();
        }, 1e3));
      }
      sub._fail(err);
      return;
    }
    const p = typeof m.id === "number" ? this.pending.get(m.id) : void 0;
    if (p) {
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      p.reject(err);
      return;
    }
    this.emit("error", err);
  }
  /** The server wants a fresh token before the current one expires. */
  refresh() {
    const get = this.options.getToken;
    if (!get) {
      this.emit("error", new WaygateError("token_expiring", "the server asked for a fresh token; pass getToken to renew it"));
      return;
    }
    get().then(
      (token) => {
        this.send({ action: "refresh", token, id: `refresh-${++this.nextId}` });
      },
      (e) => this.emit("error", new WaygateError("token_unavailable", `getToken failed: ${e?.message ?? e}`))
    );
  }
};

// src/device.ts
var FATAL = {
  4401: "token_invalid",
  4404: "device_deleted",
  4409: "device_replaced"
};
var DeviceClient = class extends Link {
  constructor(options) {
    super(options);
    this.options = options;
    this.running = /* @__PURE__ */ new Map();
    /** Server time minus local time, from the welcome frame (deadlines are the server's clock). */
    this.skewMs = 0;
  }
  /**
   * Connects and registers; resolves on the first `ack`, rejects when the gateway refuses the
   * device (`token_invalid`, `device_deleted`) or the client is closed first. Keeps the
   * device online (reconnecting) until `close()`.
   */
  start() {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.registered && this.isOpen) return Promise.resolve(this.registered);
    return new Promise((resolve, reject) => {
      const earlier = this.first;
      this.first = {
        resolve: (r) => (earlier?.resolve(r), resolve(r)),
        reject: (e) => (earlier?.reject(e), reject(e))
      };
      this.open();
    });
  }
  /** Disconnects for good and aborts running handlers. */
  close() {
    this.abortAll("closed", "the client is closed");
    this.stop();
    this.first?.reject(new WaygateError("closed", "the client is closed"));
    this.first = void 0;
  }
  url() {
    return this.options.wsEndpoint;
  }
  async protocols() {
    return void 0;
  }
  opened() {
    this.send({
      type: "register",
      deviceId: this.options.deviceId,
      sessionToken: this.options.sessionToken,
      protocolVersion: 1
    });
  }
  reconnects(code) {
    const fatal = FATAL[code];
    if (!fatal) return true;
    this.fatal = new WaygateError(fatal, `the gateway refused the device (close ${code})`);
    this.emit("error", this.fatal);
    this.first?.reject(this.fatal);
    this.first = void 0;
    return false;
  }
  lost() {
    this.sessionId = this.registered = void 0;
    this.abortAll("connection_lost", "the connection to the gateway dropped");
  }
  frame(m) {
    switch (m?.type) {
      case "welcome": {
        const t = Date.parse(m.serverTime);
        if (!Number.isNaN(t)) this.skewMs = t - Date.now();
        return;
      }
      case "ack": {
        this.sessionId = m.sessionId;
        this.heartbeat(m.heartbeatIntervalMs);
        const info = { deviceId: m.deviceId, sessionId: m.sessionId, heartbeatIntervalMs: m.heartbeatIntervalMs };
        this.registered = info;
        this.first?.resolve(info);
        this.first = void 0;
        this.emit("registered", info);
        return;
      }
      case "tool_call":
        return this.call(m);
      case "tool_call_cancel":
        return this.cancel(m.id ?? m.callId);
      case "error": {
        if (m.id === "heartbeat") return;
        const body = m.error ?? { code: "unknown", message: JSON.stringify(m) };
        this.emit("error", WaygateError.from(body));
        return;
      }
    }
  }
  call(m) {
    const { callId, tool } = m;
    const handler = Object.prototype.hasOwnProperty.call(this.options.handlers, tool) ? this.options.handlers[tool] : void 0;
    this.emit("call", { callId, tool });
    if (!handler) {
      this.result(callId, false, void 0, { code: "unknown_tool", message: `this device has no handler for ${tool}` });
      return;
    }
    const abort = new AbortController();
    const parsed = Date.parse(m.deadline);
    const deadline = new Date(Number.isNaN(parsed) ? Date.now() + 3e4 : parsed - this.skewMs);
    const timer = setTimeout(
      () => this.end(callId, "tool_call_timeout", "the call passed its deadline"),
      Math.max(0, deadline.getTime() - Date.now())
    );
    const run = { tool, abort, timer };
    this.running.set(callId, run);
    new Promise((resolve) => resolve(handler(m.args, { callId, tool, deadline, signal: abort.signal }))).then(
      (value) => this.finish(callId, run, true, value),
      (e) => this.finish(callId, run, false, e)
    );
  }
  finish(callId, run, ok, value) {
    if (this.running.get(callId) !== run) return;
    this.running.delete(callId);
    clearTimeout(run.timer);
    if (ok) {
      this.result(callId, true, value === void 0 ? null : value);
    } else {
      const code = typeof value?.code === "string" ? value.code : "tool_error";
      this.result(callId, false, void 0, { code, message: String(value?.message ?? value) });
    }
  }
  result(callId, ok, result, error) {
    this.send(ok ? { type: "tool_result", callId, ok, result } : { type: "tool_result", callId, ok, error });
  }
  cancel(callId) {
    const run = this.running.get(callId);
    if (!run) return;
    this.end(callId, "cancelled", "the call was cancelled");
    this.emit("cancelled", { callId, tool: run.tool });
  }
  end(callId, code, message) {
    const run = this.running.get(callId);
    if (!run) return;
    this.running.delete(callId);
    clearTimeout(run.timer);
    run.abort.abort(new WaygateError(code, message));
  }
  abortAll(code, message) {
    for (const callId of [...this.running.keys()]) this.end(callId, code, message);
  }
};

// src/terminal.ts
var TERMINAL_PROTOCOL = "waygate.terminal.v1";
var FINAL = [1e3, 1008];
async function readError(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
  }
  return body?.error ? WaygateError.from(body.error) : new WaygateError(`http_${res.status}`, `HTTP ${res.status}`);
}
var TerminalClient = class extends Emitter {
  constructor(options) {
    super();
    this.options = options;
    this.ws = null;
    this.done = false;
    this.exited = false;
    this.reattachUntil = 0;
    this.attempt = 0;
    this.encoder = new TextEncoder();
    this.ctor = socketCtor(options.WebSocket);
  }
  get base() {
    return this.options.baseUrl ?? globalThis.location?.origin ?? "";
  }
  async api(method, path, body) {
    const headers = {};
    if (body !== void 0) headers["Content-Type"] = "application/json";
    if (this.options.authToken) headers.Authorization = `Bearer ${this.options.authToken}`;
    const f = this.options.fetch ?? fetch;
    return f(this.base + path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === void 0 ? void 0 : JSON.stringify(body)
    });
  }
  /** Mints a single-use token for the allocation (for the given session: a reattach token). */
  async mintToken(sessionId) {
    const path = `/api/terminal/allocations/${encodeURIComponent(this.options.allocationId)}/tokens`;
    const res = await this.api("POST", path, sessionId ? { sessionId } : void 0);
    if (!res.ok) throw await readError(res);
    return res.json();
  }
  async wsBase() {
    if (this.options.wsBase) return this.options.wsBase;
    try {
      const res = await this.api("GET", "/api/terminal/config");
      const cfg = res.ok ? await res.json() : null;
      if (cfg?.wsBase) return cfg.wsBase;
    } catch {
    }
    return this.base.replace(/^http/, "ws");
  }
  /**
   * Mints a token and opens the session; resolves once the socket is open. Rejects with the
   * API's error (e.g. `not_found`, `forbidden`) or `connect_failed` when the gateway refused
   * the socket (browsers hide the refusal's body: ask the allocation API why).
   */
  async connect() {
    this.done = this.exited = false;
    this.sessionId = void 0;
    this.attempt = 0;
    clearTimeout(this.timer);
    await this.open(false);
  }
  async open(reattach) {
    const minted = await this.mintToken(reattach ? this.sessionId : void 0);
    const base = await this.wsBase();
    if (this.done) throw new WaygateError("closed", "the terminal was closed");
    const url = `${base}/ws/terminal/${encodeURIComponent(this.options.allocationId)}`;
    const ws = new this.ctor(url, [TERMINAL_PROTOCOL, minted.token]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    await new Promise((resolve, reject) => {
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.attempt = 0;
        if (this.size) this.sendJson({ type: "resize", ...this.size });
        this.emit("open", { reattached: reattach });
        resolve();
      };
      ws.onerror = () => {
        if (!opened) ws.onclose?.({ code: 1006, reason: "connection failed" });
      };
      ws.onmessage = (ev) => this.onMessage(ev.data);
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        ws.onclose = ws.onerror = null;
        this.ws = null;
        if (!opened) {
          try {
            ws.close();
          } catch {
          }
          reject(new WaygateError("connect_failed", `the gateway refused the terminal socket (close ${ev.code})`));
          if (!reattach) return;
        }
        this.onClose(ev.code, ev.reason);
      };
    });
  }
  onMessage(data) {
    if (typeof data !== "string") {
      this.emit("data", new Uint8Array(data));
      return;
    }
    let m;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m.type === "exit") {
      this.exited = true;
      this.emit("exit", m.code);
    } else if (m.type === "session" && typeof m.sessionId === "string") {
      this.sessionId = m.sessionId;
      this.emit("session", m.sessionId);
    } else if (m.type === "error" && m.error) {
      this.emit("error", WaygateError.from(m.error));
    }
  }
  onClose(code, reason) {
    const canReattach = !this.done && !this.exited && this.options.reattach !== false && this.sessionId && !FINAL.includes(code);
    if (!canReattach) return this.finish(code, reason);
    if (this.attempt === 0) this.reattachUntil = Date.now() + (this.options.reattachWindowMs ?? 3e4);
    if (Date.now() >= this.reattachUntil) return this.finish(code, reason);
    this.attempt++;
    this.emit("reattaching", { code, reason, attempt: this.attempt });
    const delay = Math.min(5e3, 250 * 2 ** (this.attempt - 1)) * (0.5 + Math.random() / 2);
    this.timer = setTimeout(() => {
      this.open(true).catch((e) => {
        if (this.done) return;
        if (!(e instanceof WaygateError)) {
          this.onClose(code, reason);
        } else if (e.code !== "connect_failed") {
          this.emit("error", e);
          this.finish(code, reason);
        }
      });
    }, delay);
  }
  finish(code, reason) {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.emit("close", { code, reason });
  }
  sendJson(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }
  /** Sends input (text is UTF-8 encoded). Dropped while no socket is open. */
  write(data) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(typeof data === "string" ? this.encoder.encode(data) : data);
  }
  /** Resizes the terminal; remembered and sent again after a reattach. */
  resize(cols, rows) {
    this.size = { cols, rows };
    this.sendJson({ type: "resize", cols, rows });
  }
  /** Ends the session from this side. */
  close() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = null;
      ws.close(1e3);
    }
    this.finish(1e3, "closed by the client");
  }
};
export {
  DeviceClient,
  Emitter,
  HEARTBEAT_TIMEOUT,
  Subscription,
  TERMINAL_PROTOCOL,
  TerminalClient,
  Waygate,
  WaygateError
};
