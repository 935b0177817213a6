/** bench:queue's command line: the flags, their defaults and their checks. */
import { int, num, oneOf, parseBenchArgs } from '../cli.js';

const USAGE = `Usage: tsx scripts/bench/queue.ts [options]   (npm run bench:queue -- [options])
  --json                  print one JSON object on stdout (progress and logs go to stderr)
  --jobs N                chat jobs to enqueue and drain (default 5000)
  --keys N                upstream keys (default 4)
  --rpm N                 requests per minute of each key, the fake's and the pool's (default 2500)
  --workers N             keypool worker processes (default 2)
  --concurrency N         queue.concurrency of each worker: jobs run at once (default 32; 16, the
                          config's default, is just enough here on an idle machine: see the header)
  --key-wait-ms N         queue.keyWaitMs: longest in-process wait for a key (default 2000)
  --latency-p50-ms N      fake upstream latency, median (default 100)
  --latency-p99-ms N      fake upstream latency, 99th percentile (default 400; = p50: fixed)
  --max-tokens N          max_tokens of each job (default 8)
  --batch N               jobs per addBulk call (default 1000)
  --upstream-bucket M     aligned (default): the fake's buckets start holding keypool's burst;
                          full: as an idle key, rpm requests (then no 429 can show)
  --enqueue M             paused (default): the jobs are added with the queue paused, then it is
                          resumed, so the drain is the workers' alone; live: added while the
                          workers run (the producer's enqueue overlaps the drain)
  --timeout-s N           stop waiting for the drain after this long (default 4 x the ideal drain
                          time + 60 s); jobs not completed by then are lost
  --seed N                seed of the fake's latency sampler (default 1)
  --log-level L           workers' log level (default warn)
  -h, --help              this text
Redis: REDIS_URL if set (only this run's pool keys are deleted), else a private redis-server.`;


export function parseCli() {
  const v = parseBenchArgs(USAGE, {
    jobs: '5000', keys: '4', rpm: '2500', workers: '2', concurrency: '32', 'key-wait-ms': '2000',
    'latency-p50-ms': '100', 'latency-p99-ms': '400', 'max-tokens': '8', batch: '1000',
    'upstream-bucket': 'aligned', enqueue: 'paused', 'timeout-s': null, seed: '1', 'log-level': 'warn',
  });
  const upstreamBucket = oneOf('upstream-bucket', v['upstream-bucket'], ['aligned', 'full']);
  const enqueue = oneOf('enqueue', v.enqueue, ['paused', 'live']);
  const p50 = num('latency-p50-ms', v['latency-p50-ms'], 0, 60_000);
  const p99 = num('latency-p99-ms', v['latency-p99-ms'], 0, 600_000);
  if (p99 < p50) throw new Error('--latency-p99-ms must be at least --latency-p50-ms');
  return {
    json: v.json,
    jobs: int('jobs', v.jobs, 1, 1_000_000),
    keys: int('keys', v.keys, 1, 100),
    rpm: int('rpm', v.rpm, 1, 1_000_000),
    workers: int('workers', v.workers, 1, 32),
    concurrency: int('concurrency', v.concurrency, 1, 1000),
    keyWaitMs: int('key-wait-ms', v['key-wait-ms'], 0, 600_000),
    latencyP50Ms: p50,
    latencyP99Ms: p99,
    maxTokens: int('max-tokens', v['max-tokens'], 1, 4096),
    batch: int('batch', v.batch, 1, 100_000),
    upstreamBucket,
    enqueue,
    timeoutS: v['timeout-s'] === undefined ? undefined : num('timeout-s', v['timeout-s'], 1, 86_400),
    seed: int('seed', v.seed, 0, 2 ** 31),
    logLevel: v['log-level'],
  };
}

export type Options = ReturnType<typeof parseCli>;
