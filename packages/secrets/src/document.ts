import { createHash } from 'node:crypto';
import { formatPath, KeySpecSchema, type KeySpec, type KeySpecInput } from '@keypool/core';
import { z } from 'zod';
import { SecretSourceError } from './types.js';

/**
 * The document every stored source holds (the encrypted file, the AWS secret string, the Vault KV
 * data), in one of two shapes:
 *
 *   { "keys": [ { "secret": "sk-...", "name": "openai-1", "models": ["gpt-4o-mini"], "rpm": 500 }, ... ] }
 *
 * or a flat map of names to secrets, the shape most teams already keep, each key taking the
 * source's `defaults` (models, limits...):
 *
 *   { "openai-1": "sk-...", "openai-2": "sk-..." }
 *
 * In Vault, `keys` may also be a JSON string (what `vault kv put path keys=@keys.json` stores).
 * Settings a key does not give come from `defaults`; a key's `name` defaults to its map name.
 */
export type KeyDocument = { keys: KeySpecInput[] } | Record<string, string>;

/** Settings applied to every key of a source that does not give its own. */
export type KeyDefaults = Partial<Omit<KeySpecInput, 'secret'>>;

const Settings = KeySpecSchema.omit({ secret: true }).partial();

/** Validate `defaults` from a config file (paths prefixed with `prefix`). */
export function parseKeyDefaults(input: unknown, source: string): KeyDefaults {
  const r = Settings.strict().safeParse(input ?? {});
  if (!r.success) throw invalid(source, r.error.issues, 'defaults');
  return input as KeyDefaults;
}

/**
 * Read a key document (already JSON-parsed) into validated key specs. Errors name the path
 * (`keys[2].models`) and never quote a value, so a secret cannot leak through a message.
 */
export function parseKeyDocument(doc: unknown, source: string, defaults: KeyDefaults = {}): KeySpec[] {
  let entries: { at: (string | number)[]; value: unknown }[];
  if (doc && typeof doc === 'object' && !Array.isArray(doc) && 'keys' in doc) {
    let keys = (doc as { keys: unknown }).keys;
    if (typeof keys === 'string') {
      try {
        keys = JSON.parse(keys);
      } catch {
        throw new SecretSourceError('invalid', source, '"keys" is a string that is not JSON; store a JSON array of keys');
      }
    }
    if (!Array.isArray(keys)) throw new SecretSourceError('invalid', source, '"keys" must be an array of keys ({ "secret": ..., "models": [...] })');
    entries = keys.map((value, i) => ({ at: ['keys', i], value }));
  } else if (doc && typeof doc === 'object' && !Array.isArray(doc)) {
    entries = Object.entries(doc).map(([name, value]) => ({
      at: [name],
      value: typeof value === 'string' ? { name, secret: value } : value,
    }));
  } else {
    throw new SecretSourceError('invalid', source, 'expected a JSON object: { "keys": [...] } or { "<name>": "<secret>", ... }');
  }
  const specs: KeySpec[] = [];
  const issues: string[] = [];
  const seen = new Map<string, string>();
  for (const { at, value } of entries) {
    if (!value || typeof value !== 'object' || Array.isArray(value)) {
      issues.push(`${formatPath(at)}: expected an object with "secret" or a secret string`);
      continue;
    }
    const r = KeySpecSchema.safeParse({ ...defaults, ...(value as object) });
    if (!r.success) {
      for (const i of r.error.issues) issues.push(`${formatPath([...at, ...i.path])}: ${safeMessage(i)}`);
      continue;
    }
    const first = seen.get(r.data.secret);
    if (first !== undefined) {
      issues.push(`${formatPath(at)}: same secret as ${first}; list each key once`);
      continue;
    }
    seen.set(r.data.secret, formatPath(at));
    specs.push(r.data);
  }
  if (issues.length > 0) throw new SecretSourceError('invalid', source, `invalid key document: ${issues.join('; ')}`);
  return specs;
}

/** Serialise keys as a `{ "keys": [...] }` document (what write() stores). */
export function keyDocumentOf(keys: readonly KeySpec[]): { keys: KeySpec[] } {
  return { keys: keys.map((k) => ({ ...k })) };
}

/** A version for backends without one (env, file): a digest of the whole set, 16 hex chars. */
export function digestVersion(keys: readonly KeySpec[]): string {
  return createHash('sha256').update(JSON.stringify(keyDocumentOf(keys))).digest('hex').slice(0, 16);
}

function safeMessage(i: z.core.$ZodIssue): string {
  // zod messages name types and limits, not values; drop any "received" text all the same
  return i.message.replace(/,? ?received .*$/i, '');
}

function invalid(source: string, issues: z.core.$ZodIssue[], prefix: string): SecretSourceError {
  return new SecretSourceError('invalid', source, issues.map((i) => `${formatPath([prefix, ...i.path])}: ${safeMessage(i)}`).join('; '));
}
