import { z } from 'zod';

/** What an invalid port reads (file or KEYPOOL_PORT). */
export const PORT_MESSAGE = 'expected an integer 0-65535';
/** What a short admin token reads (file or KEYPOOL_ADMIN_TOKEN). */
export const ADMIN_TOKEN_MESSAGE = 'must be at least 24 characters (generate one with: openssl rand -hex 24)';
const SIZE_MESSAGE = 'expected a size such as 512kb or 4mb, or a number of bytes';

const UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** `4mb` -> 4194304; a bare number is bytes. Undefined when the text is no size. */
export function parseByteSize(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$/i.exec(value);
  if (!m) return undefined;
  const bytes = Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'b').toLowerCase()]!);
  return bytes > 0 ? bytes : undefined;
}

/** The backoff between two upstream attempts of one request. */
export const BackoffSchema = z
  .object({
    baseMs: z.number().int().min(0).default(100).describe('Pause before the second attempt; doubles with each further attempt (with jitter).'),
    maxMs: z.number().int().min(0).default(5000).describe('Longest pause between two attempts after a 5xx, a timeout or a network error. A 429 is not backed off: the pool cools that key as long as the provider says and the next attempt takes another key at once, or, after a 429 with a Retry-After, waits for the first key to cool down (that one included) when none is free.'),
  })
  .strict()
  .superRefine((b, ctx) => {
    if (b.maxMs < b.baseMs) ctx.addIssue({ code: 'custom', path: ['maxMs'], message: 'must be at least backoff.baseMs' });
  });

/** The HTTP side of the gateway. */
export const ServerSectionSchema = z
  .object({
    host: z.string().min(1).default('127.0.0.1').describe('Address to listen on. 0.0.0.0 to accept connections from other machines. Env KEYPOOL_HOST overrides it.'),
    port: z
      .number(PORT_MESSAGE)
      .int(PORT_MESSAGE)
      .min(0, PORT_MESSAGE)
      .max(65535, PORT_MESSAGE)
      .default(8080)
      .describe('TCP port to listen on; 0 picks any free port (logged at start). Env KEYPOOL_PORT overrides it.'),
    adminToken: z
      .preprocess((v) => (v === '' ? undefined : v), z.string().min(24, ADMIN_TOKEN_MESSAGE).optional())
      .describe(
        'Bearer token of the admin API (key actions, gateway tokens). Keep it out of the file: write ${KEYPOOL_ADMIN_TOKEN} or set the env var, ' +
          'which overrides it. Absent or empty: the admin API is disabled.',
      ),
    statusToken: z
      .preprocess((v) => (v === '' ? undefined : v), z.string().min(24, ADMIN_TOKEN_MESSAGE).optional())
      .describe(
        'Read-only bearer token of the ops views: /status, /metrics and the data of /dashboard (the admin token opens them too; Prometheus sends it with ' +
          'authorization.credentials). Write ${KEYPOOL_STATUS_TOKEN} or set the env var, which overrides it. Absent or empty: those views are open to whoever reaches the port; keep it private.',
      ),
    bodyLimit: z
      .union([z.number(), z.string()])
      .transform((v, ctx) => {
        const bytes = parseByteSize(v);
        if (bytes === undefined) {
          ctx.addIssue({ code: 'custom', message: SIZE_MESSAGE });
          return z.NEVER;
        }
        return bytes;
      })
      .default(4 * 1024 ** 2)
      .describe('Largest request body accepted (413 above it): bytes, or with a unit, e.g. 512kb, 4mb. Default 4mb.'),
    deadlineMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe('Overall deadline of one request, waiting for a free key and every retry included; past it the client gets 504 (or 429 when no key was free).'),
    attemptTimeoutMs: z
      .number()
      .int()
      .min(100)
      .default(60_000)
      .describe('Timeout of one upstream attempt; for a stream, the longest silence between two chunks. Then the attempt is retried on another key.'),
    maxAttempts: z.number().int().min(1).max(20).default(4).describe('Upstream attempts per request (the first included), each on a key picked afresh.'),
    backoff: BackoffSchema.prefault({}).describe('Pause between attempts.'),
    defaultMaxOutputTokens: z
      .number()
      .int()
      .positive()
      .default(1024)
      .describe('Output tokens assumed, for rate limits and budget reservations, when a request sets no max_tokens / max_completion_tokens.'),
    drainMs: z
      .number()
      .int()
      .min(0)
      .default(30_000)
      .describe('On SIGTERM / SIGINT: new requests are refused and in-flight ones get this long to finish before the process exits.'),
  })
  .strict();

export type ServerSection = z.output<typeof ServerSectionSchema>;
