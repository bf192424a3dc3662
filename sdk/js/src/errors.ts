/** The server's error envelope (`{"error":{"code","message","correlation_id","details"}}`). */
export interface ErrorBody {
  code: string;
  message: string;
  correlation_id?: string;
  details?: Record<string, unknown>;
}

/**
 * Every failure the SDK reports. `code` is the server's error code (`forbidden`,
 * `bad_request`, `rate_limited`, …) or one of the client's own:
 *
 * - `connection_lost`: the socket closed before the server answered (the request may or may
 *   not have been carried out);
 * - `timeout`: no answer within `requestTimeoutMs`;
 * - `closed`: `close()` was called;
 * - `queue_full`: too many requests waiting for a connection;
 * - `token_unavailable`: `getToken` failed;
 * - `http_<status>`: an HTTP call answered without an error envelope.
 */
export class WaygateError extends Error {
  readonly code: string;
  readonly correlationId?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: string, message: string, correlationId?: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'WaygateError';
    this.code = code;
    this.correlationId = correlationId;
    this.details = details;
  }

  static from(body: ErrorBody): WaygateError {
    return new WaygateError(body.code, body.message, body.correlation_id, body.details);
  }
}
