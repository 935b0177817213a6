import type { KeySpec } from '@keypool/core';

/** The kinds of secret backend keypool reads keys from. */
export type SourceKind = 'env' | 'file' | 'aws' | 'vault';

/**
 * One version of the set of keys a backend holds: every key with its secret and its settings
 * (validated, defaults applied). Held in process memory only; never logged, never sent to Redis.
 */
export interface SecretSet {
  /**
   * The backend's own version of the set: the Vault KV version, the AWS VersionId of AWSCURRENT,
   * a digest of the file or of the variables. Two loads with the same version hold the same keys.
   * Never derived from a secret in a way that reveals it (a digest of the whole set is fine).
   */
  version: string;
  keys: KeySpec[];
}

/** Options every load and write accepts. */
export interface SourceCallOptions {
  /** Aborts the call (the loader's timeout uses it). */
  signal?: AbortSignal;
}

/**
 * Where a pool's keys come from. `load` reads the current set; `write` (where the backend allows)
 * stores a new version of the whole set, which is how `keypool secrets rotate` and the admin
 * tooling change keys. Implementations validate what they read with `parseKeyDocument` and throw
 * `SecretSourceError` (never an error that quotes a secret).
 */
export interface SecretSource {
  readonly kind: SourceKind;
  /** Where, for people: `vault kv2 secret/keypool/openai at http://vault:8200`. Never a secret or a token. */
  readonly describe: string;
  /** Read the current set. */
  load(options?: SourceCallOptions): Promise<SecretSet>;
  /**
   * Store `keys` as the new current version and return its version. `expectedVersion`, when given,
   * makes the write conditional (Vault check-and-set, a file's digest): a concurrent change fails
   * with SecretSourceError code `conflict` rather than being overwritten. Absent on read-only
   * sources (env).
   */
  write?(keys: KeySpec[], options?: SourceCallOptions & { expectedVersion?: string }): Promise<string>;
  /** Stop timers (token renewal) and close connections. */
  close?(): Promise<void>;
}

/** Why a source failed: decides whether the loader retries. */
export type SecretSourceErrorCode =
  /** The backend did not answer in time, refused the connection, or answered 5xx: retried. */
  | 'unavailable'
  /** The backend asked us to slow down (HTTP 429, AWS ThrottlingException): retried with backoff. */
  | 'throttled'
  /** Credentials refused (Vault 403, AWS AccessDenied, wrong passphrase): not retried. */
  | 'denied'
  /** The secret or file does not exist: not retried. */
  | 'not_found'
  /** The content is not a valid key document, or a file failed its integrity check: not retried. */
  | 'invalid'
  /** A conditional write lost to a concurrent change: not retried. */
  | 'conflict'
  /** The source's own settings are wrong (missing address, bad option): not retried. */
  | 'config';

/** A secret backend failed. The message says what to fix and never contains a secret or a token. */
export class SecretSourceError extends Error {
  override readonly name = 'SecretSourceError';
  constructor(
    readonly code: SecretSourceErrorCode,
    readonly source: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${source}: ${message}`, options);
  }

  /** Worth trying again (the backend may answer next time). */
  get retryable(): boolean {
    return this.code === 'unavailable' || this.code === 'throttled';
  }
}

export function isSecretSourceError(e: unknown): e is SecretSourceError {
  return e instanceof Error && e.name === 'SecretSourceError' && typeof (e as SecretSourceError).code === 'string';
}
