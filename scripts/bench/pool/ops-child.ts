/**
 * The ops side of bench:pool's "under ops" phase (run by scripts/bench/pool/ops.ts, never by
 * hand): `gateways` gateway apps (each its own KeyPool holding the pool's keys, as a fleet's pods
 * do), and their viewers: dashboards reading /status every 2 s, a readiness probe per gateway on
 * /readyz and a Prometheus scrape per gateway on /metrics every second. Each call's duration is
 * kept; the parent asks for them when its window ends. In a process of its own, so the JSON and
 * HTTP work of the viewers never delays the acquire loop being measured: only Redis is shared.
 */
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { KeyPool } from '@keypool/core';
import { createGateway } from '@keypool/server';
import { pino } from 'pino';
import { runChildRole, send, serveRequests } from '../lib/child-ipc.js';
import { dist, type Dist } from '../lib/stats.js';
import { opsKeySpecs, type OpsChildConfig } from './ops.js';

type Kind = 'status' | 'readyz' | 'metrics';

async function opsRole(cfg: OpsChildConfig): Promise<void> {
  const logger = pino({ level: 'warn', name: 'keypool-bench-ops' }, pino.destination(2));
  const pools: KeyPool[] = [];
  const servers: import('node:http').Server[] = [];
  const urls: string[] = [];
  for (let g = 0; g < cfg.gateways; g++) {
    const pool = await KeyPool.connect({ redis: cfg.redisUrl, config: { pool: cfg.pool, keys: opsKeySpecs(cfg.keys, cfg.tag, cfg.model) }, logger });
    pools.push(pool);
    const { app } = createGateway({
      pool,
      logger,
      settings: { bodyLimit: '1mb', deadlineMs: 30_000, attemptTimeoutMs: 10_000, maxAttempts: 2, backoff: { baseMs: 10, maxMs: 100 }, defaultMaxOutputTokens: 256 },
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    servers.push(server);
    urls.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  }

  const times: Record<Kind, number[]> = { status: [], readyz: [], metrics: [] };
  const failures: Record<Kind, number> = { status: 0, readyz: 0, metrics: 0 };
  let running = false;
  const timers: NodeJS.Timeout[] = [];
  const call = async (kind: Kind, url: string) => {
    const t = performance.now();
    try {
      const res = await fetch(`${url}/${kind}`);
      await res.arrayBuffer();
      // a 503 from /readyz with keys held and Redis up is a failure too
      if (!res.ok) failures[kind]++;
    } catch {
      failures[kind]++;
    }
    if (running) times[kind].push(performance.now() - t);
  };
  const every = (ms: number, offsetMs: number, fn: () => Promise<void>) => {
    timers.push(
      setTimeout(() => {
        if (!running) return;
        void fn();
        timers.push(setInterval(() => void (running && fn()), ms));
      }, offsetMs),
    );
  };

  serveRequests(
    {
      // viewers start, spread over their interval as people and probes are
      start: async () => {
        running = true;
        for (let d = 0; d < cfg.dashboards; d++) every(2000, (d * 2000) / cfg.dashboards, () => call('status', urls[d % urls.length]!));
        urls.forEach((u, g) => {
          every(1000, 100 + (g * 1000) / urls.length, () => call('readyz', u));
          every(1000, 600 + (g * 1000) / urls.length, () => call('metrics', u));
        });
        return null;
      },
      stats: async () => {
        running = false;
        for (const t of timers) clearInterval(t);
        const out = {} as Record<Kind, Dist & { failed: number }>;
        for (const k of Object.keys(times) as Kind[]) out[k] = { ...dist(times[k]), failed: failures[k] };
        return out;
      },
    },
    async () => {
      running = false;
      for (const t of timers) clearInterval(t);
      for (const s of servers) s.closeAllConnections(), s.close();
      await Promise.all(pools.map((p) => p.close()));
    },
    { label: 'ops' },
  );
  send({ type: 'ready', pid: process.pid, urls });
}

runChildRole('bench ops child', 'scripts/bench/pool.ts', { ops: opsRole });
