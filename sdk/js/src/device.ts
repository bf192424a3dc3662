import { type ErrorBody, WaygateError } from './errors.js';
import { Link, type LinkEvents, type LinkOptions } from './link.js';

/** What a tool handler gets besides the call's arguments. */
export interface ToolCallContext {
  callId: string;
  tool: string;
  /** When the gateway gives up on the call (corrected for the clock difference to the server). */
  deadline: Date;
  /**
   * Aborted when the deadline passes (`reason.code` `tool_call_timeout`), the call is
   * cancelled (`cancelled`), the connection drops (`connection_lost`: the gateway has failed
   * the call) or the client stops (`closed`). A result after that is not sent.
   */
  signal: AbortSignal;
}

export type ToolHandler = (args: any, ctx: ToolCallContext) => unknown;

export interface DeviceClientOptions extends LinkOptions {
  deviceId: string;
  /** From the registration answer (`POST /api/gateway/devices`). */
  wsEndpoint: string;
  /** From the registration answer; shown once. */
  sessionToken: string;
  /** Tool name → handler. Its value becomes the result; a throw becomes `ok:false` with the error's `code` (default `tool_error`) and message. */
  handlers: Record<string, ToolHandler>;
}

export interface Registered {
  deviceId: string;
  sessionId: string;
  heartbeatIntervalMs: number;
}

export interface DeviceClientEvents extends LinkEvents {
  registered: [info: Registered];
  call: [call: { callId: string; tool: string }];
  /** The gateway cancelled a running call (its handler's signal is aborted). */
  cancelled: [call: { callId: string; tool: string }];
}

/** Close codes after which reconnecting cannot help. */
const FATAL: Record<number, string> = {
  4401: 'token_invalid',
  4404: 'device_deleted',
  4409: 'device_replaced',
};

interface Running {
  tool: string;
  abort: AbortController;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A device: registers with its session token, runs tool calls with the given handlers and
 * sends their results, reconnects and registers again after a lost link.
 *
 * ```ts
 * const dev = new DeviceClient({ deviceId, wsEndpoint, sessionToken, handlers: { echo: async (args) => args } });
 * await dev.start();
 * ```
 */
export class DeviceClient extends Link<DeviceClientEvents> {
  /** Set by the latest `ack`. */
  sessionId: string | undefined;
  private registered: Registered | undefined;
  private readonly running = new Map<string, Running>();
  /** Server time minus local time, from the welcome frame (deadlines are the server's clock). */
  private skewMs = 0;
  private first: { resolve: (r: Registered) => void; reject: (e: WaygateError) => void } | undefined;
  private fatal: WaygateError | undefined;

  constructor(private readonly options: DeviceClientOptions) {
    super(options);
  }

  /**
   * Connects and registers; resolves on the first `ack`, rejects when the gateway refuses the
   * device (`token_invalid`, `device_deleted`) or the client is closed first. Keeps the
   * device online (reconnecting) until `close()`.
   */
  start(): Promise<Registered> {
    if (this.fatal) return Promise.reject(this.fatal);
    if (this.registered && this.isOpen) return Promise.resolve(this.registered);
    return new Promise((resolve, reject) => {
      const earlier = this.first;
      this.first = {
        resolve: (r) => (earlier?.resolve(r), resolve(r)),
        reject: (e) => (earlier?.reject(e), reject(e)),
      };
      this.open();
    });
  }

  /** Disconnects for good and aborts running handlers. */
  close(): void {
    this.abortAll('closed', 'the client is closed');
    this.stop();
    this.first?.reject(new WaygateError('closed', 'the client is closed'));
    this.first = undefined;
  }

  protected url(): string {
    return this.options.wsEndpoint;
  }

  protected async protocols(): Promise<undefined> {
    return undefined;
  }

  protected opened(): void {
    this.send({
      type: 'register',
      deviceId: this.options.deviceId,
      sessionToken: this.options.sessionToken,
      protocolVersion: 1,
    });
  }

