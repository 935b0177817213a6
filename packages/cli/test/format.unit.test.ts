/** The text output, in process: tables, numbers, the status summary, colours only when asked. */
import { describe, expect, it } from 'vitest';
import type { GatewayTokenInfo, KeyStatus } from '@keypool/core';
import { renderStatus } from '../src/commands/status.js';
import { tokensTable } from '../src/commands/tokens.js';
import { duration, table, usd } from '../src/format.js';
import type { GatewayStatus } from '../src/gateway-client.js';

const NOW = Date.parse('2026-01-01T12:00:00Z');

function key(over: Partial<KeyStatus> & Pick<KeyStatus, 'id'>): KeyStatus {
  return {
    hint: 'sk-...abcd',
    provider: 'openai',
    baseURL: 'https://api.openai.com/v1',
    models: ['gpt-4o-mini'],
    state: 'active',
    degraded: false,
    limits: { rpm: 0, tpm: 0, rpmBurst: 0, tpmBurst: 0, maxConcurrent: 0, budgetUsd: null, budgetPeriod: null, weight: 1, windowSeconds: 0, tokenWindowSeconds: 0, limitHeaders: 'minute' },
    left: { requests: null, tokens: null, slots: null, budgetUsd: null },
    inFlight: 0,
    spendUsd: 0,
    latency: { p50Ms: 0, p99Ms: 0 },
    errorRate: 0,
    ...over,
  };
}

const STATUS: GatewayStatus = {
  pool: 'prod',
  redis: { ok: true, policy: 'fail-closed' },
  mode: 'shared',
  version: 3,
  leasesInFlight: 2,
  snapshot: { takenAt: '2026-01-01T11:59:59.150Z', ageMs: 850 },
  spend: { byModel: { 'gpt-4o-mini': { usd: 0.5, requests: 40 }, 'gpt-4o': { usd: 1.25, requests: 2 } }, byRoute: {} },
  routes: { smart: { models: ['gpt-4o', 'gpt-4o-mini'] } },
  gateway: { pid: 42, startedAt: '2026-01-01T09:30:00Z', inFlight: 1, version: '0.1.0' },
  keys: [
    key({
      id: '1111111111111111',
      name: 'openai-1',
      hint: 'sk-...1111',
      limits: { rpm: 500, tpm: 200000, rpmBurst: 16, tpmBurst: 32768, maxConcurrent: 50, budgetUsd: 200, budgetPeriod: 'month', weight: 1, windowSeconds: 0, tokenWindowSeconds: 0, limitHeaders: 'minute' },
      effectiveLimits: { rpm: 500, tpm: 200000 },
      left: { requests: 14, tokens: 31000, slots: 48, budgetUsd: 198.25 },
      inFlight: 2,
      spendUsd: 1.75,
      latency: { p50Ms: 120, p99Ms: 950 },
      errorRate: 0.031,
      degraded: true,
    }),
    key({ id: '2222222222222222', name: 'groq-1', state: 'cooling', coolingUntil: '2026-01-01T12:00:04Z' }),
    key({ id: '3333333333333333', state: 'open', breaker: { state: 'open', consecutiveFailures: 5, opens: 1, openUntil: '2026-01-01T12:01:30Z' } }),
  ],
};

