/**
 * HTTP client of a running gateway: GET /status (public) and the admin API (bearer admin token).
 * Every failure becomes a CliError whose message says what to do; no message ever carries the
 * admin token.
 */
import type { GatewayTokenInfo, KeyStatus, PoolStatus, ScheduledJobStatus } from '@keypool/core';
import { CliError } from './errors.js';

/** What GET /status answers: the pool's status plus the gateway's own. */
export type GatewayStatus = PoolStatus & {
  routes?: Record<string, { models: string[] }>;
  gateway?: { pid: number; startedAt: string; inFlight: number; version: string };
  /** The scheduler's jobs (null: not readable now; [] or absent: no worker has run). */
  scheduler?: ScheduledJobStatus[] | null;
  /** This gateway's secret sources, and what the fleet holds. */
  secrets?: {
    version?: string;
    keys: number;
    sources: { source: string; kind: string; keys?: number; lastError?: { code: string; message: string } }[];
    fleet: { published: string | null; processes: { id: string; version: string }[] } | null;
  };
};

/** What a key action answers (POST /admin/keys/:id/<action>, DELETE /admin/keys/:id). */
export interface KeyActionResult {
  id: string;
  state: string;
  breaker?: string;
  inFlight?: number;
}

export interface GatewayClientOptions {
  /** Base URL of the gateway, e.g. http://127.0.0.1:8080 (a path prefix is kept). */
  url: string;
  /** Needed by the admin calls only. */
  adminToken?: string | undefined;
  /** Sent with GET /status when the gateway sets server.statusToken (the admin token is used when this is absent). */
  statusToken?: string | undefined;
  /** Sent as x-keypool-actor with admin calls. */
  actor?: string;
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 15_000;
/** Codes under which node's fetch reports that nothing answered at that address. */
const NO_ANSWER = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT']);

export class GatewayClient {
  readonly url: string;
  private readonly adminToken: string | undefined;
  private readonly statusToken: string | undefined;
  private readonly actor: string | undefined;
  private readonly timeoutMs: number;

  constructor(opts: GatewayClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.adminToken = opts.adminToken;
    this.statusToken = opts.statusToken;
    this.actor = opts.actor;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  status(): Promise<GatewayStatus> {
    const token = this.statusToken ?? this.adminToken;
    return this.call('GET', '/status', undefined, false, token ? { authorization: `Bearer ${token}` } : {}) as Promise<GatewayStatus>;
  }

  async listKeys(): Promise<KeyStatus[]> {
    return ((await this.admin('GET', '/keys')) as { keys: KeyStatus[] }).keys;
  }

  keyAction(id: string, action: string): Promise<KeyActionResult> {
    return this.admin('POST', `/keys/${encodeURIComponent(id)}/${action}`) as Promise<KeyActionResult>;
  }

  removeKey(id: string): Promise<KeyActionResult> {
    return this.admin('DELETE', `/keys/${encodeURIComponent(id)}`) as Promise<KeyActionResult>;
  }

  updateKey(id: string, patch: Record<string, unknown>): Promise<{ id: string; key?: KeyStatus }> {
    return this.admin('PATCH', `/keys/${encodeURIComponent(id)}`, patch) as Promise<{ id: string; key?: KeyStatus }>;
  }

  async listTokens(): Promise<GatewayTokenInfo[]> {
    return ((await this.admin('GET', '/tokens')) as { tokens: GatewayTokenInfo[] }).tokens;
  }

  createToken(spec: Record<string, unknown>): Promise<GatewayTokenInfo & { token: string }> {
    return this.admin('POST', '/tokens', spec) as Promise<GatewayTokenInfo & { token: string }>;
  }

  revokeToken(id: string): Promise<{ id: string; revoked: boolean }> {
    return this.admin('DELETE', `/tokens/${encodeURIComponent(id)}`) as Promise<{ id: string; revoked: boolean }>;
  }

  private admin(method: string, path: string, body?: unknown): Promise<unknown> {
    return this.call(method, `/admin${path}`, body, true);
  }

  private async call(method: string, path: string, body?: unknown, admin = false, extra: Record<string, string> = {}): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json', ...extra };
    if (admin) {
      if (this.adminToken) headers.authorization = `Bearer ${this.adminToken}`;
      if (this.actor) headers['x-keypool-actor'] = this.actor;
    }
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(this.url + path, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        // a redirect would carry the admin token to wherever it points
        redirect: 'manual',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw this.unreachable(e);
    }
    const text = await res.text().catch(() => '');
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (res.ok && json !== undefined) return json;
    throw this.failure(res, json, admin);
  }

  private unreachable(e: unknown): CliError {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    if (err.name === 'TimeoutError' || err.name === 'AbortError') {
      return new CliError('GATEWAY_UNREACHABLE', `the gateway at ${this.url} did not answer within ${this.timeoutMs / 1000} s`, { cause: e });
    }
    const code = err.cause?.code;
    const why = code === 'ECONNREFUSED' ? '' : code && NO_ANSWER.has(code) ? ` (${code})` : ` (${err.cause?.message ?? err.message})`;
    return new CliError('GATEWAY_UNREACHABLE', `cannot reach the gateway at ${this.url}${why}: is \`keypool serve\` running? (set --url or KEYPOOL_URL)`, { cause: e });
  }

  private failure(res: Response, json: unknown, admin: boolean): CliError {
    const error = (json as { error?: { message?: unknown; code?: unknown } } | undefined)?.error;
    const message = typeof error?.message === 'string' ? error.message : undefined;
    const code = typeof error?.code === 'string' ? error.code : undefined;
    const status = res.status;
    if (admin && status === 403 && code === 'admin_disabled') {
      return new CliError(
        'ADMIN_REFUSED',
        `the admin API of the gateway at ${this.url} is disabled: start the gateway with server.adminToken in its config file ` +
          'or KEYPOOL_ADMIN_TOKEN set (24 characters or more: openssl rand -hex 24), then pass the same token here',
        { status },
      );
    }
    if (admin && (status === 401 || status === 403)) {
      return new CliError(
        'ADMIN_REFUSED',
        `the gateway at ${this.url} refused the admin token (${status}): ` +
          "set KEYPOOL_ADMIN_TOKEN (or pass --admin-token) to the gateway's server.adminToken",
        { status },
      );
    }
    if (status === 401 && code === 'invalid_status_token') {
      return new CliError('STATUS_REFUSED', `the gateway at ${this.url} needs its status token for /status: set KEYPOOL_STATUS_TOKEN (or pass --status-token) to its server.statusToken, or KEYPOOL_ADMIN_TOKEN to its admin token`, { status });
    }
    if (message) return new CliError('API_ERROR', message, { status });
    if (status >= 300 && status < 400) {
      return new CliError('API_ERROR', `the gateway at ${this.url} redirected to ${res.headers.get('location') ?? '?'}: set --url to the gateway itself`, { status });
    }
    const what = res.ok ? 'an answer that is not JSON' : `${status} ${res.statusText}`.trim();
    return new CliError('API_ERROR', `the server at ${this.url} answered ${what}: is it a keypool gateway?`, { status });
  }
}
