/**
 * Keys from a HashiCorp Vault KV version 2 secret, read and written with the `node-vault` client.
 *
 *   vault kv put -mount=secret keypool/openai keys=@keys.json          # or: openai-1=sk-... openai-2=sk-...
 *
 *   { type: vault, endpoint: https://vault:8200, mount: secret, path: keypool/openai,
 *     auth: { method: approle, roleId: ..., secretId: ... }, defaults: { models: [gpt-4o-mini] } }
 *
 * The version of a set is the KV version (`metadata.version`); `write` stores a new version with
 * check-and-set when an expected version is given, so a concurrent change is a `conflict`.
 *
 * Auth: a token (`auth.token`, default VAULT_TOKEN), or AppRole (a login at the first load, and
 * again when Vault refuses the token: one new login, then the request once more). A renewable
 * token (AppRole's, or a token whose lookup-self says so) is renewed at 2/3 of its TTL by an
 * unref()'d timer; a failed renewal is logged and, with AppRole, the next load logs in again.
 *
 * Requests: node-vault does not pass an AbortSignal on to axios, so every call gets its own HTTP
 * agent, destroyed when the signal fires (the connection is closed: nothing is left running), and
 * a 15 s axios timeout as a backstop. The token is sent per request (never node-vault's
 * `client.token`, so VAULT_TOKEN in the environment does not leak into an AppRole login).
 *
 * Errors are SecretSourceError whose messages say what to fix and never hold a token, a role or
 * secret ID, or a key secret: axios errors carry the request headers (the token) in `config`, so
 * no error of node-vault or axios is ever kept as a `cause`, and text from Vault is scrubbed.
 */
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { systemClock, type Clock, type KeySpec } from '@keypool/core';
import type NodeVault from 'node-vault';
import type { Logger } from 'pino';
import { z } from 'zod';
import { keyDocumentOf, parseKeyDefaults, parseKeyDocument, type KeyDefaults } from './document.js';
import { KeyDefaultsConfigSchema } from './env.js';
import { isSecretSourceError, SecretSourceError, type SecretSet, type SecretSource, type SourceCallOptions } from './types.js';

/** A path inside Vault: no leading or trailing "/", no empty, "." or ".." segment. */
const vaultPath = (what: string) =>
  z
    .string()
    .min(1)
    .refine((s) => s.replace(/^\/+|\/+$/g, '').split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..'), `must be a Vault path like ${what} (no empty, "." or ".." segments)`);

const TokenAuthSchema = z
  .object({
    method: z.literal('token').describe('Authenticate with a Vault token.'),
    token: z
      .string()
      .min(1)
      .optional()
      .describe('The Vault token. Default: the VAULT_TOKEN environment variable (read when the source is created); prefer it to writing a token in a file.'),
  })
  .strict();

const AppRoleAuthSchema = z
  .object({
    method: z.literal('approle').describe('Log in with AppRole (role_id + secret_id) and renew the token it gives.'),
    roleId: z.string().min(1).describe('The role_id of the AppRole role (vault read auth/approle/role/<name>/role-id).'),
    secretId: z.string().min(1).describe('A secret_id of the role (vault write -f auth/approle/role/<name>/secret-id). A secret: never logged.'),
    mount: vaultPath('approle').default('approle').describe('Path the AppRole auth method is enabled at (auth/<mount>/login).'),
  })
  .strict();

export const VaultSourceConfigSchema = z
  .object({
    type: z.literal('vault').describe('Keys from a HashiCorp Vault KV version 2 secret.'),
    endpoint: z
      .string()
      .min(1)
      .optional()
      .describe('Vault address, e.g. https://vault.example.com:8200. Default: the VAULT_ADDR environment variable (read when the source is created). HTTPS verifies against the system CAs and VAULT_CACERT.'),
    mount: vaultPath('secret').default('secret').describe('Path the KV version 2 secrets engine is mounted at.'),
    path: vaultPath('keypool/openai').describe(
      'Path of the secret inside the mount: keypool/openai for `vault kv get -mount=secret keypool/openai` (the API path is <mount>/data/<path>).',
    ),
    namespace: z
      .string()
      .min(1)
      .optional()
      .describe('Vault Enterprise / HCP namespace (X-Vault-Namespace). Default: the VAULT_NAMESPACE environment variable, else none.'),
    auth: z
      .discriminatedUnion('method', [TokenAuthSchema, AppRoleAuthSchema])
      .default({ method: 'token' })
      .describe('How to authenticate: { method: token, token? } or { method: approle, roleId, secretId, mount? }. Default: a token from VAULT_TOKEN.'),
    version: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('Read this KV version instead of the latest (pinning, e.g. to roll back); a pinned source refuses writes.'),
    defaults: KeyDefaultsConfigSchema,
    renew: z
      .boolean()
      .default(true)
      .describe('Renew a renewable token (AppRole, or a token whose lookup-self says renewable) at about 2/3 of its TTL.'),
  })
  .strict();

/** A vault source's config, as written (defaults not applied) or as parsed. */
export type VaultSourceConfig = z.input<typeof VaultSourceConfigSchema>;

export interface VaultSourceOptions {
  /** Logins, renewals and their failures (never a token or a secret). */
  logger?: Logger;
  /** The time token expiry is judged by (default: the system clock). */
  clock?: Clock;
}

/** Backstop for one HTTP request (the caller's AbortSignal usually ends it sooner). */
const REQUEST_TIMEOUT_MS = 15_000;
/** A token this close to its expiry is treated as expired (AppRole logs in again instead). */
const EXPIRY_MARGIN_MS = 500;
/** Shortest delay between renewals. */
const MIN_RENEW_DELAY_MS = 250;

const TLS_CODES = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ERR_TLS_|ERR_SSL_|HOSTNAME_MISMATCH)/;
/** Vault token formats (hvs./hvb./hvr., and the older s./b./r.), redacted from any text kept. */
const TOKEN_LIKE = /\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{16,}/g;