describe('renderStatus', () => {
  it('summary lines, then one row per key with limits left, spend, latency and errors', () => {
    expect(renderStatus(STATUS, { color: false, now: NOW })).toBe(
      [
        'pool:     prod',
        'redis:    ok, mode shared',
        "read:     850ms ago, the fleet's shared status",
        'gateway:  v0.1.0, pid 42, up 2h30m, 1 request(s) in flight',
        'leases:   2 in flight (whole fleet)',
        'routes:   smart -> gpt-4o, gpt-4o-mini',
        'spend:    $1.75 over 42 request(s)',
        '',
        'NAME      ID                HINT        STATE              IN FLIGHT  REQ LEFT/RPM  TOK LEFT/TPM  BUDGET LEFT               SPEND  P50/P99 MS  ERRORS',
        'openai-1  1111111111111111  sk-...1111  active (degraded)  2/50       14/500        31000/200000  $198.25 of $200.00/month  $1.75     120/950    3.1%',
        'groq-1    2222222222222222  sk-...abcd  cooling 4s         0/-        -             -             -                            $0           -    0.0%',
        '-         3333333333333333  sk-...abcd  open 1m30s         0/-        -             -             -                            $0           -    0.0%',
        '',
      ].join('\n'),
    );
  });

  it('Redis down shows in the summary; no keys says so', () => {
    const down: GatewayStatus = { ...STATUS, redis: { ok: false, policy: 'local', downSince: '2026-01-01T11:59:00Z', lastError: 'ECONNREFUSED' }, mode: 'local', keys: [] };
    const text = renderStatus(down, { color: false, now: NOW });
    expect(text).toContain('redis:    DOWN, mode local (policy local, down for 1m: ECONNREFUSED)\n');
    expect(text.endsWith('\n\nno keys in this pool\n')).toBe(true);
  });

  it('the secrets and the scheduler, when the gateway reports them', () => {
    const withJobs: GatewayStatus = {
      ...STATUS,
      secrets: {
        version: 'v2',
        keys: 3,
        sources: [
          { source: 'vault kv2 secret/keypool at http://vault:8200', kind: 'vault', keys: 3, lastError: { code: 'unavailable', message: 'x' } },
          { source: 'env KEYPOOL_KEY', kind: 'env', keys: 0 },
        ],
        fleet: { published: 'v2', processes: [{ id: 'a', version: 'v2' }, { id: 'b', version: 'v1' }] },
      },
      scheduler: [
        { name: 'health-probe', every: 15000, runs: { completed: 3, failed: 0 }, lastRun: { startedAt: '2026-01-01T11:59:50Z', durationMs: 5, ok: true, worker: 'w', jobId: 'j' } },
        { name: 'secret-refresh', every: 60000, runs: { completed: 1, failed: 1 }, lastRun: { startedAt: '2026-01-01T11:59:00Z', durationMs: 5, ok: false, worker: 'w', jobId: 'k', error: 'down' } },
        { name: 'housekeeping', every: 60000, runs: { completed: 0, failed: 0 } },
      ],
    };
    const text = renderStatus(withJobs, { color: false, now: NOW });
    expect(text).toContain('secrets:    set v2, 3 key(s) from vault, env; 2 process(es), 1 behind; FAILING: vault kv2 secret/keypool at http://vault:8200 (unavailable), last good set kept\n');
    expect(text).toContain('scheduler:  health-probe ok 10s ago, secret-refresh FAILED 1m ago, housekeeping never run\n');
    expect(renderStatus({ ...STATUS, scheduler: [] }, { color: false, now: NOW })).toContain('scheduler:  no worker has run (keypool worker --config ...)\n');
  });

  it('per class lines from the fleet-wide traffic, for the classes with traffic in 15 minutes', () => {
    const c = (admitted: number, waited: number, refused: number, p50: number | null, p99: number | null) => ({ admitted, waited, refused, waitP50Ms: p50, waitP99Ms: p99, meanWaitMs: null });
    const none = c(0, 0, 0, null, null);
    const traffic = {
      last60s: { seconds: 60, requests: 15, refused: 1, upstream429: 0, byClass: { critical: none, normal: c(12, 3, 1, 0, 250), low: c(0, 0, 0, null, null) }, byTenant: {} },
      last15m: { seconds: 900, requests: 170, refused: 1, upstream429: 2, byClass: { critical: none, normal: c(100, 20, 1, 0, 500), low: c(40, 10, 0, 10, 2500) }, byTenant: {} },
    };
    const text = renderStatus({ ...STATUS, traffic }, { color: false, now: NOW });
    expect(text).toContain('class normal:  60 s: 12 admitted, 3 waited, 1 refused, wait p50/p99 0/250 ms; 15 min: 100 admitted, 20 waited, 1 refused\n');
    expect(text).toContain('class low:     60 s: 0 admitted, 0 waited, 0 refused, wait p50/p99 -/- ms; 15 min: 40 admitted, 10 waited, 0 refused\n');
    expect(text).not.toContain('class critical');
  });

  it('a key the pool holds below its configured limits shows what it enforces now, (eff N), in yellow', () => {
    const limits = { ...key({ id: 'x' }).limits, windowSeconds: 1 };
    const keys = [
      // configured 540 rpm, the provider reported 360: the pool enforces 360; tokens as configured
      key({ id: '4444444444444444', name: 'azure-1', limits: { ...limits, rpm: 540, tpm: 90000 }, effectiveLimits: { rpm: 360, tpm: 90000 }, reportedLimits: { rpm: 360, tpm: null }, left: { requests: 4, tokens: 1500, slots: null, budgetUsd: null } }),
      // configured with no rpm, learnt 600 from the provider's headers
      key({ id: '5555555555555555', name: 'learnt', limits, effectiveLimits: { rpm: 600, tpm: 0 }, reportedLimits: { rpm: 600, tpm: null }, left: { requests: 3, tokens: null, slots: null, budgetUsd: null } }),
    ];
    const plain = renderStatus({ ...STATUS, keys }, { color: false, now: NOW });
    expect(plain).toMatch(/azure-1 .* 4\/540 \(eff 360\)\s+1500\/90000\s/);
    expect(plain).toMatch(/learnt .* 3\/- \(eff 600\)\s+-\s/);
    const colored = renderStatus({ ...STATUS, keys }, { color: true, now: NOW });
    expect(colored).toContain('\u001b[33m4/540 (eff 360)\u001b[39m');
    expect(colored).not.toContain('\u001b[33m1500/90000');
  });

  it('colours only when asked: the state and the header, widths unchanged', () => {
    const plain = renderStatus(STATUS, { color: false, now: NOW });
    const colored = renderStatus(STATUS, { color: true, now: NOW });
    expect(plain).not.toContain('\u001b[');
    expect(colored).toContain('\u001b[33mactive (degraded)\u001b[39m');
    expect(colored).toContain('\u001b[33mcooling 4s\u001b[39m');
    expect(colored).toContain('\u001b[31mopen 1m30s\u001b[39m');
    expect(colored).toContain('\u001b[1mNAME\u001b[22m');
    // eslint-disable-next-line no-control-regex
    expect(colored.replace(/\u001b\[\d+m/g, '')).toBe(plain);
  });
});

describe('tokensTable', () => {
  it('never the token: id, hint, limits, spend, revoked', () => {
    const t = (over: Partial<GatewayTokenInfo>): GatewayTokenInfo => ({
      id: 'aaaaaaaaaaaa',
      hint: 'kpt_...wxyz',
      name: 'ci',
      rpm: 0,
      weight: 1,
      allowCritical: false,
      rpmBurst: 0,
      budget: null,
      models: [],
      createdAt: '2026-01-01T00:00:00Z',
      revokedAt: null,
      lastUsedAt: null,
      requests: 0,
      spendUsd: 0,
      reservedUsd: 0,
      left: { requests: null, budgetUsd: null },
      budgetPeriodEndsAt: null,
      ...over,
    });
    expect(
      tokensTable([t({}), t({ id: 'bbbbbbbbbbbb', name: 'batch', rpm: 60, rpmBurst: 2, budget: { usd: 5, period: 'day' }, models: ['gpt-4o-mini'], requests: 1234, spendUsd: 0.0042, revokedAt: '2026-01-02T03:04:05.678Z' })], false),
    ).toBe(
      [
        'ID            NAME   HINT         RPM           BUDGET     MODELS         SPEND  REQUESTS  REVOKED',
        'aaaaaaaaaaaa  ci     kpt_...wxyz  -             -          all               $0         0  no',
        'bbbbbbbbbbbb  batch  kpt_...wxyz  60 (burst 2)  $5.00/day  gpt-4o-mini  $0.0042      1234  yes, 2026-01-02 03:04:05 UTC',
        '',
      ].join('\n'),
    );
  });
});

describe('format', () => {
  it('table: columns as wide as their content, right-aligned where asked, no trailing spaces', () => {
    expect(table(['A', 'NUM', 'Z'], [['xx', '1', ''], ['y', '1000', 'end']], { color: false, right: [1] })).toBe('A    NUM  Z\nxx     1\ny   1000  end\n');
  });
  it('usd and duration', () => {
    expect([usd(0), usd(0.00042), usd(3), usd(1234.5), usd(null)]).toEqual(['$0', '$0.0004', '$3.00', '$1234.50', '-']);
    expect([duration(850), duration(42_000), duration(310_000), duration(3_600_000 * 3 + 60_000 * 12), duration(86_400_000 * 3)]).toEqual(['850ms', '42s', '5m10s', '3h12m', '3d']);
  });
});
