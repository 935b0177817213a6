import { z } from 'zod';

/** pino's level names, `silent` included. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** What an invalid log level reads (file or KEYPOOL_LOG_LEVEL). */
export const LOG_LEVEL_MESSAGE = `expected one of ${LOG_LEVELS.join(', ')}`;

export const LogLevelSchema = z.enum(LOG_LEVELS, { error: LOG_LEVEL_MESSAGE }).default('info').describe('pino log level. Env KEYPOOL_LOG_LEVEL overrides it.');
