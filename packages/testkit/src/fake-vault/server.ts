import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { capabilitiesOn, formatDuration, parseDurationSeconds, parsePolicy, type Capability, type PolicyRule } from './acl.js';
import type {
  FakeAppRoleOptions,
  FakeSecretVersion,
  FakeTokenOptions,
  FakeVault,
  FakeVaultCounters,
  FakeVaultFault,
  FakeVaultOptions,
} from './types.js';

interface TokenState {
  id: string;
  accessor: string;
  policies: string[];
  issuedAt: number;
  /** The TTL asked for at creation (renew-self without an increment asks for it again). */
  ttlSec: number;
  expiresAt: number | null;
  maxExpiresAt: number | null;
  renewable: boolean;
  path: string;
  meta: Record<string, string> | null;
  displayName: string;
  orphan: boolean;
  roleName?: string;
}

interface RoleState {
  name: string;
  roleId: string;
  secretIds: Set<string>;
  policies: string[];
  tokenTtlSec: number;
  tokenMaxTtlSec: number;
  bindSecretId: boolean;
  noDefaultPolicy: boolean;
}

interface VersionState {
  data: Record<string, unknown> | null;
  created: string;
  deletionTime: string;
  destroyed: boolean;
}

interface SecretState {
  created: string;
  updated: string;
  current: number;
  oldest: number;
  versions: Map<number, VersionState>;
}

interface KvMount {
  accessor: string;
  maxVersions: number;
  secrets: Map<string, SecretState>;
}

interface AuthMount {
  accessor: string;
  roles: Map<string, RoleState>;
}

type ActiveFault = FakeVaultFault & { remaining: number };

/** An error answer: `{"errors": [...]}`, or a whole body (a deleted version's 404). */
class Answer {
  constructor(
    readonly status: number,
    readonly errors: string[],
    readonly body?: unknown,
  ) {}
}

const DAY32 = 768 * 3600;
const SELF_PATHS = new Set(['auth/token/lookup-self', 'auth/token/renew-self', 'auth/token/revoke-self']);

/** Vault's RFC 3339 times have nanoseconds. */
function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/Z$/, '000000Z');
}

function denied(): Answer {
  return new Answer(403, ['permission denied']);
}

function noRoute(path: string): Answer {
  return new Answer(404, [`no handler for route "${path}". route entry not found.`]);
}

function unsupported(): Answer {
  return new Answer(405, ['1 error occurred:\n\t* unsupported operation\n\n']);
}

function asStringList(input: unknown, field: string): string[] {
  if (input === undefined || input === null) return [];
  if (typeof input === 'string') return input.split(',').map((s) => s.trim()).filter(Boolean);
  if (Array.isArray(input) && input.every((s) => typeof s === 'string')) return input.map((s) => s.trim()).filter(Boolean);
  throw new Answer(400, [`error converting input for field "${field}": expected a list of strings`]);
}

function duration(input: unknown, field: string): number {
  try {
    return parseDurationSeconds(input, field);
  } catch (e) {
    throw new Answer(400, [(e as Error).message]);
  }
}

function routeOf(method: string, path: string, kvMount: string | undefined, authMount: string | undefined): string {
  if (path === 'sys/health') return 'sys.health';
  if (path === 'sys/seal-status') return 'sys.seal-status';
  if (path === 'sys/auth' || path.startsWith('sys/auth/')) return 'sys.auth';
  if (path === 'sys/mounts' || path.startsWith('sys/mounts/')) return 'sys.mounts';
  if (path.startsWith('sys/policies/acl') || path.startsWith('sys/policy')) return 'sys.policy';
  if (path.startsWith('auth/token/create')) return 'token.create';
  if (SELF_PATHS.has(path)) return `token.${path.slice('auth/token/'.length)}`;
  if (path.startsWith('auth/token/')) return 'token';
  if (authMount !== undefined) {
    const rest = path.slice(`auth/${authMount}/`.length);
    if (rest === 'login') return 'approle.login';
    return 'approle.role';
  }
  if (kvMount !== undefined) {
    const rest = path.slice(kvMount.length + 1);
    if (rest.startsWith('data/') || rest === 'data') return method === 'GET' ? 'kv.read' : method === 'DELETE' ? 'kv.delete' : 'kv.write';
    if (rest.startsWith('metadata')) return 'kv.metadata';
    return 'kv.other';
  }
  return 'other';
}

/**
 * Start a fake Vault (see ./index.ts). Resolves once it listens.
 */
