import OpenAI from 'openai';
import type { KeyPool, ProbeTarget } from '@keypool/core';
import type { Logger } from 'pino';

export interface ProbeResult {
  keyId: string;
  hint: string;
  reason: ProbeTarget['reason'];
  status?: number;
  error?: string;
  latencyMs: number;
  transition: string;
}

export interface ProbeRun {
  probed: number;
  results: ProbeResult[];
}

interface ProbeOptions {
  timeoutMs: number;
  logger?: Logger;
  signal?: AbortSignal;
  /** Probes in flight at once. Default 8. */
  concurrency?: number;
}

/**
 * Probe every key that wants it (open, half-open, revoked, degraded; see KeyPool.probeTargets)
 * with a free call, GET {baseURL}/models, through the official client, and record each result in
 * the pool. Healthy keys are not probed. A few at a time, each bounded by `timeoutMs`: a pool of
 * many failing keys must not open hundreds of connections at once.
 */
export async function probeKeys(pool: KeyPool, opts: ProbeOptions): Promise<ProbeRun> {
  const queue = await pool.probeTargets();
  const results: ProbeResult[] = [];
  const lanes = Array.from({ length: Math.min(opts.concurrency ?? 8, queue.length) }, async () => {
    for (let t = queue.shift(); t; t = queue.shift()) {
      const r = await probeOne(pool, t, opts);
      if (r) results.push(r);
    }
  });
  await Promise.all(lanes);
  return { probed: results.length, results };
}

async function probeOne(pool: KeyPool, t: ProbeTarget, opts: ProbeOptions): Promise<ProbeResult | undefined> {
  const client = new OpenAI({ apiKey: t.secret, baseURL: t.baseURL, maxRetries: 0, timeout: opts.timeoutMs });
  const started = performance.now();
  let status: number | undefined;
  let error: 'timeout' | 'network' | undefined;
  let headers: Headers | undefined;
  try {
    const page = await client.models.list(opts.signal ? { signal: opts.signal } : undefined).asResponse();
    status = page.status;
    headers = page.headers;
    await page.body?.cancel().catch(() => undefined);
  } catch (e) {
    if (e instanceof OpenAI.APIError && typeof e.status === 'number') {
      status = e.status;
      headers = e.headers;
    } else error = e instanceof OpenAI.APIConnectionTimeoutError ? 'timeout' : 'network';
  }
  const latencyMs = Math.round(performance.now() - started);
  let r: { transition: string };
  try {
    r = await pool.reportProbe(t.keyId, { ...(status !== undefined ? { status } : { error: error! }), latencyMs, ...(headers ? { headers } : {}) });
  } catch (e) {
    // retired or removed meanwhile: nothing to record
    if ((e as Error).name === 'KeyNotFoundError') return undefined;
    throw e;
  }
  opts.logger?.info({ keyId: t.keyId, hint: t.hint, reason: t.reason, status, error, latencyMs, transition: r.transition }, 'health probe');
  return { keyId: t.keyId, hint: t.hint, reason: t.reason, ...(status !== undefined ? { status } : {}), ...(error ? { error } : {}), latencyMs, transition: r.transition };
}