type OpKind = 'read' | 'write' | 'login' | 'renew' | 'lookup';
interface Op {
  kind: OpKind;
  /** For messages: `reading secret/data/keypool/openai`. */
  what: string;
  expectedVersion?: string;
}

/** What node-vault's request wrapper passes on to axios. */
interface RequestOptions {
  timeout: number;
  httpAgent?: HttpAgent;
  httpsAgent?: HttpsAgent;
  headers: Record<string, string>;
}

/** A HashiCorp Vault KV v2 secret as a source of keys. */
export class VaultSource implements SecretSource {
  readonly kind = 'vault' as const;
  readonly describe: string;
  /** node-vault (and axios under it), loaded at this source's first request: a process without a vault source never loads them. */
  private client: Promise<NodeVault.client> | undefined;
  private readonly namespace: string | undefined;
  private readonly clock: Clock;
  private readonly endpoint: string;
  private readonly https: boolean;
  private readonly ca: Buffer | undefined;
  private readonly rejectUnauthorized: boolean;
  private readonly mount: string;
  private readonly path: string;
  /** `secret/data/keypool/openai`, as policies name it. */
  private readonly apiPath: string;
  /** The same with each segment URL-encoded, for requests. */
  private readonly requestPath: string;
  private readonly version: number | undefined;
  private readonly defaults: KeyDefaults;
  private readonly renew: boolean;
  private readonly auth: { method: 'token'; token: string } | { method: 'approle'; roleId: string; secretId: string; mount: string };
  private readonly log: Logger | undefined;
  /** Every credential this source has held: scrubbed from any text taken from Vault. */
  private readonly sensitive = new Set<string>();

  /** AppRole: the token of the last login. */
  private token: string | undefined;
  private expiresAt: number | undefined;
  private needsLogin = false;
  private loginInflight: Promise<string> | undefined;
  /** Token auth: lookup-self done (or running) to decide whether to renew. */
  private renewChecked = false;
  private renewTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly agents = new Set<HttpAgent | HttpsAgent>();

