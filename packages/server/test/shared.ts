/**
 * Pieces the server's and the CLI's tests share (no Redis connection, no vitest): gateway settings
 * fit for tests and a log sink redacted as in production.
 */
import { LogSink as BaseLogSink } from '@keypool/testkit/log-sink';
import type { GatewaySettings } from '../src/index.js';
import { REDACT } from '@keypool/config';

/** Short deadlines and backoff, a small body limit, and the given admin token. */
export function testSettings(adminToken: string): GatewaySettings {
  return {
    adminToken,
    bodyLimit: 64 * 1024,
    deadlineMs: 5000,
    attemptTimeoutMs: 2000,
    maxAttempts: 4,
    backoff: { baseMs: 5, maxMs: 50 },
    defaultMaxOutputTokens: 64,
  };
}

/** Every log line the gateway wrote, redacted as in production. */
export class LogSink extends BaseLogSink {
  constructor() {
    super(REDACT);
  }
}
