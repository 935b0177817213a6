/**
 * The root logger of `keypool serve` and `keypool worker`, made in main from the config's logLevel.
 * Here rather than in the gateway so that the worker gets the same redaction without loading it.
 */
import { pino, type Logger } from 'pino';

/** Paths pino removes from every log line: whatever may carry a secret or a token. */
export const REDACT = ['req.headers.authorization', 'headers.authorization', 'authorization', 'secret', 'apiKey', 'token', '*.secret', '*.apiKey', '*.token', 'keys[*].secret', 'adminToken', '*.adminToken', 'statusToken', '*.statusToken'];

/** pino JSON on stdout at `level`, with {@link REDACT} applied, the pid and ISO timestamps. */
export function rootLogger(level: string): Logger {
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
