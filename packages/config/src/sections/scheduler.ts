import { z } from 'zod';

/** `scheduler`: what `keypool worker` runs, and how often. */
export const SchedulerSectionSchema = z
  .object({
    secretRefreshMs: z.number().int().min(1000).default(60_000).describe('Secret refresh: reload the sources, publish the new set to the fleet, retire keys that disappeared.'),
    probeMs: z.number().int().min(500).default(15_000).describe('Health probes (GET /models) of keys that are open, half-open, revoked or degraded.'),
    probeTimeoutMs: z.number().int().min(100).default(5000).describe('A probe call slower than this is a failure.'),
    budgetPattern: z.string().min(1).default('0 0 * * *').describe('When budget periods start, a cron pattern in UTC (BullMQ syntax; the default is midnight UTC, which starts days and months).'),
    housekeepingMs: z.number().int().min(1000).default(60_000).describe('Housekeeping: expired leases of idle keys back, budget periods started, stale health windows cleared.'),
    rotationGraceMs: z
      .number()
      .int()
      .min(0)
      .default(30_000)
      .describe('How long one secret refresh waits for live processes to let go of keys that left the sources; keys still held then are kept in service and tried again at the next refresh. Shorter than secretRefreshMs.'),
    lockMs: z.number().int().min(1000).default(30_000).describe('A job whose worker stopped renewing its lock for this long (the worker died) runs again on another worker.'),
    stalledCheckMs: z.number().int().min(500).default(15_000).describe('How often workers look for such jobs.'),
  })
  .strict()
  .superRefine((s, ctx) => {
    // a run longer than its interval overlaps the next one (two coordinators, probes doubled)
    if (s.rotationGraceMs >= s.secretRefreshMs) ctx.addIssue({ code: 'custom', path: ['rotationGraceMs'], message: `must be shorter than secretRefreshMs (${s.secretRefreshMs})` });
    if (s.probeTimeoutMs >= s.probeMs) ctx.addIssue({ code: 'custom', path: ['probeTimeoutMs'], message: `must be shorter than probeMs (${s.probeMs})` });
  });
export type SchedulerSection = z.output<typeof SchedulerSectionSchema>;
