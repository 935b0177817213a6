import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

/**
 * A pino logger whose lines are kept in memory, so a test can read every log line (to check an
 * audit line is there, or that no secret is). Give it the same redact paths as production.
 */
export class LogSink {
  lines: string[] = [];
  readonly logger: Logger;
  constructor(redact: string[] = []) {
    const stream = new Writable({
      write: (chunk, _enc, cb) => {
        this.lines.push(String(chunk));
        cb();
      },
    });
    this.logger = pino({ level: 'debug', redact: { paths: redact, censor: '[redacted]' } }, stream);
  }
  get text(): string {
    return this.lines.join('');
  }
}
