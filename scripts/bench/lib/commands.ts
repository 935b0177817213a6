/**
 * Redis commands per request, from INFO commandstats deltas (lib/redis.ts) taken on a Redis the
 * benchmark has to itself (or with a baseline subtracted): every command Redis ran, the ones the
 * scripts run inside included, and the script calls among them (each one round trip).
 */

/** The commands that run a script (one round trip each, whatever it runs inside). */
const SCRIPT_CALLS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro']);

export interface RequestCommands {
  /** Every command Redis ran per request (scripts and what they call inside, INFO left out). */
  redisCommandsPerRequest: number;
  /** EVAL / EVALSHA / FCALL per request. */
  scriptCallsPerRequest: number;
  /** Commands sent outside scripts per request, by name (the commands no script calls). */
  outsideScripts: Record<string, number>;
}

/**
 * `perRequest`: command name -> calls per request (INFO itself left out). `insideScripts`: the
 * commands the scripts call, which also count here; any other command came from outside a script.
 */
export function requestCommands(perRequest: Record<string, number>, insideScripts: ReadonlySet<string>): RequestCommands {
  let all = 0;
  let scripts = 0;
  const outsideScripts: Record<string, number> = {};
  for (const [name, n] of Object.entries(perRequest)) {
    if (!Number.isFinite(n) || name === 'info') continue;
    all += n;
    if (SCRIPT_CALLS.has(name)) scripts += n;
    else if (!insideScripts.has(name)) outsideScripts[name] = n;
  }
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return { redisCommandsPerRequest: r3(all), scriptCallsPerRequest: r3(scripts), outsideScripts };
}

/** The Redis commands the keypool scripts call (`redis.call('<NAME>'`), lower case as INFO names them. */
export function commandsInScripts(luaSources: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const src of luaSources) for (const m of src.matchAll(/redis\.call\(\s*'([A-Za-z]+)'/g)) out.add(m[1]!.toLowerCase());
  return out;
}
