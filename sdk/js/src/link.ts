import { Emitter, type EventMap } from './emitter.js';
import { WaygateError } from './errors.js';

/** The part of the WHATWG `WebSocket` the SDK uses (browsers, Node ≥ 22, Node 20 with `--experimental-websocket`). */
export interface SocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketCtor = new (url: string, protocols?: string | string[]) => SocketLike;

/** Connection options shared by `Waygate` and `DeviceClient`. */
export interface LinkOptions {
  /** A `WebSocket` constructor, when there is no global one (e.g. the `ws` package in older Node). */
  WebSocket?: WebSocketCtor;
  /** First reconnect delay in ms (default 500); it doubles per failed attempt. */
  reconnectDelayMs?: number;
  /** Largest reconnect delay in ms (default 30 000). Each delay is jittered to 50–100 % of its value. */
  reconnectMaxDelayMs?: number;
  /** A socket not open and greeted by the server after this long (ms, default 10 000) is given up and retried. */
  connectTimeoutMs?: number;
  /** A connection that stayed up this long (ms, default 10 000) resets the backoff. */
  stableAfterMs?: number;
  /**
   * How long to wait for an answer once a heartbeat ping went out (ms). Default: the server's
   * heartbeat interval, at most 10 000.
   */
  pongTimeoutMs?: number;
}

/** Why a connection ended. `code` 4408 with reason `heartbeat timeout` is the client's own verdict on a dead link. */
export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Delay before the next attempt, absent when the client will not reconnect. */
  reconnectInMs?: number;
}

export interface LinkEvents {
  disconnected: [info: DisconnectInfo];
  error: [error: WaygateError];
}

export const HEARTBEAT_TIMEOUT = 4408;

export function socketCtor(given?: WebSocketCtor): WebSocketCtor {
  const ctor = given ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (!ctor) {
    throw new Error('no WebSocket available: pass options.WebSocket, use Node >= 22, or run Node 20 with --experimental-websocket');
  }
  return ctor;
}

/**
 * One logical connection that survives its sockets: reconnects with jittered exponential
 * backoff, and declares a silent link dead. The server pings at the WebSocket level (browsers
 * answer those by themselves but never show them to scripts), so a client learns of a dead
 * link only by asking: when nothing arrived for a heartbeat interval it sends
 * `{"action":"ping"}`, and when nothing at all answers within `pongTimeoutMs` it drops the
 * socket and reconnects.
 */
export abstract class Link<E extends LinkEvents & EventMap<E>> extends Emitter<E> {
  protected ws: SocketLike | null = null;
  /** `close()` was called: no more sockets, no timers. */
  protected stopped = false;
  private readonly ctor: WebSocketCtor;
  private starting = false;
  private attempt = 0;
  private openedAt = 0;
  private lastRx = 0;
  private heartbeatMs = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(protected readonly linkOptions: LinkOptions) {
    super();
    this.ctor = socketCtor(linkOptions.WebSocket);
  }

  /** Emits one of the events every link has (the subclass's event map includes them). */
  protected emitLink<K extends keyof LinkEvents>(event: K, ...args: LinkEvents[K]): void {
    (this.emit as (event: K, ...args: LinkEvents[K]) => void).call(this, event, ...args);
  }

  /** The URL of the next socket. */
  protected abstract url(): string;
  /** Subprotocols of the next socket (may fetch a token). */
  protected abstract protocols(): Promise<string[] | undefined>;
  /** The socket is open. */
  protected abstract opened(): void;
  /** A text frame arrived (parsed JSON, or the raw string when it is not JSON). */
  protected abstract frame(msg: any): void;
  /** The socket is gone (called before the `disconnected` event). */
  protected abstract lost(code: number, reason: string): void;
  /** Whether to reconnect after a close with this code. */
  protected reconnects(_code: number): boolean {
    return true;
  }

