import { Emitter } from './emitter.js';
import { type ErrorBody, WaygateError } from './errors.js';
import { Link, type LinkEvents, type LinkOptions } from './link.js';

export interface WaygateOptions extends LinkOptions {
  /** A connect JWT, sent as `Sec-WebSocket-Protocol: waygate.jwt, <token>`. */
  token?: string;
  /**
   * Called before every connect and when the server sends `refresh_required`; wins over
   * `token`. A rejection is reported as an `error` event and the connect is retried with backoff.
   */
  getToken?: () => Promise<string>;
  /** How long `publish`, `presence` and `request` wait for the server's answer (ms, default 10 000). */
  requestTimeoutMs?: number;
  /** Most requests waiting for a connection (default 1 000); more are rejected with `queue_full`. */
  maxQueued?: number;
  /** Connect in the constructor (default true); else call `connect()`. */
  autoConnect?: boolean;
}

/** The server's welcome frame. */
export interface Welcome {
  connectionId: string;
  protocolVersion: number;
  heartbeatIntervalMs: number;
  serverTime: string;
}

export interface WaygateEvents extends LinkEvents {
  connected: [welcome: Welcome];
  /** A frame the SDK does not know, e.g. a body sent through `POST /api/connections/{id}` (parsed when it is JSON). */
  push: [data: unknown];
}

export interface ChannelMessage<T = unknown> {
  channel: string;
  data: T;
  offset: number;
}

/** Messages `from + 1` up to `to` could not be recovered (history too short, or the channel's history was lost). */
export interface Gap {
  channel: string;
  /** Offset of the last message delivered. */
  from: number;
  /** Newest offset when the subscription resumed; delivery continues after it. */
  to: number;
  /** The channel's history was reset (its epoch changed); offsets started over. */
  epochChanged: boolean;
}

export interface Subscribed {
  channel: string;
  offset: number;
  epoch: string;
  /** Present when the subscription resumed from an offset. */
  recovered?: boolean;
}

export interface PresenceMember {
  connectionId: string;
  userId: string | null;
}

export interface Presence {
  channel: string;
  count: number;
  members: PresenceMember[];
}

export interface SubscriptionEvents {
  message: [message: ChannelMessage];
  gap: [gap: Gap];
  subscribed: [info: Subscribed];
  /** The server refused the subscription (e.g. `forbidden`); it is dropped. */
  error: [error: WaygateError];
}

export interface SubscribeOptions {
  /** Resume after this offset (e.g. one stored from an earlier session). */
  since?: number;
  /** The epoch that offset belongs to. */
  epoch?: string;
}

/** Error codes that end a subscription; any other refusal is retried. */
const REFUSALS = ['forbidden', 'permission_denied', 'bad_request', 'unauthorized'];

/** Out-of-order messages kept per subscription while a gap is being recovered. */
const MAX_BUFFERED = 10_000;

/**
 * One channel subscription. It outlives connections: after a reconnect it resumes from the
 * last offset it delivered, so every message still in the server's history arrives once and
 * in order; `gap` says when that was impossible.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** Offset of the last message delivered (or the channel's newest when subscribing fresh). */
  offset: number | undefined;
  epoch: string | undefined;
  /** A subscribe request is in flight: messages wait until its answer tells where to resume. */
  private waiting = false;
  /** Recovery requests for a hole in the stream that have not filled it yet. */
  private holeRetries = 0;
  private readonly buffer = new Map<number, ChannelMessage>();

  constructor(
    private readonly client: Waygate,
    readonly channel: string,
    options: SubscribeOptions = {},
  ) {
    super();
    this.offset = options.since;
    this.epoch = options.epoch;
  }

  /** Who is subscribed to this channel. */
  presence(): Promise<Presence> {
    return this.client.presence(this.channel);
  }

  /** Publishes to this channel (see `Waygate.publish`). */
  publish(data: unknown): Promise<{ offset: number }> {
    return this.client.publish(this.channel, data);
  }

  unsubscribe(): void {
    this.client.unsubscribe(this.channel);
  }

  /** @internal The subscribe frame for (re)subscribing now. */
  _request(id: number): Record<string, unknown> {
    this.waiting = true;
    const frame: Record<string, unknown> = { action: 'subscribe', channel: this.channel, id };
    if (this.offset !== undefined) {
      frame.since = this.offset;
      if (this.epoch !== undefined) frame.epoch = this.epoch;
    }
    return frame;
  }

  /** @internal */
  _subscribed(m: Subscribed): void {
    this.waiting = false;
    if (this.offset === undefined) {
      this.offset = m.offset;
    } else if (m.recovered === false) {
      this.emit('gap', {
        channel: this.channel,
        from: this.offset,
        to: m.offset,
        epochChanged: this.epoch !== undefined && this.epoch !== m.epoch,
      });
      this.offset = m.offset;
    }
    this.epoch = m.epoch;
    this.emit('subscribed', m);
    this.drain();
  }

  /** @internal */
  _message(m: ChannelMessage): void {
    if (this.offset !== undefined && m.offset <= this.offset) return; // already delivered
    this.buffer.set(m.offset, m);
    if (!this.waiting) this.drain();
  }

  /** @internal The server refused the subscription (for good, or for now: then it is retried). */
  _fail(err: WaygateError): void {
    this._reset();
    this.emit('error', err);
  }

  /** @internal The connection is gone: what arrived out of order will be replayed in order. */
  _reset(): void {
    this.waiting = false;
    this.buffer.clear();
  }

  private drain(): void {
    const buf = this.buffer;
    let next: ChannelMessage | undefined;
    while (this.offset !== undefined && (next = buf.get(this.offset + 1))) {
      buf.delete(next.offset);
      this.offset = next.offset;
      this.holeRetries = 0;
      this.emit('message', next);
    }
    if (!buf.size) return;
    for (const o of buf.keys()) if (o <= this.offset!) buf.delete(o);
    if (!buf.size) return;
    if (buf.size > MAX_BUFFERED || this.holeRetries >= 3) {
      // Not recovered: skip to the oldest message held and say what was lost.
      const first = Math.min(...buf.keys());
      this.emit('gap', { channel: this.channel, from: this.offset!, to: first - 1, epochChanged: false });
      this.offset = first - 1;
      this.holeRetries = 0;
      this.drain();
      return;
    }
    // A hole in the live stream (a message lost between instances): ask for the history.
    this.holeRetries++;
    this.client._resubscribe(this);
  }
}

