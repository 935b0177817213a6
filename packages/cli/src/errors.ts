/**
 * The CLI's errors and exit codes. Every failure the user should read becomes a CliError whose
 * message is printed as one `error: ...` line on stderr; its exit code tells scripts what kind of
 * failure it was.
 */

/** Exit codes of every keypool command. */
export const EXIT = {
  /** Done. For `serve`: stopped by SIGTERM / SIGINT after draining. */
  ok: 0,
  /** The command could not be done: gateway unreachable, admin token refused, API error, startup failure. */
  failure: 1,
  /** Usage: unknown command or option, missing or malformed argument, invalid config file. */
  usage: 2,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export type CliErrorCode =
  /** No answer from the gateway (connection refused, unknown host, timeout). */
  | 'GATEWAY_UNREACHABLE'
  /** 401 / 403 from the admin API. */
  | 'ADMIN_REFUSED'
  /** 401 from /status: the gateway sets server.statusToken and none (or a wrong one) was sent. */
  | 'STATUS_REFUSED'
  /** Any other error answer of the gateway. */
  | 'API_ERROR'
  /** Wrong or missing arguments found after commander's own checks. */
  | 'USAGE'
  /** `keypool serve` could not start (port in use, no Redis...) or failed while stopping. */
  | 'SERVE_FAILED'
  /** The config file is invalid. */
  | 'CONFIG_INVALID'
  /** The encrypted secrets file could not be read or written (integrity check, missing, conflict, I/O). */
  | 'SECRETS_FAILED'
  /** `keypool queue`: Redis unreachable, a job that failed or was not done in time, no such job, not retryable. */
  | 'QUEUE_FAILED';

const EXIT_OF: Record<CliErrorCode, ExitCode> = {
  GATEWAY_UNREACHABLE: EXIT.failure,
  ADMIN_REFUSED: EXIT.failure,
  STATUS_REFUSED: EXIT.failure,
  API_ERROR: EXIT.failure,
  USAGE: EXIT.usage,
  SERVE_FAILED: EXIT.failure,
  CONFIG_INVALID: EXIT.usage,
  SECRETS_FAILED: EXIT.failure,
  QUEUE_FAILED: EXIT.failure,
};

/** A failure to report to the user; the message is what they read, the exit code follows from `code`. */
export class CliError extends Error {
  readonly code: CliErrorCode;
  readonly exitCode: ExitCode;
  /** HTTP status, for API errors. */
  readonly status: number | undefined;
  constructor(code: CliErrorCode, message: string, options: { cause?: unknown; status?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CliError';
    this.code = code;
    this.exitCode = EXIT_OF[code];
    this.status = options.status;
  }
}

export const isCliError = (e: unknown): e is CliError => e instanceof CliError;
export const usageError = (message: string) => new CliError('USAGE', message);
