/**
 * `keypool status`: the pool as a running gateway sees it (GET /status, with the status token when
 * the gateway sets one), as a
 * table or as the JSON the gateway answered.
 */
import type { Command } from 'commander';
import type { KeyStatus } from '@keypool/core';
import type { Context } from '../context.js';
import { count, duration, NONE, paint, percent, table, until, usd, type Cell, type Style } from '../format.js';
import type { GatewayStatus } from '../gateway-client.js';
import { addStatusOptions, examples, gatewayClient, paragraphs, type GatewayOptions } from '../options.js';

export function registerStatus(program: Command, ctx: Context): void {
  const cmd = program
    .command('status')
    .description('show the pool of a running gateway: Redis, and per key its state, limits left, spend, latency and errors')
    .addHelpText(
      'after',
      paragraphs(
        'Reads GET <url>/status. A gateway with server.statusToken set needs that token (KEYPOOL_STATUS_TOKEN or --status-token) or its admin token (KEYPOOL_ADMIN_TOKEN); one without needs none. Columns: requests and tokens left now (in the enforcement window of a key with one, else in the bucket) out of the configured rpm / tpm, followed by (eff N) when the pool enforces another limit now (lowered by 429s, by the limit the provider reports or by another application using the key; raised back as answers stay clean), budget left in the current period, spend, latency percentiles and error rate over the health window; - means no limit.',
        'The class lines (critical, normal, low: those with traffic in the last 15 minutes) count the whole fleet\'s acquires in the last 60 s and 15 min: admitted at once, waited (admitted by a reservation, started later), refused; wait p50/p99 is over the admitted ones (0 for those admitted at once), the upper bound of the histogram bucket.',
      'A state followed by (degraded) is a key slower or failing more than health.degradedP99Ms / health.degradedErrorRate allow: it gets less traffic. Colours only when stdout is a terminal (and NO_COLOR is not set).',
      ) +
        examples('keypool status', 'keypool status --url http://gateway.internal:8080', 'KEYPOOL_URL=http://10.0.0.5:8080 keypool status --json | jq .keys'),
    );
  addStatusOptions(cmd).action(async (opts: GatewayOptions) => {
    const status = await gatewayClient(opts).status();
    ctx.out(opts.json ? `${JSON.stringify(status, null, 2)}\n` : renderStatus(status, { color: ctx.color, now: ctx.clock.now() }));
  });
}

/** The whole status: a few summary lines, then one row per key. */
export function renderStatus(st: GatewayStatus, opts: { color: boolean; now: number }): string {
  const lines: [string, Cell][] = [['pool', st.pool]];
  const r = st.redis;
  lines.push([
    'redis',
    r.ok
      ? { text: `ok, mode ${st.mode}`, style: 'green' }
      : {
          text: `DOWN, mode ${st.mode} (policy ${r.policy}${r.downSince ? `, down for ${duration(opts.now - Date.parse(r.downSince))}` : ''}${r.lastError ? `: ${r.lastError}` : ''})`,
          style: 'red',
        },
  ]);
  // the fleet shares one status per status.snapshotMs: how old these figures are
  if (st.snapshot) lines.push(['read', `${duration(st.snapshot.ageMs)} ago, the fleet's shared status`]);
  if (st.gateway) {
    const up = duration(opts.now - Date.parse(st.gateway.startedAt));
    lines.push(['gateway', `v${st.gateway.version}, pid ${st.gateway.pid}, up ${up}, ${st.gateway.inFlight} request(s) in flight`]);
  }
  if (st.leasesInFlight !== null && st.leasesInFlight !== undefined) lines.push(['leases', `${st.leasesInFlight} in flight (whole fleet)`]);
  const routes = Object.entries(st.routes ?? {});
  if (routes.length > 0) lines.push(['routes', routes.map(([name, r]) => `${name} -> ${r.models.join(', ')}`).join('; ')]);
  if (st.spend) {
    const models = Object.values(st.spend.byModel);
    const total = models.reduce((n, m) => n + m.usd, 0);
    const requests = models.reduce((n, m) => n + m.requests, 0);
    lines.push(['spend', `${usd(total)} over ${requests} request(s)`]);
  }
  const sec = st.secrets;
  if (sec) {
    const failing = sec.sources.filter((x) => x.lastError);
    const fleet = sec.fleet;
    const behind = fleet && fleet.published !== null ? fleet.processes.filter((p) => p.version !== fleet.published).length : 0;
    lines.push([
      'secrets',
      {
        text:
          `set ${sec.version ?? '?'}, ${sec.keys} key(s) from ${sec.sources.map((x) => x.kind).join(', ')}` +
          (fleet ? `; ${fleet.processes.length} process(es)${behind ? `, ${behind} behind` : ''}` : '') +
          (failing.length ? `; FAILING: ${failing.map((x) => `${x.source} (${x.lastError!.code}), last good set kept`).join('; ')}` : ''),
        style: failing.length || behind ? 'yellow' : 'green',
      },
    ]);
  }
  // per priority class, fleet-wide: last minute, then last 15 minutes (classes with no traffic left out)
  const t = st.traffic;
  if (t) {
    for (const [cls, m] of Object.entries(t.last60s.byClass)) {
      const q = t.last15m.byClass[cls as keyof typeof t.last15m.byClass];
      if (!q || q.admitted + q.waited + q.refused === 0) continue;
      const ms = (v: number | null) => (v === null ? NONE : String(v));
      lines.push([
        `class ${cls}`,
        {
          text: `60 s: ${m.admitted} admitted, ${m.waited} waited, ${m.refused} refused, wait p50/p99 ${ms(m.waitP50Ms)}/${ms(m.waitP99Ms)} ms; 15 min: ${q.admitted} admitted, ${q.waited} waited, ${q.refused} refused`,
          style: m.refused > 0 ? 'yellow' : undefined,
        },
      ]);
    }
  }
  if (Array.isArray(st.scheduler)) {
    lines.push([
      'scheduler',
      st.scheduler.length === 0
        ? { text: 'no worker has run (keypool worker --config ...)', style: 'yellow' }
        : {
            text: st.scheduler
              .map((j) => `${j.name} ${j.lastRun ? `${j.lastRun.ok ? 'ok' : 'FAILED'} ${duration(opts.now - Date.parse(j.lastRun.startedAt))} ago` : 'never run'}`)
              .join(', '),
            style: st.scheduler.some((j) => j.lastRun && !j.lastRun.ok) ? 'red' : 'green',
          },
    ]);
  }
  const label = Math.max(...lines.map(([l]) => l.length)) + 1;
  const head = lines.map(([l, v]) => `${`${l}:`.padEnd(label)}  ${typeof v === 'string' ? v : paint(v.text, v.style, opts.color)}`).join('\n');
  const body = st.keys.length === 0 ? 'no keys in this pool\n' : keysTable(st.keys, opts);
  return `${head}\n\n${body}`;
}