  protected override reconnects(code: number): boolean {
    const fatal = FATAL[code];
    if (!fatal) return true;
    this.fatal = new WaygateError(fatal, `the gateway refused the device (close ${code})`);
    this.emit('error', this.fatal);
    this.first?.reject(this.fatal);
    this.first = undefined;
    return false;
  }

  protected lost(): void {
    this.sessionId = this.registered = undefined;
    // The gateway fails a call whose device disconnected: its result would be refused.
    this.abortAll('connection_lost', 'the connection to the gateway dropped');
  }

  protected frame(m: any): void {
    switch (m?.type) {
      case 'welcome': {
        const t = Date.parse(m.serverTime);
        if (!Number.isNaN(t)) this.skewMs = t - Date.now();
        return;
      }
      case 'ack': {
        this.sessionId = m.sessionId;
        this.heartbeat(m.heartbeatIntervalMs);
        const info: Registered = { deviceId: m.deviceId, sessionId: m.sessionId, heartbeatIntervalMs: m.heartbeatIntervalMs };
        this.registered = info;
        this.first?.resolve(info);
        this.first = undefined;
        this.emit('registered', info);
        return;
      }
      case 'tool_call':
        return this.call(m);
      case 'tool_call_cancel':
        return this.cancel(m.id ?? m.callId);
      case 'error': {
        // The heartbeat's ping on a device-only path may be answered with `unknown_action`
        // by older gateways: that answer proves the link is alive, nothing more.
        if (m.id === 'heartbeat') return;
        const body: ErrorBody = m.error ?? { code: 'unknown', message: JSON.stringify(m) };
        this.emit('error', WaygateError.from(body));
        return;
      }
    }
  }

  private call(m: { callId: string; tool: string; args: unknown; deadline: string }): void {
    const { callId, tool } = m;
    const handler = Object.prototype.hasOwnProperty.call(this.options.handlers, tool) ? this.options.handlers[tool] : undefined;
    this.emit('call', { callId, tool });
    if (!handler) {
      this.result(callId, false, undefined, { code: 'unknown_tool', message: `this device has no handler for ${tool}` });
      return;
    }
    const abort = new AbortController();
    const parsed = Date.parse(m.deadline);
    const deadline = new Date(Number.isNaN(parsed) ? Date.now() + 30_000 : parsed - this.skewMs);
    const timer = setTimeout(
      () => this.end(callId, 'tool_call_timeout', 'the call passed its deadline'),
      Math.max(0, deadline.getTime() - Date.now()),
    );
    const run: Running = { tool, abort, timer };
    this.running.set(callId, run);
    new Promise((resolve) => resolve(handler(m.args, { callId, tool, deadline, signal: abort.signal }))).then(
      (value) => this.finish(callId, run, true, value),
      (e) => this.finish(callId, run, false, e),
    );
  }

  private finish(callId: string, run: Running, ok: boolean, value: any): void {
    if (this.running.get(callId) !== run) return; // aborted: the gateway no longer waits for it
    this.running.delete(callId);
    clearTimeout(run.timer);
    if (ok) {
      this.result(callId, true, value === undefined ? null : value);
    } else {
      const code = typeof value?.code === 'string' ? value.code : 'tool_error';
      this.result(callId, false, undefined, { code, message: String(value?.message ?? value) });
    }
  }

  private result(callId: string, ok: boolean, result?: unknown, error?: { code: string; message: string }): void {
    this.send(ok ? { type: 'tool_result', callId, ok, result } : { type: 'tool_result', callId, ok, error });
  }

  private cancel(callId: string): void {
    const run = this.running.get(callId);
    if (!run) return;
    this.end(callId, 'cancelled', 'the call was cancelled');
    this.emit('cancelled', { callId, tool: run.tool });
  }

  private end(callId: string, code: string, message: string): void {
    const run = this.running.get(callId);
    if (!run) return;
    this.running.delete(callId);
    clearTimeout(run.timer);
    run.abort.abort(new WaygateError(code, message));
  }

  private abortAll(code: string, message: string): void {
    for (const callId of [...this.running.keys()]) this.end(callId, code, message);
  }
}
