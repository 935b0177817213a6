/**
 * The gateway benchmark's options, constants and run-wide state, shared by its modules
 * (scripts/bench/gateway.ts describes the benchmark).
 */
import { fileURLToPath } from 'node:url';
import { BenchChild } from '../lib/child-ipc.js';
import { logger } from '../lib/report.js';
import { int, num, numList, parseBenchArgs } from '../cli.js';
import type { BareChildConfig, FakeChildConfig, GatewayChildConfig } from './child.js';

export const MODEL = 'gpt-4o-mini';
export const MAX_TOKENS = 16;
const DEFAULT_RATES = '500,750,1000,1500,2000,2500,3000,4000,5000,6000,8000';
const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));

export const log = logger('bench:gateway');

const USAGE = `Usage: tsx scripts/bench/gateway.ts [options]   (npm run bench:gateway -- [options])
  --json                 print one JSON object on stdout (progress and logs go to stderr)
  --rate N               requests per second of the main measurement (default 500)
  --overhead-rates LIST  also measure overhead (direct, bare proxy, floor, gateway; chat and stream) at
                         these rates, requests/s (default 200,500,1000; --rate is always measured)
  --quick                a short run (under 2 minutes): --seconds 2 --warmup 1 --no-max-rps
  --seconds N            measured seconds per side (direct, bare, floor, gateway) and mode (default 10)
  --warmup N             warm-up seconds per side and mode before measuring (default 3)
  --latency-ms N         fixed latency of the fake upstream (default 20)
  --chunk-delay-ms N     delay between stream chunks of the fake (default 1)
  --keys N               upstream keys in the gateway's pool (default 4)
  --rates LIST           maxRps steps, requests/s (default ${DEFAULT_RATES})
  --step-seconds N       measured seconds per side of each maxRps step (default 6)
  --step-retries N       measure a failing step again this many times (default 1)
  --max-overhead-ms N    overhead p99 bound of a maxRps step (default 10)
  --no-max-rps           skip the maxRps search
  --gateway-code C       dist (default): the gateway runs the packages' dist/ as they ship (run
                         \`npm run build\` first; a stale build is refused); src: their TypeScript
                         through tsx (its keepNames wraps every closure: slower, not what ships)
  --gateway-node-flags S what-if: extra node flags for the gateway process only, e.g.
                         "--max-semi-space-size=64" (shown in the output; default none)
  --proxy-node-flags S   extra node flags for the gateway, the bare proxy and the floor alike, e.g.
                         --proxy-node-flags=--trace-gc-nvp to compare their young generations in one
                         run (their output goes to stderr, prefixed [gateway] [bare] [floor];
                         default none). A value that starts with -- needs the = form, as for
                         --gateway-node-flags
  --profile              also profile the gateway (V8 CPU profile during one chat and one stream
                         slice at --rate, not part of the figures) and list its hot spots
  --timeout-ms N         a request unanswered after this long is an error (default 10000)
  -h, --help             this text`;


function oneOf<T extends string>(name: string, value: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) throw new Error(`--${name}: one of ${choices.join(', ')} (got '${value}')`);
  return value as T;
}

export function parseCli() {
  const v = parseBenchArgs(USAGE, {
    rate: '500', seconds: '10', warmup: '3', 'latency-ms': '20', 'chunk-delay-ms': '1', keys: '4',
    rates: DEFAULT_RATES, 'step-seconds': '6', 'step-retries': '1', 'max-overhead-ms': '10',
    'no-max-rps': false, profile: false, quick: false, 'overhead-rates': '200,500,1000', 'gateway-code': 'dist', 'gateway-node-flags': '', 'proxy-node-flags': '', 'timeout-ms': '10000',
  });
  const rates = numList('rates', v.rates, 1, 100_000);
  if (rates.length === 0) throw new Error('--rates: give at least one rate');
  for (let i = 1; i < rates.length; i++) if (rates[i]! <= rates[i - 1]!) throw new Error('--rates must increase');
  const rate = num('rate', v.rate, 1, 100_000);
  const overheadRates = [...new Set([...numList('overhead-rates', v['overhead-rates'], 1, 100_000), rate])].sort((a, b) => a - b);
  return {
    json: v.json,
    quick: v.quick,
    rate,
    overheadRates,
    seconds: v.quick ? 2 : num('seconds', v.seconds, 0.5, 3600),
    warmup: v.quick ? 1 : num('warmup', v.warmup, 0, 600),
    latencyMs: int('latency-ms', v['latency-ms'], 0, 60_000),
    chunkDelayMs: int('chunk-delay-ms', v['chunk-delay-ms'], 0, 1000),
    keys: int('keys', v.keys, 1, 1000),
    rates,
    stepSeconds: num('step-seconds', v['step-seconds'], 0.5, 600),
    stepRetries: int('step-retries', v['step-retries'], 0, 5),
    maxOverheadMs: num('max-overhead-ms', v['max-overhead-ms'], 0.1, 10_000),
    maxRps: !v['no-max-rps'] && !v.quick,
    profile: v.profile,
    gatewayCode: oneOf('gateway-code', v['gateway-code'], ['dist', 'src'] as const),
    gatewayNodeFlags: v['gateway-node-flags'].split(/\s+/).filter(Boolean),
    proxyNodeFlags: v['proxy-node-flags'].split(/\s+/).filter(Boolean),
    timeoutMs: int('timeout-ms', v['timeout-ms'], 100, 600_000),
  };
}

export type Options = ReturnType<typeof parseCli>;

/** Aborted on SIGINT/SIGTERM: slices stop sending, the rest of the run is skipped. */
export const interrupt = new AbortController();
export const interrupted = () => interrupt.signal.aborted;

export interface Ready {
  type: 'ready';
  url: string;
  pid: number;
  token?: string;
  origin?: string;
}

/** A child of gateway/child.ts with its IPC channel (see lib/child-ipc.ts). */
export class Child extends BenchChild<Ready> {
  constructor(
    readonly role: 'fake' | 'gateway' | 'bare',
    config: FakeChildConfig | GatewayChildConfig | BareChildConfig,
    nodeFlags: string[] = [],
    env?: NodeJS.ProcessEnv,
    label?: string,
  ) {
    super({ script: CHILD, role, config, nodeFlags, env, label, onUnexpectedExit: (m) => void (interrupted() || log(m)) });
  }
}