const KEY_HEADER = ['NAME', 'ID', 'HINT', 'STATE', 'IN FLIGHT', 'REQ LEFT/RPM', 'TOK LEFT/TPM', 'BUDGET LEFT', 'SPEND', 'P50/P99 MS', 'ERRORS'];

/** One row per key (also `keypool keys list`). */
export function keysTable(keys: KeyStatus[], opts: { color: boolean; now: number }): string {
  const rows = keys.map((k): Cell[] => {
    const l = k.limits;
    const left = k.left;
    return [
      k.name ?? NONE,
      k.id,
      k.hint,
      stateCell(k, opts.now),
      `${k.inFlight}/${l.maxConcurrent > 0 ? l.maxConcurrent : NONE}`,
      rateCell(left?.requests, l.rpm, k.effectiveLimits?.rpm),
      rateCell(left?.tokens, l.tpm, k.effectiveLimits?.tpm),
      l.budgetUsd !== null ? `${usd(left?.budgetUsd)} of ${usd(l.budgetUsd)}/${l.budgetPeriod}` : NONE,
      usd(k.spendUsd ?? 0),
      k.latency && (k.latency.p50Ms > 0 || k.latency.p99Ms > 0) ? `${k.latency.p50Ms}/${k.latency.p99Ms}` : NONE,
      percent(k.errorRate),
    ];
  });
  return table(KEY_HEADER, rows, { color: opts.color, right: [8, 9, 10] });
}

/** `left/configured`, and `(eff N)` in yellow when the pool enforces another limit now (learnt from the provider). */
function rateCell(left: number | null | undefined, configured: number, effective: number | undefined): Cell {
  const eff = effective ?? configured;
  if (!(configured > 0) && !(eff > 0)) return NONE;
  const text = `${count(left)}/${configured > 0 ? configured : NONE}`;
  return eff === configured ? text : { text: `${text} (eff ${Math.round(eff)})`, style: 'yellow' };
}

const STATE_STYLE: Record<string, Style> = {
  active: 'green',
  cooling: 'yellow',
  half_open: 'yellow',
  draining: 'yellow',
  open: 'red',
  revoked: 'red',
  disabled: 'red',
  out_of_budget: 'red',
  unknown: 'dim',
};

function stateCell(k: KeyStatus, now: number): Cell {
  let text: string = k.state;
  const left = k.state === 'cooling' ? until(k.coolingUntil, now) : k.state === 'open' ? until(k.breaker?.openUntil, now) : undefined;
  if (left) text += ` ${left}`;
  if (k.degraded) text += ' (degraded)';
  const style = k.degraded && k.state === 'active' ? 'yellow' : STATE_STYLE[k.state];
  return { text, style };
}