  constructor(config: Omit<VaultSourceConfig, 'type'> & { type?: 'vault' }, options: VaultSourceOptions = {}) {
    const r = VaultSourceConfigSchema.safeParse({ ...config, type: 'vault' });
    if (!r.success) {
      throw new SecretSourceError(
        'config',
        'vault source',
        r.error.issues.map((i) => `${[...i.path].join('.') || 'config'}: ${i.message.replace(/,? ?received .*$/i, '')}`).join('; '),
      );
    }
    const c = r.data;
    const endpoint = c.endpoint ?? process.env.VAULT_ADDR;
    if (!endpoint) {
      throw new SecretSourceError('config', 'vault source', 'no Vault address: set endpoint in the source config, or VAULT_ADDR (e.g. https://vault.example.com:8200)');
    }
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new SecretSourceError('config', 'vault source', `endpoint${c.endpoint === undefined ? ' (VAULT_ADDR)' : ''} is not a URL: write it like https://vault.example.com:8200`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new SecretSourceError('config', 'vault source', `endpoint must be an http:// or https:// URL, not ${url.protocol}`);
    }
    this.endpoint = endpoint.replace(/\/+$/, '');
    this.https = url.protocol === 'https:';
    const shown = `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
    this.mount = trimSlashes(c.mount);
    this.path = trimSlashes(c.path);
    this.apiPath = `${this.mount}/data/${this.path}`;
    this.requestPath = this.apiPath.split('/').map(encodeURIComponent).join('/');
    this.version = c.version;
    this.renew = c.renew;
    this.clock = options.clock ?? systemClock;
    const namespace = c.namespace ?? (process.env.VAULT_NAMESPACE || undefined);
    this.describe = `vault kv2 ${this.mount}/${this.path} at ${shown}${namespace ? ` (namespace ${namespace})` : ''}${this.version !== undefined ? ` version ${this.version}` : ''}`;
    this.defaults = c.defaults === undefined ? {} : parseKeyDefaults(c.defaults, this.describe);

    if (c.auth.method === 'token') {
      const token = c.auth.token ?? process.env.VAULT_TOKEN;
      if (!token) {
        throw new SecretSourceError('config', this.describe, 'no Vault token: set VAULT_TOKEN (or auth.token), or use auth: { method: approle, roleId, secretId }');
      }
      this.auth = { method: 'token', token };
      this.sensitive.add(token);
    } else {
      this.auth = { method: 'approle', roleId: c.auth.roleId, secretId: c.auth.secretId, mount: trimSlashes(c.auth.mount) };
      this.sensitive.add(c.auth.roleId).add(c.auth.secretId);
    }

    const skip = (process.env.VAULT_SKIP_VERIFY ?? '').trim().toLowerCase();
    this.rejectUnauthorized = !['1', 'true', 'yes', 't'].includes(skip);
    const caFile = process.env.VAULT_CACERT;
    if (this.https && caFile) {
      try {
        this.ca = readFileSync(caFile);
      } catch (e) {
        throw new SecretSourceError('config', this.describe, `cannot read VAULT_CACERT ${caFile} (${(e as NodeJS.ErrnoException).code ?? 'error'}): point it at the PEM file of the CA that signed Vault's certificate`);
      }
    }

    this.namespace = namespace;

    this.log = options.logger?.child({ component: 'keypool-secrets', source: this.describe });
  }

  async load(options: SourceCallOptions = {}): Promise<SecretSet> {
    const { signal } = options;
    const query = this.version !== undefined ? `?version=${this.version}` : '';
    const op: Op = { kind: 'read', what: `reading ${this.apiPath}${this.version !== undefined ? ` version ${this.version}` : ''}` };
    const body = (await this.authed(op, signal, (req, c) => c.read(`${this.requestPath}${query}`, req))) as KvReadBody | undefined;
    const d = body?.data;
    if (!d || typeof d !== 'object' || !d.metadata || typeof d.metadata.version !== 'number') {
      throw new SecretSourceError('config', this.describe, `the answer for ${this.apiPath} has no KV version 2 metadata: is "${this.mount}" a KV version 2 mount (vault secrets enable -path=${this.mount} kv-v2)?`);
    }
    if (d.data === null || d.data === undefined) {
      throw new SecretSourceError('not_found', this.describe, `version ${d.metadata.version} of ${this.apiPath} is deleted or destroyed: write a new version, or pin another`);
    }
    const keys = parseKeyDocument(d.data, this.describe, this.defaults);
    return { version: String(d.metadata.version), keys };
  }

  async write(keys: KeySpec[], options: SourceCallOptions & { expectedVersion?: string } = {}): Promise<string> {
    const { signal, expectedVersion } = options;
    if (this.version !== undefined) {
      throw new SecretSourceError('config', this.describe, `this source is pinned to version ${this.version}: remove "version" from its config to write new versions`);
    }
    let cas: number | undefined;
    if (expectedVersion !== undefined) {
      if (!/^\d+$/.test(expectedVersion)) {
        throw new SecretSourceError('config', this.describe, `expectedVersion must be a Vault KV version number (what load() returned), got ${JSON.stringify(expectedVersion.slice(0, 20))}`);
      }
      cas = Number(expectedVersion);
    }
    const payload = { data: keyDocumentOf(keys), ...(cas !== undefined ? { options: { cas } } : {}) };
    const op: Op = { kind: 'write', what: `writing ${this.apiPath}`, ...(expectedVersion !== undefined ? { expectedVersion } : {}) };
    const body = (await this.authed(op, signal, (req, c) => c.write(this.requestPath, payload, req))) as KvWriteBody | undefined;
    const version = body?.data?.version;
    if (typeof version !== 'number') {
      throw new SecretSourceError('config', this.describe, `the answer to writing ${this.apiPath} has no version: is "${this.mount}" a KV version 2 mount?`);
    }
    this.log?.info({ version, keys: keys.length }, 'wrote a new version of the Vault secret');
    return String(version);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopRenewal();
    for (const a of this.agents) a.destroy();
    this.agents.clear();
  }

  // ---- auth ----

  /** Run `fn` with a token; with AppRole, a 403 on a token not fresh from a login logs in again, once. */
  private async authed<T>(op: Op, signal: AbortSignal | undefined, fn: (req: RequestOptions, client: NodeVault.client) => Promise<T>): Promise<T> {
    const first = await this.ensureToken(signal);
    try {
      return await this.http(op, fn, signal, first.token);
    } catch (e) {
      const retry = this.auth.method === 'approle' && !first.fresh && isSecretSourceError(e) && e.code === 'denied' && !signal?.aborted;
      if (!retry) throw e;
      this.log?.info('Vault refused the AppRole token (expired or revoked): logging in again');
      if (this.token === first.token) this.token = undefined;
      const again = await this.ensureToken(signal);
      return await this.http(op, fn, signal, again.token);
    }
  }

  /** A token to use, and whether it comes from a login made for this call. */
  private async ensureToken(signal: AbortSignal | undefined): Promise<{ token: string; fresh: boolean }> {
    if (signal?.aborted) throw this.abortedError('before the request');
    if (this.auth.method === 'token') {
      this.checkRenewable(this.auth.token);
      return { token: this.auth.token, fresh: false };
    }
    const expired = this.expiresAt !== undefined && this.clock.now() >= this.expiresAt - EXPIRY_MARGIN_MS;
    if (this.token && !this.needsLogin && !expired) return { token: this.token, fresh: false };
    // a login is shared by concurrent calls and is not cut short by one caller's signal: its
    // token is stored when it arrives, so a timed-out load still leaves a usable token behind
    this.loginInflight ??= this.login().finally(() => {
      this.loginInflight = undefined;
    });
    const token = await abortable(this.loginInflight, signal, () => this.abortedError(`logging in at auth/${this.auth.method === 'approle' ? this.auth.mount : ''}/login`));
    return { token, fresh: true };
  }

  private async login(): Promise<string> {
    if (this.auth.method !== 'approle') throw new Error('unreachable');
    const { roleId, secretId, mount } = this.auth;
    const op: Op = { kind: 'login', what: `logging in at auth/${mount}/login` };
    const body = (await this.http(op, (req, c) => c.write(`auth/${mount.split('/').map(encodeURIComponent).join('/')}/login`, { role_id: roleId, secret_id: secretId }, req))) as
      | AuthBody
      | undefined;
    const auth = body?.auth;
    const token = auth?.client_token;
    if (typeof token !== 'string' || token === '') {
      throw new SecretSourceError('unavailable', this.describe, `the AppRole login at auth/${mount}/login answered without a token`);
    }
    this.sensitive.add(token);
    const ttl = Number(auth?.lease_duration) || 0;
    this.stopRenewal();
    this.token = token;
    this.expiresAt = ttl > 0 ? this.clock.now() + ttl * 1000 : undefined;
    this.needsLogin = false;
    this.log?.info({ ttlSeconds: ttl, renewable: auth?.renewable === true, policies: auth?.policies ?? [] }, 'logged in to Vault with AppRole');
    if (this.renew && auth?.renewable === true && ttl > 0) this.scheduleRenewal(token, ttl);
    return token;
  }

  /** Token auth: ask lookup-self (in the background, once) whether the token can be renewed. */
  private checkRenewable(token: string): void {
    if (!this.renew || this.closed || this.renewChecked) return;
    this.renewChecked = true;
    void (async () => {
      try {
        const body = (await this.http({ kind: 'lookup', what: 'looking up the token (auth/token/lookup-self)' }, (req, c) => c.read('auth/token/lookup-self', req), undefined, token)) as
          | LookupBody
          | undefined;
        if (this.closed) return;
        const ttl = Number(body?.data?.ttl) || 0;
        const renewable = body?.data?.renewable === true;
        if (renewable && ttl > 0) {
          this.expiresAt = this.clock.now() + ttl * 1000;
          this.log?.debug({ ttlSeconds: ttl }, 'the Vault token is renewable: renewing it at 2/3 of its TTL');
          this.scheduleRenewal(token, ttl);
        } else {
          this.log?.debug({ ttlSeconds: ttl, renewable }, 'the Vault token is not renewable (or never expires): not renewing it');
        }
      } catch (e) {
        const err = isSecretSourceError(e) ? e : undefined;
        // a refused token shows in the next load's error; anything else: ask again next load
        if (err?.code !== 'denied') this.renewChecked = false;
        this.log?.debug({ code: err?.code ?? 'unavailable', err: err?.message ?? 'lookup-self failed' }, 'could not look up the Vault token to renew it');
      }
    })();
  }

  private currentToken(): string | undefined {
    return this.auth.method === 'token' ? this.auth.token : this.token;
  }

  private scheduleRenewal(token: string, ttlSeconds: number): void {
    this.stopRenewal();
    if (this.closed) return;
    const delay = Math.max(MIN_RENEW_DELAY_MS, Math.floor((ttlSeconds * 1000 * 2) / 3));
    const timer = setTimeout(() => void this.renewNow(token), delay);
    timer.unref();
    this.renewTimer = timer;
  }

  private stopRenewal(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
  }

  private async renewNow(token: string): Promise<void> {
    this.renewTimer = undefined;
    if (this.closed || this.currentToken() !== token) return;
    try {
      const body = (await this.http({ kind: 'renew', what: 'renewing the token (auth/token/renew-self)' }, (req, c) => c.write('auth/token/renew-self', {}, req), undefined, token)) as
        | AuthBody
        | undefined;
      if (this.closed || this.currentToken() !== token) return;
      const ttl = Number(body?.auth?.lease_duration) || 0;
      this.expiresAt = ttl > 0 ? this.clock.now() + ttl * 1000 : undefined;
      if (ttl > 0 && body?.auth?.renewable !== false) {
        this.log?.debug({ ttlSeconds: ttl }, 'renewed the Vault token');
        this.scheduleRenewal(token, ttl);
      } else {
        this.log?.info({ ttlSeconds: ttl }, 'the Vault token cannot be renewed any more (max TTL reached)');
        if (this.auth.method === 'approle') this.needsLogin = true;
      }
    } catch (e) {
      if (this.closed || this.currentToken() !== token) return;
      const err = isSecretSourceError(e) ? e : undefined;
      const approle = this.auth.method === 'approle';
      this.log?.warn(
        { code: err?.code ?? 'unavailable', err: err?.message ?? 'renew-self failed' },
        approle ? 'Vault token renewal failed: logging in again at the next load' : 'Vault token renewal failed: trying again after the next load',
      );
      if (approle) this.needsLogin = true;
      else this.renewChecked = false;
    }
  }

  // ---- HTTP ----

  private vault(): Promise<NodeVault.client> {
    return (this.client ??= import('node-vault').then(({ default: NodeVault }) => {
      const client = NodeVault({
        apiVersion: 'v1',
        endpoint: this.endpoint,
        ...(this.namespace ? { namespace: this.namespace } : {}),
        // node-vault's debug logging prints request bodies (key secrets, secret_id): never
        debug: () => undefined,
        noCustomHTTPVerbs: true,
      });
      // node-vault falls back to VAULT_TOKEN and VAULT_PREFIX: the token goes per request instead
      (client as { token: string | undefined }).token = undefined;
      (client as unknown as { pathPrefix: string }).pathPrefix = '';
      (client as unknown as { namespace: string | undefined }).namespace = this.namespace;
      return client;
    }));
  }

  /**
   * One request through node-vault, on an HTTP agent of its own that the signal destroys (node-vault
   * does not forward an AbortSignal to axios). Every failure comes out as a SecretSourceError.
   */
  private async http<T>(op: Op, fn: (req: RequestOptions, client: NodeVault.client) => Promise<T>, signal?: AbortSignal, token?: string): Promise<T> {
    if (signal?.aborted) throw this.abortedError(op.what);
    const client = await this.vault();
    const agent = this.https
      ? new HttpsAgent({ keepAlive: true, rejectUnauthorized: this.rejectUnauthorized, ...(this.ca ? { ca: this.ca } : {}) })
      : new HttpAgent({ keepAlive: true });
    this.agents.add(agent);
    const kill = () => agent.destroy();
    signal?.addEventListener('abort', kill, { once: true });
    try {
      const req: RequestOptions = {
        timeout: REQUEST_TIMEOUT_MS,
        ...(this.https ? { httpsAgent: agent as HttpsAgent } : { httpAgent: agent as HttpAgent }),
        headers: token ? { 'X-Vault-Token': token } : {},
      };
      return await abortable(fn(req, client), signal, () => this.abortedError(op.what));
    } catch (e) {
      throw this.toSourceError(e, op, signal);
    } finally {
      signal?.removeEventListener('abort', kill);
      this.agents.delete(agent);
      agent.destroy();
    }
  }

  private abortedError(what: string): SecretSourceError {
    return new SecretSourceError('unavailable', this.describe, `gave up ${what}: no answer in time (aborted)`);
  }

  /** Any failure of node-vault / axios as a SecretSourceError, without keeping the original (it holds the token). */
  private toSourceError(e: unknown, op: Op, signal: AbortSignal | undefined): SecretSourceError {
    if (isSecretSourceError(e)) return e;
    if (signal?.aborted) return this.abortedError(op.what);
    const status = responseStatus(e);
    if (status === undefined) {
      const code = errorCode(e);
      if (code && TLS_CODES.test(code)) {
        return new SecretSourceError(
          'config',
          this.describe,
          `TLS error ${op.what} (${code}): set VAULT_CACERT to the CA that signed Vault's certificate (or NODE_EXTRA_CA_CERTS), and check the endpoint's host name`,
        );
      }
      const reason = code === 'ECONNABORTED' || code === 'ETIMEDOUT' ? 'timed out' : code === 'ECONNREFUSED' ? 'connection refused' : code === 'ECONNRESET' ? 'connection reset' : (code ?? 'network error');
      return new SecretSourceError('unavailable', this.describe, `could not reach Vault ${op.what} (${reason}): check that Vault is up and that endpoint (or VAULT_ADDR) is right`);
    }
    const said = this.vaultMessage(e);
    const detail = said ? ` (Vault said: ${said})` : '';
    const tokenHint = this.auth.method === 'token' ? 'the token (valid, not expired or revoked) and its policy' : "the AppRole's token policies";
    switch (true) {
      case op.kind === 'login' && (status === 400 || status === 401 || status === 403):
        return new SecretSourceError(
          'denied',
          this.describe,
          status === 403
            ? `AppRole login refused at auth/${this.auth.method === 'approle' ? this.auth.mount : ''}/login (permission denied): check that AppRole is enabled there (auth.mount)`
            : `AppRole login refused${detail}: check auth.roleId and auth.secretId (a secret_id may have expired or run out of uses)`,
        );
      case status === 401 || status === 403:
        if (op.kind === 'read') return new SecretSourceError('denied', this.describe, `permission denied ${op.what}: check ${tokenHint} (it needs read on ${this.apiPath})`);
        if (op.kind === 'write') return new SecretSourceError('denied', this.describe, `permission denied ${op.what}: check ${tokenHint} (it needs create and update on ${this.apiPath})`);
        return new SecretSourceError('denied', this.describe, `permission denied ${op.what}: the token expired or was revoked`);
      case status === 400 && /check-and-set parameter did not match/i.test(said):
        return new SecretSourceError('conflict', this.describe, `${this.apiPath} changed since version ${op.expectedVersion ?? '?'} (check-and-set): load it again and reapply the change`);
      case status === 400 && /check-and-set parameter required/i.test(said):
        return new SecretSourceError('config', this.describe, `${this.mount} requires check-and-set on writes: give expectedVersion (the version load() returned)`);
      case status === 404 && op.kind === 'read':
        return new SecretSourceError('not_found', this.describe, `no secret at ${this.apiPath}${this.version !== undefined ? ` version ${this.version}` : ''}: ${this.notFoundHint()}`);
      case status === 404 && op.kind === 'write':
        return new SecretSourceError('not_found', this.describe, `cannot write ${this.apiPath}${detail}: check that a KV version 2 engine is mounted at ${this.mount}/`);
      case status === 404:
        return new SecretSourceError('config', this.describe, `Vault has no ${op.kind === 'login' ? 'AppRole login' : 'endpoint'} for ${op.what}${detail}`);
      case status === 405:
        return new SecretSourceError('config', this.describe, `Vault does not support ${op.what}${detail}: is ${this.mount} a KV version 2 mount?`);
      case status === 429:
        return new SecretSourceError('throttled', this.describe, `Vault is rate limiting requests (429) ${op.what}${detail}`);
      case status === 503 && /sealed/i.test(said):
        return new SecretSourceError('unavailable', this.describe, `Vault is sealed (503) ${op.what}: it must be unsealed`);
      case status >= 500 || status === 412 || status === 408:
        return new SecretSourceError('unavailable', this.describe, `Vault answered ${status} ${op.what}${detail}`);
      default:
        return new SecretSourceError('config', this.describe, `Vault refused ${op.what} with ${status}${detail}`);
    }
  }

  private notFoundHint(): string {
    const hint = 'check mount and path (path is inside the mount: keypool/openai, not secret/data/keypool/openai)';
    const prefix = `${this.mount}/`;
    if (this.path.startsWith(prefix)) return `${hint}; did you mean path "${this.path.slice(prefix.length).replace(/^data\//, '')}"?`;
    return this.version !== undefined ? `${hint}, and that version ${this.version} exists and is not deleted` : hint;
  }

  /** Vault's first error text, with every credential and anything shaped like a token removed. */
  private vaultMessage(e: unknown): string {
    const body = (e as { response?: { body?: unknown } }).response?.body as { errors?: unknown } | undefined;
    const first = Array.isArray(body?.errors) ? body.errors.find((x): x is string => typeof x === 'string' && x.trim() !== '') : undefined;
    if (!first) return '';
    let text = first.replace(/\s+/g, ' ').trim();
    for (const s of this.sensitive) if (s.length >= 4) text = text.split(s).join('[redacted]');
    text = text.replace(TOKEN_LIKE, '[redacted]');
    return text.length > 200 ? `${text.slice(0, 200)}...` : text;
  }
}

interface KvReadBody {
  data?: { data?: unknown; metadata?: { version?: unknown } } | null;
}
interface KvWriteBody {
  data?: { version?: unknown } | null;
}
interface AuthBody {
  auth?: { client_token?: unknown; lease_duration?: unknown; renewable?: unknown; policies?: unknown } | null;
}
interface LookupBody {
  data?: { ttl?: unknown; renewable?: unknown } | null;
}

function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, '');
}

/** The HTTP status of node-vault's ApiResponseError (axios errors never get here with a response: node-vault accepts every status). */
function responseStatus(e: unknown): number | undefined {
  if (!e || typeof e !== 'object' || (e as { isAxiosError?: unknown }).isAxiosError) return undefined;
  const s = (e as { response?: { statusCode?: unknown } }).response?.statusCode;
  return typeof s === 'number' ? s : undefined;
}

/** A network error's code (ECONNREFUSED...), from the error or its cause. */
function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === 'string' && code) return code;
  const cause = (e as { cause?: { code?: unknown } })?.cause?.code;
  return typeof cause === 'string' && cause ? cause : undefined;
}

/** `p`, or a rejection as soon as `signal` aborts (`p` goes on; its outcome is then ignored). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, error: () => Error): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(error());
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
