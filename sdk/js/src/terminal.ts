import { Emitter } from './emitter.js';
import { WaygateError } from './errors.js';
import { type SocketLike, type WebSocketCtor, socketCtor } from './link.js';

export const TERMINAL_PROTOCOL = 'waygate.terminal.v1';

export interface TerminalClientOptions {
  allocationId: string;
  /** The gateway's HTTP origin, e.g. `https://gw.example.com` (default: the page's origin). */
  baseUrl?: string;
  /** A session token for `Authorization: Bearer` (browsers on the gateway's origin may use the session cookie instead). */
  authToken?: string;
  /** WebSocket base such as `wss://gw.example.com` (default: `GET /api/terminal/config`'s `wsBase`, else `baseUrl`). */
  wsBase?: string;
  WebSocket?: WebSocketCtor;
  fetch?: typeof fetch;
  /** Reattach to the session after a lost socket (default true; needs a gateway that names its sessions). */
  reattach?: boolean;
  /** How long to keep trying to reattach (ms, default 30 000, the gateway's default `TERMINAL_REATTACH_SECONDS`). */
  reattachWindowMs?: number;
}

export interface TerminalToken {
  token: string;
  expiresAt: string;
  protocol: string;
}

export interface TerminalClose {
  code: number;
  reason: string;
}

export interface TerminalEvents {
  /** The socket is open (`reattached`: it continues an earlier session). */
  open: [info: { reattached: boolean }];
  /** Terminal output. */
  data: [bytes: Uint8Array];
  /** The gateway named the session (it can be reattached with this id). */
  session: [sessionId: string];
  /** The process ended with this code (128 + signal for a signal). */
  exit: [code: number];
  /** An error frame from the gateway, or a failed reattach. */
  error: [error: WaygateError];
  /** The socket dropped and the client is reattaching. */
  reattaching: [info: TerminalClose & { attempt: number }];
  /** The terminal is over: exit, `close()`, a final close code, or no reattach possible. */
  close: [info: TerminalClose];
}

/** Close codes that end a session for good (1000: exit, idle, lifetime; 1008: allocation deleted). */
const FINAL = [1000, 1008];

async function readError(res: Response): Promise<WaygateError> {
  let body: any = null;
  try {
    body = await res.json();
  } catch {
    // no JSON body
  }
  return body?.error ? WaygateError.from(body.error) : new WaygateError(`http_${res.status}`, `HTTP ${res.status}`);
}

/**
 * A browser terminal session on `/ws/terminal/{allocationId}`: mints a single-use token
 * through the API, connects with the `waygate.terminal.v1` subprotocol, relays bytes and
 * resizes, and reattaches to the same session after a lost socket.
 */
export class TerminalClient extends Emitter<TerminalEvents> {
  /** Set by the gateway's `{"type":"session"}` frame. */
  sessionId: string | undefined;
  private ws: SocketLike | null = null;
  private size: { cols: number; rows: number } | undefined;
  private done = false;
  private exited = false;
  private reattachUntil = 0;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly ctor: WebSocketCtor;
  private readonly encoder = new TextEncoder();

  constructor(private readonly options: TerminalClientOptions) {
    super();
    this.ctor = socketCtor(options.WebSocket);
  }

  private get base(): string {
    return this.options.baseUrl ?? (globalThis as { location?: { origin: string } }).location?.origin ?? '';
  }