interface Pending {
  frame: Record<string, unknown>;
  sent: boolean;
  resolve: (reply: any) => void;
  reject: (error: WaygateError) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A realtime connection: channels with recovery, publish with acknowledgements, presence.
 *
 * ```ts
 * const wg = new Waygate('wss://host/ws', { getToken });
 * const sub = wg.subscribe('news');
 * sub.on('message', (m) => console.log(m.offset, m.data));
 * await wg.publish('news', { hello: 'world' });
 * ```
 */
export class Waygate extends Link<WaygateEvents> {
  private readonly subs = new Map<string, Subscription>();
  /** Subscribe request id → subscription, to route a refusal to it. */
  private readonly subRequests = new Map<number, Subscription>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private welcomed = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly retrySubs = new Set<Subscription>();
  /** The connection id given by the server's welcome; changes with every reconnect. */
  connectionId: string | undefined;

  constructor(
    readonly endpoint: string,
    private readonly options: WaygateOptions = {},
  ) {
    super(options);
    if (options.autoConnect !== false) this.open();
  }

  /** True once the server welcomed the current socket. */
  get connected(): boolean {
    return this.welcomed && this.isOpen;
  }

  /** Connects (after `autoConnect: false`); no-op when connecting or connected. */
  connect(): void {
    this.open();
  }

  /** Subscribes to a channel (or returns the existing subscription). */
  subscribe(channel: string, options?: SubscribeOptions): Subscription {
    let sub = this.subs.get(channel);
    if (!sub) {
      sub = new Subscription(this, channel, options);
      this.subs.set(channel, sub);
      if (this.connected) this.sendSubscribe(sub);
    }
    return sub;
  }

  unsubscribe(channel: string): void {
    const sub = this.subs.get(channel);
    if (!sub) return;
    this.subs.delete(channel);
    sub._reset();
    this.send({ action: 'unsubscribe', channel });
  }

  /** The current subscription to a channel, if any. */
  subscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /**
   * Publishes `data` to a channel; resolves with its offset once the server accepted it,
   * rejects with a `WaygateError` carrying the server's code (e.g. `forbidden`).
   * Called while disconnected, the publish waits for the next connection. When the connection
   * drops after it was sent it rejects with `connection_lost`: it may or may not have been published.
   */
  publish(channel: string, data: unknown): Promise<{ offset: number }> {
    return this.request('publish', { channel, data }).then((m) => ({ offset: m.offset }));
  }

  /** Who is subscribed to a channel. */
  presence(channel: string): Promise<Presence> {
    return this.request('presence', { channel }).then((m) => ({
      channel: m.channel,
      count: m.count,
      members: m.members,
    }));
  }