export async function startFakeVault(options: FakeVaultOptions = {}): Promise<FakeVault> {
  const host = options.host ?? '127.0.0.1';
  const rootToken = options.rootToken ?? 'root';
  const defaultTtl = options.defaultTokenTtlSeconds ?? DAY32;
  const maxTtl = options.maxTokenTtlSeconds ?? DAY32;
  const maxVersionsDefault = options.maxVersions ?? 10;
  const vaultVersion = options.version ?? '1.18.0';
  const clusterId = randomUUID();

  const tokens = new Map<string, TokenState>();
  const policies = new Map<string, { text: string; rules: PolicyRule[] }>();
  const kvMounts = new Map<string, KvMount>();
  const authMounts = new Map<string, AuthMount>();
  let faults: ActiveFault[] = [];
  let counters = freshCounters();
  let outage = false;
  const timers = new Set<NodeJS.Timeout>();

  function freshCounters(): FakeVaultCounters {
    return { requests: {}, status: {}, logins: 0, loginFailures: 0, renewals: 0, denied: 0, resets: 0, aborted: 0, tokensIssued: 0 };
  }

  // ---- state helpers ----

  function cleanMount(path: string): string {
    return path.replace(/^\/+|\/+$/g, '');
  }

  function addKvMount(path: string): void {
    const p = cleanMount(path);
    if (!kvMounts.has(p)) kvMounts.set(p, { accessor: `kv_${randomBytes(4).toString('hex')}`, maxVersions: maxVersionsDefault, secrets: new Map() });
  }

  function addAuthMount(path: string): AuthMount {
    const p = cleanMount(path);
    let m = authMounts.get(p);
    if (!m) {
      m = { accessor: `auth_approle_${randomBytes(4).toString('hex')}`, roles: new Map() };
      authMounts.set(p, m);
    }
    return m;
  }

  function kvMountOf(path: string): string | undefined {
    let best: string | undefined;
    for (const m of kvMounts.keys()) if ((path === m || path.startsWith(`${m}/`)) && (!best || m.length > best.length)) best = m;
    return best;
  }

  function authMountOf(path: string): string | undefined {
    for (const m of authMounts.keys()) if (path.startsWith(`auth/${m}/`)) return m;
    return undefined;
  }

  function setPolicy(name: string, text: string): void {
    if (name === 'root') throw new Answer(400, ['cannot update "root" policy']);
    let rules: PolicyRule[];
    try {
      rules = parsePolicy(text);
    } catch (e) {
      throw new Answer(400, [(e as Error).message]);
    }
    policies.set(name, { text, rules });
  }

  function issueToken(o: {
    policies: string[];
    ttlSec: number;
    maxTtlSec: number;
    renewable: boolean;
    path: string;
    meta: Record<string, string> | null;
    displayName: string;
    orphan: boolean;
    roleName?: string;
    id?: string;
  }): TokenState {
    const now = Date.now();
    const max = Math.min(o.maxTtlSec > 0 ? o.maxTtlSec : maxTtl, maxTtl);
    const ttl = Math.min(o.ttlSec > 0 ? o.ttlSec : defaultTtl, max);
    const t: TokenState = {
      id: o.id ?? `hvs.${randomBytes(18).toString('base64url')}`,
      accessor: randomBytes(12).toString('base64url'),
      policies: [...new Set(o.policies)].sort(),
      issuedAt: now,
      ttlSec: ttl,
      expiresAt: now + ttl * 1000,
      maxExpiresAt: now + max * 1000,
      renewable: o.renewable,
      path: o.path,
      meta: o.meta,
      displayName: o.displayName,
      orphan: o.orphan,
      ...(o.roleName !== undefined ? { roleName: o.roleName } : {}),
    };
    tokens.set(t.id, t);
    counters.tokensIssued++;
    return t;
  }

  function liveToken(id: string | undefined): TokenState | undefined {
    if (!id) return undefined;
    const t = tokens.get(id);
    if (!t) return undefined;
    if (t.expiresAt !== null && Date.now() >= t.expiresAt) {
      tokens.delete(id); // Vault revokes a token when its TTL runs out
      return undefined;
    }
    return t;
  }

  function ttlLeft(t: TokenState): number {
    return t.expiresAt === null ? 0 : Math.max(0, Math.round((t.expiresAt - Date.now()) / 1000));
  }

  function authBlock(t: TokenState): Record<string, unknown> {
    return {
      client_token: t.id,
      accessor: t.accessor,
      policies: t.policies,
      token_policies: t.policies,
      metadata: t.meta,
      lease_duration: ttlLeft(t),
      renewable: t.renewable,
      entity_id: '',
      token_type: 'service',
      orphan: t.orphan,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  function envelope(parts: { data?: unknown; auth?: unknown; warnings?: string[] | null; mountType?: string }): Record<string, unknown> {
    return {
      request_id: randomUUID(),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data: parts.data ?? null,
      wrap_info: null,
      warnings: parts.warnings ?? null,
      auth: parts.auth ?? null,
      mount_type: parts.mountType ?? '',
    };
  }

  function addRole(mountPath: string, o: Omit<FakeAppRoleOptions, 'mount'>): RoleState {
    const mount = addAuthMount(mountPath);
    const role: RoleState = {
      name: o.name,
      roleId: o.roleId ?? randomUUID(),
      secretIds: new Set(),
      policies: o.policies ?? [],
      tokenTtlSec: o.tokenTtlSeconds ?? 0,
      tokenMaxTtlSec: o.tokenMaxTtlSeconds ?? 0,
      bindSecretId: true,
      noDefaultPolicy: false,
    };
    mount.roles.set(o.name, role);
    return role;
  }

  function writeSecret(mountPath: string, path: string, data: Record<string, unknown>, cas?: number): { version: number; created: string } {
    const mount = kvMounts.get(mountPath)!;
    let s = mount.secrets.get(path);
    const current = s?.current ?? 0;
    if (cas !== undefined && cas !== current) throw new Answer(400, ['check-and-set parameter did not match the current version']);
    const created = rfc3339(Date.now());
    if (!s) {
      s = { created, updated: created, current: 0, oldest: 0, versions: new Map() };
      mount.secrets.set(path, s);
    }
    const version = s.current + 1;
    s.versions.set(version, { data: structuredClone(data), created, deletionTime: '', destroyed: false });
    s.current = version;
    s.updated = created;
    while (s.versions.size > mount.maxVersions) {
      const oldest = Math.min(...s.versions.keys());
      s.versions.delete(oldest);
      s.oldest = Math.min(...s.versions.keys());
    }
    return { version, created };
  }

  function versionMetadata(v: VersionState, version: number): Record<string, unknown> {
    return { created_time: v.created, custom_metadata: null, deletion_time: v.deletionTime, destroyed: v.destroyed, version };
  }

  // ---- configure from options ----

  for (const m of options.kvMounts ?? ['secret']) addKvMount(m);
  tokens.set(rootToken, {
    id: rootToken,
    accessor: randomBytes(12).toString('base64url'),
    policies: ['root'],
    issuedAt: Date.now(),
    ttlSec: 0,
    expiresAt: null,
    maxExpiresAt: null,
    renewable: false,
    path: 'auth/token/root',
    meta: null,
    displayName: 'root',
    orphan: true,
  });
  for (const [name, text] of Object.entries(options.policies ?? {})) setPolicy(name, text);
  for (const r of options.appRoles ?? []) {
    const role = addRole(r.mount ?? 'approle', r);
    role.secretIds.add(r.secretId ?? randomUUID());
  }
  const firstMount = () => [...kvMounts.keys()][0]!;
  for (const s of options.secrets ?? []) writeSecret(cleanMount(s.mount ?? firstMount()), cleanMount(s.path), s.data);
  for (const f of options.faults ?? []) {
    if (f.kind === 'outage') outage = true;
    faults.push({ ...f, remaining: 'count' in f && f.count !== undefined ? f.count : Infinity });
  }

  // ---- handlers ----

  function health(sealed: boolean): { status: number; body: unknown } {
    return {
      status: sealed ? 503 : 200,
      body: {
        initialized: true,
        sealed,
        standby: false,
        performance_standby: false,
        replication_performance_mode: 'disabled',
        replication_dr_mode: 'disabled',
        server_time_utc: Math.floor(Date.now() / 1000),
        version: vaultVersion,
        enterprise: false,
        cluster_name: 'vault-cluster-fake',
        cluster_id: clusterId,
        echo_duration_ms: 0,
        clock_skew_ms: 0,
      },
    };
  }

  function approleLogin(mountPath: string, body: Record<string, unknown>): { status: number; body: unknown } {
    const mount = authMounts.get(mountPath)!;
    const fail = (msg: string) => {
      counters.loginFailures++;
      return new Answer(400, [msg]);
    };
    const roleId = typeof body.role_id === 'string' ? body.role_id.trim() : '';
    if (!roleId) throw fail('missing role_id');
    const role = [...mount.roles.values()].find((r) => r.roleId === roleId);
    if (!role) throw fail('invalid role or secret ID');
    if (role.bindSecretId) {
      const secretId = typeof body.secret_id === 'string' ? body.secret_id.trim() : '';
      if (!secretId) throw fail('missing secret_id');
      if (!role.secretIds.has(secretId)) throw fail('invalid role or secret ID');
    }
    const t = issueToken({
      policies: [...(role.noDefaultPolicy ? [] : ['default']), ...role.policies],
      ttlSec: role.tokenTtlSec,
      maxTtlSec: role.tokenMaxTtlSec,
      renewable: true,
      path: `auth/${mountPath}/login`,
      meta: { role_name: role.name },
      displayName: mountPath,
      orphan: true,
      roleName: role.name,
    });
    counters.logins++;
    return { status: 200, body: envelope({ auth: authBlock(t), mountType: 'approle' }) };
  }

  function approleRole(mountPath: string, rest: string, method: string, body: Record<string, unknown>): { status: number; body?: unknown } {
    const mount = authMounts.get(mountPath)!;
    const m = /^role(?:\/([^/]+)(?:\/(role-id|secret-id|custom-secret-id))?)?$/.exec(rest);
    if (!m) throw noRoute(`auth/${mountPath}/${rest}`);
    const [, name, sub] = m;
    if (!name) {
      if (method !== 'LIST' && method !== 'GET') throw unsupported();
      if (mount.roles.size === 0) throw new Answer(404, []);
      return { status: 200, body: envelope({ data: { keys: [...mount.roles.keys()].sort() }, mountType: 'approle' }) };
    }
    const role = mount.roles.get(name);
    if (!sub) {
      if (method === 'GET') {
        if (!role) throw new Answer(404, []);
        return {
          status: 200,
          body: envelope({
            data: {
              bind_secret_id: role.bindSecretId,
              token_policies: role.policies,
              policies: role.policies,
              token_ttl: role.tokenTtlSec,
              token_max_ttl: role.tokenMaxTtlSec,
              token_no_default_policy: role.noDefaultPolicy,
              token_type: 'default',
              secret_id_num_uses: 0,
              secret_id_ttl: 0,
            },
            mountType: 'approle',
          }),
        };
      }
      if (method === 'DELETE') {
        mount.roles.delete(name);
        return { status: 204 };
      }
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      const r = role ?? addRole(mountPath, { name });
      if ('token_policies' in body || 'policies' in body) r.policies = asStringList(body.token_policies ?? body.policies, 'token_policies');
      if ('token_ttl' in body) r.tokenTtlSec = duration(body.token_ttl, 'token_ttl');
      if ('token_max_ttl' in body) r.tokenMaxTtlSec = duration(body.token_max_ttl, 'token_max_ttl');
      if ('bind_secret_id' in body) r.bindSecretId = body.bind_secret_id === true || body.bind_secret_id === 'true';
      if ('token_no_default_policy' in body) r.noDefaultPolicy = body.token_no_default_policy === true || body.token_no_default_policy === 'true';
      return { status: 204 };
    }
    if (!role) throw new Answer(400, [`role "${name}" does not exist`]);
    if (sub === 'role-id') {
      if (method === 'GET') return { status: 200, body: envelope({ data: { role_id: role.roleId }, mountType: 'approle' }) };
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      if (typeof body.role_id !== 'string' || !body.role_id) throw new Answer(400, ['missing role_id']);
      role.roleId = body.role_id;
      return { status: 204 };
    }
    if (method !== 'POST' && method !== 'PUT') throw unsupported();
    let secretId: string;
    if (sub === 'custom-secret-id') {
      if (typeof body.secret_id !== 'string' || !body.secret_id) throw new Answer(400, ['missing secret_id']);
      secretId = body.secret_id;
    } else secretId = randomUUID();
    role.secretIds.add(secretId);
    return {
      status: 200,
      body: envelope({ data: { secret_id: secretId, secret_id_accessor: randomUUID(), secret_id_ttl: 0, secret_id_num_uses: 0 }, mountType: 'approle' }),
    };
  }

  function tokenRoutes(path: string, method: string, body: Record<string, unknown>, caller: TokenState): { status: number; body?: unknown } {
    if (path === 'auth/token/lookup-self') {
      if (method !== 'GET') throw unsupported();
      const t = caller;
      return {
        status: 200,
        body: envelope({
          data: {
            accessor: t.accessor,
            creation_time: Math.floor(t.issuedAt / 1000),
            creation_ttl: t.expiresAt === null ? 0 : t.ttlSec,
            display_name: t.displayName,
            entity_id: '',
            expire_time: t.expiresAt === null ? null : rfc3339(t.expiresAt),
            explicit_max_ttl: 0,
            id: t.id,
            issue_time: rfc3339(t.issuedAt),
            meta: t.meta,
            num_uses: 0,
            orphan: t.orphan,
            path: t.path,
            policies: t.policies,
            renewable: t.renewable,
            ttl: ttlLeft(t),
            type: 'service',
          },
          mountType: 'token',
        }),
      };
    }
    if (path === 'auth/token/renew-self') {
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      const t = caller;
      if (!t.renewable || t.expiresAt === null) throw new Answer(400, ['lease is not renewable']);
      const increment = duration(body.increment, 'increment');
      const want = increment > 0 ? increment : t.ttlSec;
      const now = Date.now();
      const cap = t.maxExpiresAt ?? Infinity;
      let warnings: string[] | null = null;
      if (now + want * 1000 > cap) {
        const left = Math.max(0, Math.floor((cap - now) / 1000));
        warnings = [`TTL of "${formatDuration(want)}" exceeded the effective max_ttl of "${formatDuration(left)}"; TTL value is capped accordingly`];
      }
      t.expiresAt = Math.min(now + want * 1000, cap);
      counters.renewals++;
      return { status: 200, body: envelope({ auth: authBlock(t), warnings, mountType: 'token' }) };
    }
    if (path === 'auth/token/revoke-self') {
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      tokens.delete(caller.id);
      return { status: 204 };
    }
    if (path === 'auth/token/create' || path === 'auth/token/create-orphan') {
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      const root = caller.policies.includes('root');
      let pols = 'policies' in body ? asStringList(body.policies, 'policies') : caller.policies.filter((p) => p !== 'default');
      if (!root && pols.some((p) => !caller.policies.includes(p))) throw new Answer(400, ['child policies must be subset of parent']);
      if (!(body.no_default_policy === true) && !pols.includes('root')) pols = ['default', ...pols];
      if (body.id !== undefined && !root) throw new Answer(400, ['root or sudo privileges required to specify token id']);
      if (typeof body.id === 'string' && tokens.has(body.id)) throw new Answer(400, ['cannot create a token with a duplicate ID']);
      const t = issueToken({
        policies: pols,
        ttlSec: duration(body.ttl, 'ttl'),
        maxTtlSec: duration(body.explicit_max_ttl, 'explicit_max_ttl'),
        renewable: body.renewable === undefined ? true : body.renewable === true || body.renewable === 'true',
        path: 'auth/token/create',
        meta: (body.meta as Record<string, string> | undefined) ?? null,
        displayName: typeof body.display_name === 'string' ? `token-${body.display_name}` : 'token',
        orphan: path.endsWith('orphan'),
        ...(typeof body.id === 'string' ? { id: body.id } : {}),
      });
      return { status: 200, body: envelope({ auth: authBlock(t), mountType: 'token' }) };
    }
    throw noRoute(path);
  }

  function kvRoutes(mountPath: string, rest: string, method: string, query: URLSearchParams, body: Record<string, unknown>): { status: number; body?: unknown } {
    const mount = kvMounts.get(mountPath)!;
    const slash = rest.indexOf('/');
    const kind = slash < 0 ? rest : rest.slice(0, slash);
    const key = slash < 0 ? '' : rest.slice(slash + 1);
    if (kind === 'data') {
      if (!key) throw noRoute(`${mountPath}/${rest}`);
      const s = mount.secrets.get(key);
      if (method === 'GET') {
        if (!s) throw new Answer(404, []);
        const raw = query.get('version');
        let version = s.current;
        if (raw !== null && raw !== '' && raw !== '0') {
          if (!/^\d+$/.test(raw)) throw new Answer(400, [`error converting input ${raw} for field "version": cannot parse '' as int: strconv.ParseInt: parsing "${raw}": invalid syntax`]);
          version = Number(raw);
        }
        const v = s.versions.get(version);
        if (!v) throw new Answer(404, []);
        const data = { data: v.data === null ? null : structuredClone(v.data), metadata: versionMetadata(v, version) };
        if (v.data === null) throw new Answer(404, [], envelope({ data, mountType: 'kv' }));
        return { status: 200, body: envelope({ data, mountType: 'kv' }) };
      }
      if (method === 'POST' || method === 'PUT') {
        if (!body.data || typeof body.data !== 'object' || Array.isArray(body.data)) throw new Answer(400, ['no data provided']);
        const opts = body.options as { cas?: unknown } | undefined;
        let cas: number | undefined;
        if (opts && opts.cas !== undefined && opts.cas !== null) {
          const n = typeof opts.cas === 'string' && /^\d+$/.test(opts.cas) ? Number(opts.cas) : opts.cas;
          if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) throw new Answer(400, ['error parsing check-and-set parameter']);
          cas = n;
        }
        const { version, created } = writeSecret(mountPath, key, body.data as Record<string, unknown>, cas);
        return { status: 200, body: envelope({ data: { created_time: created, custom_metadata: null, deletion_time: '', destroyed: false, version }, mountType: 'kv' }) };
      }
      if (method === 'DELETE') {
        const v = s?.versions.get(s.current);
        if (v && !v.deletionTime) {
          v.deletionTime = rfc3339(Date.now());
          v.data = null;
        }
        return { status: 204 };
      }
      throw unsupported();
    }
    if (kind === 'metadata') {
      const list = method === 'LIST' || (method === 'GET' && (query.get('list') === 'true' || query.get('list') === '1'));
      if (list) {
        const prefix = key ? `${key}/` : '';
        const keys = new Set<string>();
        for (const k of mount.secrets.keys()) {
          if (!k.startsWith(prefix)) continue;
          const rest2 = k.slice(prefix.length);
          const i = rest2.indexOf('/');
          keys.add(i < 0 ? rest2 : rest2.slice(0, i + 1));
        }
        if (keys.size === 0) throw new Answer(404, []);
        return { status: 200, body: envelope({ data: { keys: [...keys].sort() }, mountType: 'kv' }) };
      }
      if (!key) throw noRoute(`${mountPath}/${rest}`);
      const s = mount.secrets.get(key);
      if (method === 'GET') {
        if (!s) throw new Answer(404, []);
        const versions: Record<string, unknown> = {};
        for (const [n, v] of s.versions) versions[String(n)] = { created_time: v.created, deletion_time: v.deletionTime, destroyed: v.destroyed };
        return {
          status: 200,
          body: envelope({
            data: {
              cas_required: false,
              created_time: s.created,
              current_version: s.current,
              custom_metadata: null,
              delete_version_after: '0s',
              max_versions: 0,
              oldest_version: s.oldest,
              updated_time: s.updated,
              versions,
            },
            mountType: 'kv',
          }),
        };
      }
      if (method === 'DELETE') {
        mount.secrets.delete(key);
        return { status: 204 };
      }
      throw unsupported();
    }
    if (kind === 'config' && method === 'GET') {
      return { status: 200, body: envelope({ data: { cas_required: false, delete_version_after: '0s', max_versions: mount.maxVersions }, mountType: 'kv' }) };
    }
    // what Vault answers for a KV v1 style path on a v2 mount
    throw new Answer(404, [], { errors: [], warnings: [`Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.`] });
  }

  function sysRoutes(path: string, method: string, body: Record<string, unknown>): { status: number; body?: unknown } {
    if (path === 'sys/auth') {
      if (method !== 'GET') throw unsupported();
      const data: Record<string, unknown> = { 'token/': { type: 'token', description: 'token based credentials', accessor: 'auth_token_fake', local: false, seal_wrap: false, options: null } };
      for (const [p, m] of authMounts) data[`${p}/`] = { type: 'approle', description: '', accessor: m.accessor, local: false, seal_wrap: false, options: null };
      return { status: 200, body: { ...data, ...envelope({ data, mountType: 'system' }) } };
    }
    if (path.startsWith('sys/auth/')) {
      const p = cleanMount(path.slice('sys/auth/'.length));
      if (method === 'DELETE') {
        authMounts.delete(p);
        return { status: 204 };
      }
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      if (body.type !== 'approle') throw new Answer(400, [`the fake Vault supports auth method "approle" only, not ${JSON.stringify(body.type)}`]);
      if (authMounts.has(p) || p === 'token') throw new Answer(400, [`path is already in use at ${p}/`]);
      addAuthMount(p);
      return { status: 204 };
    }
    if (path === 'sys/mounts') {
      if (method !== 'GET') throw unsupported();
      const data: Record<string, unknown> = {};
      for (const [p, m] of kvMounts) data[`${p}/`] = { type: 'kv', description: '', accessor: m.accessor, options: { version: '2' }, local: false, seal_wrap: false };
      return { status: 200, body: { ...data, ...envelope({ data, mountType: 'system' }) } };
    }
    if (path.startsWith('sys/mounts/')) {
      const p = cleanMount(path.slice('sys/mounts/'.length));
      if (method === 'DELETE') {
        kvMounts.delete(p);
        return { status: 204 };
      }
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      const version = (body.options as { version?: unknown } | undefined)?.version;
      if (!(body.type === 'kv-v2' || (body.type === 'kv' && String(version) === '2'))) throw new Answer(400, ['the fake Vault mounts KV version 2 only ({"type":"kv","options":{"version":"2"}})']);
      if (kvMounts.has(p) || kvMountOf(p) || [...kvMounts.keys()].some((m) => m.startsWith(`${p}/`))) throw new Answer(400, [`path is already in use at ${p}/`]);
      addKvMount(p);
      return { status: 204 };
    }
    const pol = /^sys\/(?:policies\/acl|policy)\/([^/]+)$/.exec(path);
    if (pol) {
      const name = pol[1]!;
      if (method === 'GET') {
        const p = policies.get(name);
        if (!p) throw new Answer(404, []);
        return { status: 200, body: envelope({ data: { name, policy: p.text, rules: p.text }, mountType: 'system' }) };
      }
      if (method === 'DELETE') {
        policies.delete(name);
        return { status: 204 };
      }
      if (method !== 'POST' && method !== 'PUT') throw unsupported();
      const text = body.policy ?? body.rules;
      if (typeof text !== 'string') throw new Answer(400, ["'policy' parameter not supplied or empty"]);
      setPolicy(name, text);
      return { status: 204 };
    }
    throw noRoute(path);
  }

  /** Capability a request needs on its path (KV data writes: create when the secret is new, else update). */
  function capabilityFor(method: string, path: string, query: URLSearchParams): Capability {
    if (method === 'GET') return query.get('list') === 'true' || query.get('list') === '1' ? 'list' : 'read';
    if (method === 'LIST') return 'list';
    if (method === 'DELETE') return 'delete';
    if (method === 'PATCH') return 'patch';
    const mount = kvMountOf(path);
    if (mount !== undefined) {
      const rest = path.slice(mount.length + 1);
      if (rest.startsWith('data/')) return kvMounts.get(mount)!.secrets.has(rest.slice(5)) ? 'update' : 'create';
    }
    return 'update';
  }

  function allowed(t: TokenState, method: string, path: string, query: URLSearchParams): boolean {
    if (t.policies.includes('root')) return true;
    if (SELF_PATHS.has(path)) return t.policies.includes('default');
    const caps = capabilitiesOn(
      t.policies.map((p) => policies.get(p)?.rules ?? []),
      path,
    );
    if (caps.has('deny')) return false;
    const need = capabilityFor(method, path, query);
    if (!caps.has(need)) return false;
    if ((path.startsWith('sys/auth/') || path.startsWith('sys/mounts/')) && method !== 'GET') return caps.has('sudo');
    return true;
  }

  function useFault(f: ActiveFault): void {
    f.remaining--;
    if (f.remaining <= 0) faults = faults.filter((x) => x !== f);
  }

  function matches(f: ActiveFault, route: string): boolean {
    if (f.kind === 'outage') return false;
    const r = f.route;
    return r === undefined || r === route || route.startsWith(`${r}.`);
  }

  function readBody(req: IncomingMessage): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', reject);
      req.on('aborted', () => resolve(Buffer.concat(chunks)));
    });
  }

  function sleep(ms: number, res: ServerResponse): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timers.add(timer);
      res.once('close', done);
      function done() {
        clearTimeout(timer);
        timers.delete(timer);
        res.off('close', done);
        resolve();
      }
    });
  }

  function send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    if (res.destroyed || res.headersSent) return;
    counters.status[String(status)] = (counters.status[String(status)] ?? 0) + 1;
    if (status === 403) counters.denied++;
    if (status === 204 || body === undefined) {
      res.writeHead(status, { 'cache-control': 'no-store', ...headers });
      res.end();
      return;
    }
    const data = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(data)), ...headers });
    res.end(data);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = (req.method ?? 'GET').toUpperCase();
    res.once('close', () => {
      if (!res.writableFinished) counters.aborted++;
    });
    const raw = await readBody(req);
    if (!url.pathname.startsWith('/v1/')) {
      counters.requests.other = (counters.requests.other ?? 0) + 1;
      return send(res, 404, { errors: [] });
    }
    let path: string;
    try {
      path = url.pathname
        .slice(4)
        .split('/')
        .map((s) => decodeURIComponent(s))
        .join('/')
        .replace(/\/+$/, '');
    } catch {
      return send(res, 400, { errors: ['invalid URL escape'] });
    }
    const kvMount = kvMountOf(path);
    const authMount = authMountOf(path);
    const route = routeOf(method, path, kvMount, authMount);
    counters.requests[route] = (counters.requests[route] ?? 0) + 1;

    let delay = options.latencyMs ?? 0;
    let terminal: ActiveFault | undefined;
    for (const f of [...faults]) {
      if (!matches(f, route)) continue;
      if (f.kind === 'latency') {
        delay += f.ms;
        useFault(f);
      } else if (!terminal) {
        terminal = f;
        useFault(f);
      }
    }
    if (delay > 0) await sleep(delay, res);
    if (res.destroyed) return;
    if (terminal) {
      switch (terminal.kind) {
        case 'reset':
          counters.resets++;
          req.socket.destroy();
          return;
        case 'sealed':
          if (route === 'sys.health') {
            const h = health(true);
            return send(res, h.status, h.body);
          }
          return send(res, 503, { errors: ['Vault is sealed'] });
        case 'rate-limit':
          return send(res, 429, { errors: [`request path "${path}": rate limit quota exceeded`] }, { 'retry-after': String(terminal.retryAfterSeconds ?? 1) });
        case 'error':
          return send(res, terminal.status, { errors: [terminal.message ?? STATUS_CODES[terminal.status] ?? 'error'] });
        default:
          break;
      }
    }

    let body: Record<string, unknown> = {};
    if (raw.length > 0) {
      try {
        const parsed: unknown = JSON.parse(raw.toString('utf8'));
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
        else return send(res, 400, { errors: ['failed to parse JSON input: the input is not a JSON object'] });
      } catch (e) {
        return send(res, 400, { errors: [`failed to parse JSON input: ${(e as Error).message}`] });
      }
    }

    try {
      if (path === 'sys/health') {
        const h = health(false);
        return send(res, h.status, h.body);
      }
      if (path === 'sys/seal-status') {
        return send(res, 200, { type: 'shamir', initialized: true, sealed: false, t: 1, n: 1, progress: 0, nonce: '', version: vaultVersion, migration: false, cluster_name: 'vault-cluster-fake', cluster_id: clusterId, recovery_seal: false, storage_type: 'inmem' });
      }
      if (authMount !== undefined && path === `auth/${authMount}/login`) {
        if (method !== 'POST' && method !== 'PUT') throw unsupported();
        const r = approleLogin(authMount, body);
        return send(res, r.status, r.body);
      }
      const headerToken = req.headers['x-vault-token'];
      const caller = liveToken(Array.isArray(headerToken) ? headerToken[0] : headerToken);
      if (!caller) throw denied();
      if (!allowed(caller, method, path, url.searchParams)) throw denied();
      let r: { status: number; body?: unknown };
      if (path.startsWith('auth/token/')) r = tokenRoutes(path, method, body, caller);
      else if (authMount !== undefined) r = approleRole(authMount, path.slice(`auth/${authMount}/`.length), method, body);
      else if (kvMount !== undefined) r = kvRoutes(kvMount, path.slice(kvMount.length + 1), method, url.searchParams, body);
      else if (path.startsWith('sys/')) r = sysRoutes(path, method, body);
      else throw noRoute(path);
      return send(res, r.status, r.body);
    } catch (e) {
      if (e instanceof Answer) return send(res, e.status, e.body ?? { errors: e.errors });
      throw e;
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent && !res.destroyed) send(res, 500, { errors: [`fake-vault internal error: ${(err as Error)?.message ?? err}`] });
      else res.destroy();
    });
  });

  function listen(port: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  function closePort(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  await listen(options.port ?? 0);
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (outage) await closePort();

  let stopped: Promise<void> | undefined;
  let stopping = false;

  const api: FakeVault = {
    url,
    port,
    rootToken,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        for (const t of timers) clearTimeout(t);
        timers.clear();
        await closePort();
      })();
      return stopped;
    },
    counters() {
      return { ...counters, requests: { ...counters.requests }, status: { ...counters.status } };
    },
    resetCounters() {
      counters = freshCounters();
    },
    async setFault(fault) {
      if (fault.kind === 'outage') {
        if (!faults.some((f) => f.kind === 'outage')) faults.push({ ...fault, remaining: Infinity });
        outage = true;
        await closePort();
        return;
      }
      faults.push({ ...fault, remaining: fault.count ?? Infinity });
    },
    async clearFaults() {
      faults = [];
      if (outage) {
        outage = false;
        if (!stopping) await listen(port);
      }
    },
    faults() {
      return faults.map(({ remaining, ...f }) => ({ ...f, ...(Number.isFinite(remaining) ? { count: remaining } : {}) }) as FakeVaultFault);
    },
    seed(path, data, opts = {}) {
      const mount = cleanMount(opts.mount ?? firstMount());
      if (!kvMounts.has(mount)) throw new Error(`fake-vault: no KV mount ${mount}`);
      return writeSecret(mount, cleanMount(path), data).version;
    },
    versions(path, opts = {}) {
      const mount = kvMounts.get(cleanMount(opts.mount ?? firstMount()));
      const s = mount?.secrets.get(cleanMount(path));
      if (!s) return [];
      return [...s.versions.entries()]
        .sort(([a], [b]) => a - b)
        .map(([version, v]): FakeSecretVersion => ({ version, data: v.data === null ? null : structuredClone(v.data), createdTime: v.created, deletionTime: v.deletionTime, destroyed: v.destroyed }));
    },
    createToken(o: FakeTokenOptions = {}) {
      return issueToken({
        policies: o.policies ?? ['default'],
        ttlSec: o.ttlSeconds ?? 0,
        maxTtlSec: o.maxTtlSeconds ?? 0,
        renewable: o.renewable ?? true,
        path: 'auth/token/create',
        meta: null,
        displayName: 'token',
        orphan: false,
        ...(o.id !== undefined ? { id: o.id } : {}),
      }).id;
    },
    revokeTokens(filter = {}) {
      let n = 0;
      for (const [id, t] of tokens) {
        if (id === rootToken) continue;
        if (filter.roleName !== undefined && t.roleName !== filter.roleName) continue;
        tokens.delete(id);
        n++;
      }
      return n;
    },
    addAppRole(o) {
      const role = addRole(o.mount ?? 'approle', o);
      const secretId = o.secretId ?? randomUUID();
      role.secretIds.add(secretId);
      return { roleId: role.roleId, secretId };
    },
    appRole(name, opts = {}) {
      const role = authMounts.get(cleanMount(opts.mount ?? 'approle'))?.roles.get(name);
      const secretId = role ? [...role.secretIds][0] : undefined;
      if (!role || secretId === undefined) throw new Error(`fake-vault: no AppRole role ${name} with a secret ID`);
      return { roleId: role.roleId, secretId };
    },
    setPolicy(name, hcl) {
      try {
        setPolicy(name, hcl);
      } catch (e) {
        throw new Error(`fake-vault: ${e instanceof Answer ? e.errors.join('; ') : (e as Error).message}`);
      }
    },
  };
  return api;
}
