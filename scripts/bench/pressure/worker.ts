/**
 * The worker processes of scripts/bench/pressure.ts (started by it with
 * `node --import tsx scripts/bench/pressure/worker.ts worker <base64 JSON config>` and an IPC
 * channel; not meant to be run by hand). A worker sets its client up (keypool: a KeyPool and a
 * PooledOpenAI; naive: round robin over the keys with its own openai clients), answers ready, and
 * on `start { startAt }` sends its share of the Poisson arrivals from that common start time,
 * answering with its figures once every call has ended.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import OpenAI from 'openai';
import { pino } from 'pino';
import { KeyPool, type KeySpecInput } from '@keypool/core';
import { PooledOpenAI } from '@keypool/client';
import { runChildRole, send, serveRequests } from '../lib/child-ipc.js';
import { poissonArrivals } from '../lib/load.js';
import { quantile, round } from '../lib/stats.js';
import { MAX_TOKENS, MODEL, messagesFor, NAIVE, type WorkerConfig, type WorkerResult } from './request.js';


function describeError(e: unknown): string {
  if (e instanceof OpenAI.APIError && typeof e.status === 'number') return `${e.constructor.name} ${e.status}${(e.error as { type?: string } | undefined)?.type ? ` ${(e.error as { type?: string }).type}` : ''}`;
  const err = e as { name?: string; code?: string; reason?: string; message?: string };
  if (err?.code === 'POOL_EXHAUSTED') return `PoolExhaustedError ${err.reason}`;
  return `${err?.name ?? 'Error'}${err?.code ? ` ${err.code}` : ''}: ${String(err?.message ?? e).slice(0, 120)}`;
}

async function worker(cfg: WorkerConfig): Promise<void> {
  // the parent prefixes every line with this worker's label
  const wlog = (msg: string) => process.stderr.write(`${msg}\n`);
  const offsets = poissonArrivals(cfg.seed, cfg.ratePerSec, cfg.seconds);
  let call: (i: number, timeoutMs: number) => Promise<number>; // resolves to attempts used
  let pool: KeyPool | undefined;
  const transitions: WorkerResult['transitions'] = [];
  let startAt = 0;

  if (cfg.mode === 'keypool') {
    const keys: KeySpecInput[] = cfg.keys.map((k) => ({ secret: k.secret, name: k.name, provider: 'openai', baseURL: cfg.fakeUrl, models: [MODEL], rpm: k.rpm, tpm: k.tpm }));
    pool = await KeyPool.connect({ redis: cfg.redisUrl, config: { pool: cfg.pool, keys }, logger: pino({ level: 'warn', name: `pressure-${cfg.index}` }, pino.destination(2)) });
    const names = new Map<string, string>();
    pool.on('transition', (ev) => transitions.push({ atMs: Date.now() - startAt, key: names.get(ev.keyId) ?? ev.hint, transition: ev.transition }));
    for (const k of (await pool.status()).keys) names.set(k.id, k.name ?? k.hint);
    const openai = new PooledOpenAI({ pool, deadlineMs: cfg.deadlineMs });
    call = async (i, timeoutMs) => {
      await openai.chat.completions.create({ model: MODEL, messages: messagesFor(i), max_tokens: MAX_TOKENS }, { timeout: timeoutMs });
      return 1;
    };
  } else {
    const clients = cfg.keys.map((k) => new OpenAI({ apiKey: k.secret, baseURL: cfg.fakeUrl, maxRetries: 0, timeout: cfg.deadlineMs }));
    let rr = cfg.index; // processes start on different keys, as independent processes would
    call = async (i, timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      const first = rr++ % clients.length;
      let last: unknown;
      for (let a = 0; a < NAIVE.attempts; a++) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        try {
          await clients[(first + a) % clients.length]!.chat.completions.create({ model: MODEL, messages: messagesFor(i), max_tokens: MAX_TOKENS }, { timeout: left });
          return a + 1;
        } catch (e) {
          last = e;
          const status = e instanceof OpenAI.APIError ? e.status : undefined;
          const retryable = status === 429 || (typeof status === 'number' && status >= 500) || e instanceof OpenAI.APIConnectionError;
          if (!retryable || a === NAIVE.attempts - 1) break;
          const ra = Number(e instanceof OpenAI.APIError ? e.headers?.get?.('retry-after-ms') : NaN);
          const backoff = NAIVE.baseMs * 2 ** a * (0.5 + Math.random() * 0.5);
          const wait = Number.isFinite(ra) && ra > 0 ? ra : backoff;
          if (Date.now() + wait >= deadline) break;
          await sleep(wait);
        }
      }
      throw last ?? new Error('deadline passed before an attempt');
    };
  }

  // ready; the parent starts every worker at one common time
  serveRequests({ start: async (req) => measure(Number(req.startAt)) }, async () => void (await pool?.close()));
  send({ type: 'ready', pid: process.pid });

  async function measure(at: number): Promise<WorkerResult> {
    startAt = at;
    if (!Number.isFinite(startAt) || startAt <= 0) throw new Error(`bad start time: ${at}`);
    const okLatencies: number[] = [];
    const failLatencies: number[] = [];
    const failures: Record<string, number> = {};
    const attempts: Record<string, number> = {};
    const lags: number[] = [];
    let succeeded = 0;
    const pending: Promise<void>[] = [];
    for (let j = 0; j < offsets.length; j++) {
      const scheduled = startAt + offsets[j]!;
      const wait = scheduled - Date.now();
      if (wait > 0) await sleep(wait);
      const i = cfg.index * 1_000_000 + j;
      const began = Date.now();
      lags.push(began - scheduled);
      pending.push(
        call(i, Math.max(1, Math.floor(cfg.deadlineMs - (began - scheduled)))).then(
          (n) => {
            succeeded++;
            okLatencies.push(Date.now() - scheduled);
            attempts[n] = (attempts[n] ?? 0) + 1;
          },
          (e: unknown) => {
            failLatencies.push(Date.now() - scheduled);
            const d = describeError(e);
            failures[d] = (failures[d] ?? 0) + 1;
          },
        ),
      );
    }
    await Promise.all(pending);
    lags.sort((a, b) => a - b);
    const result: WorkerResult = {
      index: cfg.index,
      offered: offsets.length,
      succeeded,
      okLatencies,
      failLatencies,
      failures,
      startLagP99Ms: round(quantile(lags, 0.99), 1),
      startLagMaxMs: round(lags[lags.length - 1] ?? 0, 1),
      ...(cfg.mode === 'naive' ? { attempts } : { transitions }),
    };
    if (pool) {
      if (cfg.index === 0) {
        const st = await pool.status();
        result.status = st.keys.map((k) => ({ key: k.name ?? k.hint, state: k.state, left: k.left, limits: { rpmBurst: k.limits.rpmBurst, tpmBurst: k.limits.tpmBurst }, coolingUntil: k.coolingUntil ?? null, breaker: k.breaker?.state, latency: k.latency }));
      }
      await pool.close();
      pool = undefined;
    }
    if (Object.keys(failures).length) wlog(`failures: ${JSON.stringify(failures)}`);
    return result;
  }
}

runChildRole('pressure worker', 'scripts/bench/pressure.ts', { worker });
