import { z } from 'zod';

/** One route: a model alias that the gateway resolves to any of several real models. */
export const RouteSchema = z
  .object({
    models: z
      .array(z.string().min(1))
      .min(1, 'list at least one model')
      .describe('Models a request for this route may be served with, in order of preference; each must be served by some key.'),
  })
  .strict();

export const RoutesSchema = z
  .record(z.string().min(1), RouteSchema)
  .default({})
  .describe('Route names clients may send as `model`, each standing for a list of real models. A route name must not also be a model name.');

export type Route = z.output<typeof RouteSchema>;
