import type { Logger } from 'pino';
import { z } from 'zod';
import { AwsSecretsManagerSource, AwsSourceConfigSchema } from './aws.js';
import { EnvSource, EnvSourceConfigSchema } from './env.js';
import { FileSource, FileSourceConfigSchema } from './file.js';
import type { SecretSource } from './types.js';
import { VaultSource, VaultSourceConfigSchema } from './vault.js';

/** One secret source in the config file, by `type`. */
export const SourceConfigSchema = z.discriminatedUnion('type', [EnvSourceConfigSchema, FileSourceConfigSchema, AwsSourceConfigSchema, VaultSourceConfigSchema]);
export type SourceConfig = z.output<typeof SourceConfigSchema>;

/** The `secrets` section of keypool.yaml: where keys come from, besides `keys` in the file. */
export const SecretsSectionSchema = z
  .object({
    sources: z
      .array(SourceConfigSchema)
      .min(1, 'list at least one source (type: env, file, aws or vault)')
      .describe('Where provider keys come from. Their keys join the pool beside `keys`; the first source wins when two give the same secret.'),
    timeoutMs: z.number().int().min(100).default(5000).describe('One attempt to read a source gives up after this long.'),
    attempts: z.number().int().min(1).max(20).default(4).describe('Attempts per refresh for a source that is unavailable or throttling (the first included); then the last good set stays in use.'),
    backoffMs: z.number().int().min(1).default(200).describe('Backoff before the second attempt; doubles each time, with jitter.'),
    allowEmpty: z
      .boolean()
      .default(false)
      .describe('Accept sources that give no key at all. Off: a refresh that finds no key (a wiped secret) retires nothing and fails, so a mistake cannot empty the pool.'),
    heartbeatMs: z
      .number()
      .int()
      .min(100)
      .default(5000)
      .describe('How often each process says which secret set it holds and checks for a newer one (a change message lost while disconnected is caught then).'),
  })
  .strict();
export type SecretsSection = z.output<typeof SecretsSectionSchema>;

/** The sources of a parsed `secrets` section. */
export function createSources(section: SecretsSection, opts: { logger?: Logger } = {}): SecretSource[] {
  const log = opts.logger ? { logger: opts.logger } : {};
  return section.sources.map((s): SecretSource => {
    switch (s.type) {
      case 'env':
        return new EnvSource(s);
      case 'file':
        return new FileSource({ ...s, ...log });
      case 'aws':
        return new AwsSecretsManagerSource(s, log);
      case 'vault':
        return new VaultSource(s, log);
    }
  });
}
