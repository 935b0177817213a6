/**
 * Public types of the fake Vault server (see ./index.ts for the overview).
 */

/** An AppRole role created at start (or by {@link FakeVault.addAppRole}). */
export interface FakeAppRoleOptions {
  /** Role name (`auth/<mount>/role/<name>`). */
  name: string;
  /** Auth mount path. Default `approle` (enabled if it is not). */
  mount?: string;
  /** Policies of the tokens a login issues (`default` is added, as Vault does). */
  policies?: string[];
  /** TTL of an issued token. Default: the server's `defaultTokenTtlSeconds`. */
  tokenTtlSeconds?: number;
  /** Longest life of an issued token, renewals included. Default: the server's `maxTokenTtlSeconds`. */
  tokenMaxTtlSeconds?: number;
  /** Fixed role_id. Default: a random UUID. */
  roleId?: string;
  /** Fixed secret_id (a custom secret ID). Default: a random UUID. */
  secretId?: string;
}

/** A token created by {@link FakeVault.createToken} (as `POST /v1/auth/token/create` with the root token). */
export interface FakeTokenOptions {
  /** Policies. Default `["default"]`. */
  policies?: string[];
  /** TTL in seconds. Default: the server's `defaultTokenTtlSeconds`. */
  ttlSeconds?: number;
  /** Longest life, renewals included. Default: the server's `maxTokenTtlSeconds`. */
  maxTtlSeconds?: number;
  /** Default true. */
  renewable?: boolean;
  /** Fixed token value. Default: a random `hvs.` token. */
  id?: string;
}

/**
 * An injected fault. Faults are checked in the order they were set, before authentication (as
 * Vault's seal and rate-limit quotas are); `latency` faults add up and the request goes on, the
 * first other fault that matches answers it. A fault with a `count` is gone after that many
 * requests.
 */
export type FakeVaultFault =
  /** The port is closed: every connection is refused, open ones are destroyed. Until cleared. */
  | { kind: 'outage' }
  /** Requests are read, then their connection is destroyed without an answer (ECONNRESET). */
  | { kind: 'reset'; route?: string; count?: number }
  /** Every request answers 503 `{"errors":["Vault is sealed"]}` (sys/health 503 with `sealed: true`). */
  | { kind: 'sealed'; route?: string; count?: number }
  /** 429 `rate limit quota exceeded`, with `Retry-After`. */
  | { kind: 'rate-limit'; route?: string; count?: number; retryAfterSeconds?: number }
  /** Any status with Vault's error body: `{"errors":[message]}` (default message: the status text). */
  | { kind: 'error'; status: number; message?: string; route?: string; count?: number }
  /** Added latency before the answer (or before the next fault). */
  | { kind: 'latency'; ms: number; route?: string; count?: number };

/** Options of {@link startFakeVault}. */
export interface FakeVaultOptions {
  /** Default 0: a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The root token (policy `root`, no TTL), like a dev server's `-dev-root-token-id`. Default `root`. */
  rootToken?: string;
  /** KV version 2 mounts. Default `["secret"]`, as on a dev server. */
  kvMounts?: string[];
  /** Versions kept per secret (the mount's `max_versions`). Default 10, as Vault. */
  maxVersions?: number;
  /** TTL of tokens that name none (Vault's default lease TTL). Default 2764800 (768 h). */
  defaultTokenTtlSeconds?: number;
  /** Longest token life (Vault's max lease TTL). Default 2764800 (768 h). */
  maxTokenTtlSeconds?: number;
  /** ACL policies by name, in HCL (`path "secret/data/app/*" { capabilities = ["read"] }`). */
  policies?: Record<string, string>;
  /** AppRole roles (their auth mounts are enabled). */
  appRoles?: FakeAppRoleOptions[];
  /** Secrets present from the start: `path` within `mount` (default the first KV mount). */
  secrets?: Array<{ path: string; data: Record<string, unknown>; mount?: string }>;
  /** Latency of every answer, ms. Default 0. */
  latencyMs?: number;
  /** Faults active from the start. */
  faults?: FakeVaultFault[];
  /** `version` in sys/health. Default `1.18.0`. */
  version?: string;
}

/** What the fake has seen since it started (or since {@link FakeVault.resetCounters}). */
export interface FakeVaultCounters {
  /**
   * Requests by route: `kv.read`, `kv.write`, `kv.delete`, `kv.metadata`, `approle.login`,
   * `approle.role`, `token.lookup-self`, `token.renew-self`, `token.revoke-self`, `token.create`,
   * `token`, `sys.health`, `sys.seal-status`, `sys.auth`, `sys.mounts`, `sys.policy`, `other`.
   * Requests refused by an outage never arrive and are not counted.
   */
  requests: Record<string, number>;
  /** Answers by HTTP status. */
  status: Record<string, number>;
  /** Successful AppRole logins. */
  logins: number;
  /** Refused AppRole logins. */
  loginFailures: number;
  /** Successful renew-self calls. */
  renewals: number;
  /** 403 answers (missing, unknown, expired or revoked token, or a policy that does not allow it). */
  denied: number;
  /** Connections destroyed by a `reset` fault. */
  resets: number;
  /** Requests whose connection closed before their answer was sent (a client timeout or abort). */
  aborted: number;
  /** Tokens issued (logins and token/create). */
  tokensIssued: number;
}

/** One stored version of a KV v2 secret. */
export interface FakeSecretVersion {
  version: number;
  /** The data written (a copy), null once deleted or destroyed. */
  data: Record<string, unknown> | null;
  createdTime: string;
  /** `""` unless deleted. */
  deletionTime: string;
  destroyed: boolean;
}

/** A running fake Vault. */
export interface FakeVault {
  /** What VAULT_ADDR would be: `http://127.0.0.1:<port>` (the API is under `/v1`). */
  readonly url: string;
  readonly port: number;
  readonly rootToken: string;
  /** Close the server and every connection. Idempotent. */
  stop(): Promise<void>;
  counters(): FakeVaultCounters;
  resetCounters(): void;
  /** Add a fault; resolves once it is in force (an outage: once the port is closed). */
  setFault(fault: FakeVaultFault): Promise<void>;
  /** Remove every fault; resolves once the port is open again after an outage. */
  clearFaults(): Promise<void>;
  /** The active faults, with what is left of their count. */
  faults(): FakeVaultFault[];
  /** Write a new version of a secret (as a root `POST /v1/<mount>/data/<path>`); returns its version. */
  seed(path: string, data: Record<string, unknown>, options?: { mount?: string }): number;
  /** Every stored version of a secret, oldest first (empty when there is none). */
  versions(path: string, options?: { mount?: string }): FakeSecretVersion[];
  /** A new token; returns its value. */
  createToken(options?: FakeTokenOptions): string;
  /**
   * Revoke tokens now (as if they had expired): those issued by logins to `roleName`, or every
   * token but the root token. Returns how many.
   */
  revokeTokens(filter?: { roleName?: string }): number;
  /** Create (or replace) an AppRole role, enabling its mount; returns its credentials. */
  addAppRole(options: FakeAppRoleOptions): { roleId: string; secretId: string };
  /** The role_id and first secret_id of a role (one given in `appRoles` without fixed ids, say). */
  appRole(name: string, options?: { mount?: string }): { roleId: string; secretId: string };
  /** Create or replace an ACL policy (HCL). */
  setPolicy(name: string, hcl: string): void;
}
