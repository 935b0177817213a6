import { KeySpecSchema } from '@keypool/core';
import { z } from 'zod';

/** A valid environment variable name (secretEnv). */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A key as written in the file: the secret inline or, better, in an env var named by secretEnv. */
export const FileKeySchema = KeySpecSchema.extend({
  secret: KeySpecSchema.shape.secret.optional(),
  secretEnv: z
    .string()
    .regex(ENV_NAME, 'must be the name of an environment variable (letters, digits and _)')
    .optional()
    .describe('Name of the environment variable holding the provider API key. Set exactly one of secret and secretEnv; secretEnv keeps secrets out of the file.'),
}).strict();