  /**
   * Sends any action with an `id` and resolves with the server's reply frame (`pong`,
   * `routed`, `response` of an action route, …); rejects on an error frame.
   */
  request(action: string, fields: Record<string, unknown> = {}): Promise<any> {
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new WaygateError('closed', 'the client is closed'));
      if (!this.connected && [...this.pending.values()].filter((p) => !p.sent).length >= (this.options.maxQueued ?? 1000)) {
        return reject(new WaygateError('queue_full', 'too many requests waiting for a connection'));
      }
      const id = ++this.nextId;
      const frame = { ...fields, action, id };
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new WaygateError('timeout', `no answer to ${action} within the request timeout`));
      }, this.options.requestTimeoutMs ?? 10_000);
      const p: Pending = { frame, sent: false, resolve, reject, timer };
      this.pending.set(id, p);
      if (this.connected) p.sent = this.send(frame);
    });
  }

  /** Closes the connection for good: no reconnect, no timers; waiting requests reject with `closed`. */
  close(): void {
    this.failPending(() => true, 'closed', 'the client is closed');
    this.stop();
  }

  /** @internal A subscription saw a hole in its stream. */
  _resubscribe(sub: Subscription): void {
    if (this.connected && this.subs.get(sub.channel) === sub) this.sendSubscribe(sub);
  }

  private sendSubscribe(sub: Subscription): void {
    const id = ++this.nextId;
    this.subRequests.set(id, sub);
    this.send(sub._request(id));
  }

  protected url(): string {
    return this.endpoint;
  }

  protected async protocols(): Promise<string[] | undefined> {
    const token = this.options.getToken ? await this.options.getToken() : this.options.token;
    return token ? ['waygate.jwt', token] : undefined;
  }

  protected opened(): void {
    // Nothing to send before the welcome: it carries the heartbeat interval.
  }

  protected override reconnects(code: number): boolean {
    // A static token that expired cannot get better by retrying.
    if (code === 4401 && !this.options.getToken) {
      this.emit('error', new WaygateError('token_expired', 'the connect token expired and there is no getToken to renew it'));
      return false;
    }
    return true;
  }

  protected lost(): void {
    this.welcomed = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retrySubs.clear();
    this.subRequests.clear();
    for (const sub of this.subs.values()) sub._reset();
    this.failPending((p) => p.sent, 'connection_lost', 'the connection closed before the server answered');
  }

  private failPending(which: (p: Pending) => boolean, code: string, message: string): void {
    for (const [id, p] of this.pending) {
      if (!which(p)) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new WaygateError(code, message));
    }
  }

  protected frame(m: any): void {
    if (m === null || typeof m !== 'object') {
      this.emit('push', m);
      return;
    }
    switch (m.type) {
      case 'welcome':
        return this.welcome(m);
      case 'message': {
        this.subs.get(m.channel)?._message(m);
        return;
      }
      case 'subscribed': {
        const sub = this.subRequests.get(m.id);
        this.subRequests.delete(m.id);
        if (sub && this.subs.get(sub.channel) === sub) sub._subscribed(m);
        return;
      }
      case 'refresh_required':
        return this.refresh();
      case 'error':
        return this.error(m);
      case 'pong':
      case 'unsubscribed':
      case 'refreshed':
        this.settle(m);
        return;
      default:
        if (!this.settle(m)) this.emit('push', m);
    }
  }

  /** Resolves the request this frame answers; false when it answers none. */
  private settle(m: any): boolean {
    const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
    if (!p) return false;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    p.resolve(m);
    return true;
  }

  private welcome(m: Welcome): void {
    this.welcomed = true;
    this.connectionId = m.connectionId;
    this.heartbeat(m.heartbeatIntervalMs);
    this.emit('connected', m);
    for (const sub of this.subs.values()) this.sendSubscribe(sub);
    for (const p of this.pending.values()) {
      if (!p.sent) p.sent = this.send(p.frame);
    }
  }

  private error(m: { id?: unknown; error: ErrorBody }): void {
    const err = WaygateError.from(m.error ?? { code: 'unknown', message: JSON.stringify(m) });
    const sub = typeof m.id === 'number' ? this.subRequests.get(m.id) : undefined;
    if (sub) {
      this.subRequests.delete(m.id as number);
      if (this.subs.get(sub.channel) !== sub) return;
      if (REFUSALS.includes(err.code)) {
        this.subs.delete(sub.channel);
      } else {
        // e.g. `service_unavailable` while a backend restarts: ask again shortly.
        this.retrySubs.add(sub);
        this.retryTimer ??= setTimeout(() => {
          this.retryTimer = undefined;
          for (const s of this.retrySubs) this._resubscribe(s);
          this.retrySubs.clear();
        }, 1000);
      }
      sub._fail(err);
      return;
    }
    const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
    if (p) {
      this.pending.delete(m.id as number);
      clearTimeout(p.timer);
      p.reject(err);
      return;
    }
    this.emit('error', err);
  }

  /** The server wants a fresh token before the current one expires. */
  private refresh(): void {
    const get = this.options.getToken;
    if (!get) {
      this.emit('error', new WaygateError('token_expiring', 'the server asked for a fresh token; pass getToken to renew it'));
      return;
    }
    get().then(
      (token) => {
        // Fire and forget: a refusal comes back as an error frame with this id.
        this.send({ action: 'refresh', token, id: `refresh-${++this.nextId}` });
      },
      (e) => this.emit('error', new WaygateError('token_unavailable', `getToken failed: ${(e as Error)?.message ?? e}`)),
    );
  }
}