  private async api(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.options.authToken) headers.Authorization = `Bearer ${this.options.authToken}`;
    const f = this.options.fetch ?? fetch;
    return f(this.base + path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  /** Mints a single-use token for the allocation (for the given session: a reattach token). */
  async mintToken(sessionId?: string): Promise<TerminalToken> {
    const path = `/api/terminal/allocations/${encodeURIComponent(this.options.allocationId)}/tokens`;
    const res = await this.api('POST', path, sessionId ? { sessionId } : undefined);
    if (!res.ok) throw await readError(res);
    return res.json();
  }

  private async wsBase(): Promise<string> {
    if (this.options.wsBase) return this.options.wsBase;
    try {
      const res = await this.api('GET', '/api/terminal/config');
      const cfg = res.ok ? await res.json() : null;
      if (cfg?.wsBase) return cfg.wsBase;
    } catch {
      // fall back to the HTTP origin
    }
    return this.base.replace(/^http/, 'ws');
  }

  /**
   * Mints a token and opens the session; resolves once the socket is open. Rejects with the
   * API's error (e.g. `not_found`, `forbidden`) or `connect_failed` when the gateway refused
   * the socket (browsers hide the refusal's body: ask the allocation API why).
   */
  async connect(): Promise<void> {
    this.done = this.exited = false;
    this.sessionId = undefined;
    this.attempt = 0;
    clearTimeout(this.timer);
    await this.open(false);
  }

  private async open(reattach: boolean): Promise<void> {
    const minted = await this.mintToken(reattach ? this.sessionId : undefined);
    const base = await this.wsBase();
    if (this.done) throw new WaygateError('closed', 'the terminal was closed');
    const url = `${base}/ws/terminal/${encodeURIComponent(this.options.allocationId)}`;
    const ws = new this.ctor(url, [TERMINAL_PROTOCOL, minted.token]);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.attempt = 0;
        if (this.size) this.sendJson({ type: 'resize', ...this.size });
        this.emit('open', { reattached: reattach });
        resolve();
      };
      // A socket that never opened may get no close event (Node 20's WebSocket): fail it here.
      ws.onerror = () => {
        if (!opened) ws.onclose?.({ code: 1006, reason: 'connection failed' });
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
            // already closed
          }
          reject(new WaygateError('connect_failed', `the gateway refused the terminal socket (close ${ev.code})`));
          if (!reattach) return;
        }
        this.onClose(ev.code, ev.reason);
      };
    });
  }

  private onMessage(data: unknown): void {
    if (typeof data !== 'string') {
      this.emit('data', new Uint8Array(data as ArrayBuffer));
      return;
    }
    let m: any;
    try {
      m = JSON.parse(data);
    } catch {
      return;
    }
    if (m.type === 'exit') {
      this.exited = true;
      this.emit('exit', m.code);
    } else if (m.type === 'session' && typeof m.sessionId === 'string') {
      this.sessionId = m.sessionId;
      this.emit('session', m.sessionId);
    } else if (m.type === 'error' && m.error) {
      this.emit('error', WaygateError.from(m.error));
    }
  }

  private onClose(code: number, reason: string): void {
    const canReattach =
      !this.done && !this.exited && this.options.reattach !== false && this.sessionId && !FINAL.includes(code);
    if (!canReattach) return this.finish(code, reason);
    if (this.attempt === 0) this.reattachUntil = Date.now() + (this.options.reattachWindowMs ?? 30_000);
    if (Date.now() >= this.reattachUntil) return this.finish(code, reason);
    this.attempt++;
    this.emit('reattaching', { code, reason, attempt: this.attempt });
    const delay = Math.min(5_000, 250 * 2 ** (this.attempt - 1)) * (0.5 + Math.random() / 2);
    this.timer = setTimeout(() => {
      this.open(true).catch((e: unknown) => {
        if (this.done) return;
        if (!(e instanceof WaygateError)) {
          this.onClose(code, reason); // the gateway is unreachable (fetch failed): try again
        } else if (e.code !== 'connect_failed') {
          // The API refused the reattach token (the session is gone). A refused socket has
          // already been handled by its close event.
          this.emit('error', e);
          this.finish(code, reason);
        }
      });
    }, delay);
  }

  private finish(code: number, reason: string): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.emit('close', { code, reason });
  }

  private sendJson(frame: unknown): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  /** Sends input (text is UTF-8 encoded). Dropped while no socket is open. */
  write(data: string | Uint8Array): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(typeof data === 'string' ? this.encoder.encode(data) : data);
  }

  /** Resizes the terminal; remembered and sent again after a reattach. */
  resize(cols: number, rows: number): void {
    this.size = { cols, rows };
    this.sendJson({ type: 'resize', cols, rows });
  }

  /** Ends the session from this side. */
  close(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = ws.onmessage = null;
      ws.close(1000);
    }
    this.finish(1000, 'closed by the client');
  }
}
