/**
 * Typed errors. Being rate-limited is a result ({ ok: false, reason, retryAfterMs }), not an
 * exception; these are for faults: bad config, Redis unreachable, a request no key can serve.
 * Every class has a stable `code`, keeps its `cause`, and has a type guard.
 * No message ever contains key material: keys are named by id (fingerprint) and hint only.
 *
 * The guards check a brand and the code, not `instanceof` (cockatiel's habit): with two copies of
 * @keypool/core installed (a server and a library each bringing its own), an error thrown by one
 * copy is not an instance of the other's classes, but it carries the same global-symbol brand.
 */

export type KeyPoolErrorCode =
  | 'CONFIG_INVALID'
  | 'REDIS_UNAVAILABLE'
  | 'UNKNOWN_MODEL'
  | 'REQUEST_TOO_LARGE'
  | 'KEY_NOT_FOUND'
  | 'INVALID_ARGUMENT'
  | 'SCRIPT_FAILED'
  | 'POOL_EXHAUSTED';

/** The brand every keypool error carries, the same in every installed copy of the package. */
const BRAND = Symbol.for('keypool.error');

/** Base class of every keypool error. */
export class KeyPoolError extends Error {
  readonly code: KeyPoolErrorCode;
  constructor(code: KeyPoolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** One problem found in a configuration, with the path that caused it (`keys[2].rpm`). */
export interface ConfigIssue {
  path: string;
  message: string;
}

/** The configuration is invalid. `issues` lists every problem, not only the first. */
export class ConfigError extends KeyPoolError {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[], source = 'config') {
    super(
      'CONFIG_INVALID',
      `invalid ${source} (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n` +
        issues.map((i) => `  - ${i.path || '(root)'}: ${i.message}`).join('\n'),
    );
    this.issues = issues;
  }
}

/** Redis could not be reached (or did not answer in time) and the policy is fail-closed. */
export class RedisUnavailableError extends KeyPoolError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('REDIS_UNAVAILABLE', message, options);
  }
}

/** No key of the pool serves this model. */
export class UnknownModelError extends KeyPoolError {
  readonly model: string;
  constructor(model: string, known: string[]) {
    const list = known.slice(0, 20).join(', ');
    super('UNKNOWN_MODEL', `no key in the pool serves model "${model}"; models served: ${list || '(none)'}`);
    this.model = model;
  }
}

/** The request needs more tokens than any key's token bucket can ever hold. */
export class RequestTooLargeError extends KeyPoolError {
  readonly estimatedTokens: number;
  readonly maxTokens: number;
  constructor(model: string, estimatedTokens: number, maxTokens: number) {
    super(
      'REQUEST_TOO_LARGE',
      `request for "${model}" needs ~${estimatedTokens} tokens but the largest token bucket of the keys ` +
        `serving it holds ${maxTokens}; lower max_tokens or raise tpmBurst of those keys`,
    );
    this.estimatedTokens = estimatedTokens;
    this.maxTokens = maxTokens;
  }
}

/** An operation named a key id the pool does not have. */
export class KeyNotFoundError extends KeyPoolError {
  readonly keyId: string;
  constructor(keyId: string) {
    super('KEY_NOT_FOUND', `no key with id "${keyId}" in the pool`);
    this.keyId = keyId;
  }
}

/** A call was made with arguments that cannot be right (negative tokens, a non-string model...). */
export class InvalidArgumentError extends KeyPoolError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

/** A Lua script failed: a bug or an incompatible Redis, never a normal outcome. */
export class ScriptError extends KeyPoolError {
  constructor(script: string, options: { cause: unknown }) {
    super('SCRIPT_FAILED', `keypool script ${script} failed: ${(options.cause as Error)?.message ?? options.cause}`, options);
  }
}

/**
 * No key could serve within the caller's deadline (clients that must return an error rather than
 * a `{ ok: false }` result throw this): carries the reason and when to try again.
 */
export class PoolExhaustedError extends KeyPoolError {
  /** The model or route asked for. */
  readonly model: string;
  readonly reason: string;
  readonly retryAfterMs: number | null;
  constructor(model: string, reason: string, retryAfterMs: number | null) {
    super('POOL_EXHAUSTED', `no key could serve "${model}" in time (${reason}${retryAfterMs !== null ? `; retry in ${retryAfterMs} ms` : ''})`);
    this.model = model;
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

// on the prototype: not an own property, so it shows in neither inspect nor JSON
Object.defineProperty(KeyPoolError.prototype, BRAND, { value: true });

/** A keypool error from any installed copy of the package: it carries the brand and a string code. */
export const isKeyPoolError = (e: unknown): e is KeyPoolError =>
  typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true && typeof (e as { code?: unknown }).code === 'string';

const guard =
  <T extends KeyPoolError>(code: KeyPoolErrorCode) =>
  (e: unknown): e is T =>
    isKeyPoolError(e) && e.code === code;

export const isConfigError = guard<ConfigError>('CONFIG_INVALID');
export const isRedisUnavailable = guard<RedisUnavailableError>('REDIS_UNAVAILABLE');
export const isUnknownModel = guard<UnknownModelError>('UNKNOWN_MODEL');
export const isRequestTooLarge = guard<RequestTooLargeError>('REQUEST_TOO_LARGE');
export const isKeyNotFound = guard<KeyNotFoundError>('KEY_NOT_FOUND');
export const isPoolExhausted = guard<PoolExhaustedError>('POOL_EXHAUSTED');
export const isInvalidArgument = guard<InvalidArgumentError>('INVALID_ARGUMENT');
export const isScriptError = guard<ScriptError>('SCRIPT_FAILED');