  /** True while a socket is open. */
  get isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === 1;
  }

  /** Starts connecting (no-op while connecting or connected). */
  protected open(): void {
    if (this.stopped || this.ws || this.starting) return;
    this.starting = true;
    clearTimeout(this.reconnectTimer);
    this.protocols().then(
      (protocols) => {
        this.starting = false;
        if (this.stopped) return;
        let ws: SocketLike;
        try {
          ws = protocols ? new this.ctor(this.url(), protocols) : new this.ctor(this.url());
        } catch (e) {
          this.emitLink('error', new WaygateError('connect_failed', String((e as Error)?.message ?? e)));
          this.retry(1006, 'connect failed');
          return;
        }
        this.attach(ws);
      },
      (e) => {
        this.starting = false;
        if (this.stopped) return;
        this.emitLink('error', new WaygateError('token_unavailable', `getToken failed: ${(e as Error)?.message ?? e}`));
        this.retry(1006, 'no token');
      },
    );
  }

  private attach(ws: SocketLike): void {
    this.ws = ws;
    this.openedAt = 0;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = this.lastRx = Date.now();
      this.opened();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      if (this.pongTimer !== undefined) {
        clearTimeout(this.pongTimer);
        this.pongTimer = undefined;
      }
      if (typeof ev.data !== 'string') return;
      let msg: unknown = ev.data;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        // not JSON: handed over as text (e.g. a server push body)
      }
      this.frame(msg);
    };
    // An open socket's error is followed by a close event with the code. A socket that never
    // opened may get no close event at all (Node 20's WebSocket after a reset handshake).
    ws.onerror = () => {
      if (this.ws === ws && !this.openedAt) this.drop(1006, 'connection failed');
    };
    // Cleared by `heartbeat()` once the server greeted the socket.
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws) this.drop(1006, 'connect timeout');
    }, this.linkOptions.connectTimeoutMs ?? 10_000);
    ws.onclose = (ev) => {
      if (this.ws === ws) this.drop(ev.code, ev.reason);
    };
  }

  /** Sends one JSON frame; false when no socket is open. */
  protected send(frame: unknown): boolean {
    if (!this.isOpen) return false;
    this.ws!.send(JSON.stringify(frame));
    return true;
  }

  /**
   * The server accepted the connection (welcome, or a device's ack): the connect timeout
   * ends and dead-link detection starts with the server's heartbeat interval.
   */
  protected heartbeat(intervalMs: number): void {
    clearTimeout(this.connectTimer);
    this.heartbeatMs = intervalMs > 0 ? intervalMs : 0;
    clearTimeout(this.idleTimer);
    if (this.heartbeatMs) this.idleTimer = setTimeout(() => this.checkIdle(), this.heartbeatMs);
  }

  private checkIdle(): void {
    const quiet = Date.now() - this.lastRx;
    if (quiet >= this.heartbeatMs && this.pongTimer === undefined && this.send({ action: 'ping', id: 'heartbeat' })) {
      const wait = this.linkOptions.pongTimeoutMs ?? Math.min(this.heartbeatMs, 10_000);
      this.pongTimer = setTimeout(() => this.drop(HEARTBEAT_TIMEOUT, 'heartbeat timeout'), wait);
    }
    const next = quiet >= this.heartbeatMs ? this.heartbeatMs : this.heartbeatMs - quiet;
    this.idleTimer = setTimeout(() => this.checkIdle(), next);
  }

  private stopTimers(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.pongTimer);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    this.idleTimer = this.pongTimer = this.reconnectTimer = this.connectTimer = undefined;
    this.heartbeatMs = 0;
  }

  /**
   * Forgets the current socket (closing it without waiting: on a dead link the closing
   * handshake would never finish) and reconnects unless stopped.
   */
  protected drop(code: number, reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code === HEARTBEAT_TIMEOUT ? 4000 : 1000);
    } catch {
      // already closed
    }
    if (this.openedAt && Date.now() - this.openedAt >= (this.linkOptions.stableAfterMs ?? 10_000)) this.attempt = 0;
    this.retry(code, reason);
  }

  private retry(code: number, reason: string): void {
    this.stopTimers();
    let reconnectInMs: number | undefined;
    if (!this.stopped && this.reconnects(code)) {
      const base = this.linkOptions.reconnectDelayMs ?? 500;
      const max = this.linkOptions.reconnectMaxDelayMs ?? 30_000;
      const ceiling = Math.min(max, base * 2 ** Math.min(this.attempt, 30));
      reconnectInMs = Math.round(ceiling * (0.5 + Math.random() / 2));
      this.attempt++;
      this.reconnectTimer = setTimeout(() => this.open(), reconnectInMs);
    }
    this.lost(code, reason);
    this.emitLink('disconnected', { code, reason, reconnectInMs });
  }

  /** Stops for good: closes the socket, cancels every timer. */
  protected stop(code = 1000, reason = 'closed by the client'): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ws) {
      this.drop(code, reason);
    } else {
      this.stopTimers();
    }
  }
}
