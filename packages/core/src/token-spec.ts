import { z } from 'zod';

/**
 * The settings of a gateway token (tokens.ts), in a module of their own so that the pool config
 * (config.ts) can declare tokens without importing the token machinery.
 */

/** The request bucket size of a key or a token (config.ts uses it too). */
export const RPM_BURST = z
  .number()
  .int()
  .positive()
  .optional()
  .describe('Request bucket size: requests admitted at once after a quiet spell. Default: 2 seconds of rpm (at least 1).');

/** The fields of a token's settings, shared by `create` and declared tokens. */
const TOKEN_FIELDS = {
  name: z.string().min(1, 'give the token a name (who or what uses it)').max(100).describe('A label for people (lists, logs). Never the token.'),
  rpm: z.number().int().nonnegative().default(0).describe('Requests per minute, fleet-wide (token-bucket rate). 0 = no limit.'),
  rpmBurst: RPM_BURST,
  budget: z
    .object({
      usd: z.number().positive().describe('Dollars the token may spend per period.'),
      period: z.enum(['day', 'month', 'total']).default('month').describe('Budget period: UTC calendar day or month, or the whole life of the token.'),
    })
    .strict()
    .optional()
    .describe('Spend cap. Admission reserves the estimated cost; settle charges the real cost.'),
  models: z
    .array(z.string().min(1))
    .default([])
    .describe('Model (or route) names the token may ask for. Empty: all.'),
  weight: z
    .number()
    .positive()
    .max(1000)
    .default(1)
    .describe("The token's weight in the fair shares between tenants of a class when the pool is the bottleneck (0 to 1000)."),
  allowCritical: z
    .boolean()
    .default(false)
    .describe('May ask for the critical class (x-keypool-priority: critical); refused with a 403 otherwise.'),
};

const burstNeedsRpm = (s: { rpm: number; rpmBurst?: number | undefined }, ctx: z.RefinementCtx) => {
  if (s.rpmBurst !== undefined && s.rpm === 0) ctx.addIssue({ code: 'custom', path: ['rpmBurst'], message: 'rpmBurst needs rpm' });
};

/** A gateway token's settings, as given to `create`. */
export const GatewayTokenSpecSchema = z.object(TOKEN_FIELDS).strict().superRefine(burstNeedsRpm);

/**
 * A token declared in the config by its sha256 (never the token): registered at start and again
 * when Redis comes back without it, like the config's keys. `keypool tokens hash` computes it.
 */
export const DeclaredTokenSchema = z
  .object({
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "expected the 64 hex characters of the token's sha256 (keypool tokens hash), never the token itself")
      .describe('sha256 hex of the token (printf %s "$TOKEN" | keypool tokens hash). The token itself never goes in the config.'),
    ...TOKEN_FIELDS,
  })
  .strict()
  .superRefine(burstNeedsRpm);

export type DeclaredToken = z.output<typeof DeclaredTokenSchema>;
