/**
 * Redis work per request from INFO commandstats deltas (see lib/redis.ts sampleRedis): every command
 * Redis ran, those a script ran included (Redis counts them under their own names), and the script
 * calls themselves (EVAL/EVALSHA/FCALL and their read-only forms). The benchmark's own INFO calls are
 * left out. On a private redis-server these are the gateway's (its background upkeep included).
 */

const SCRIPT_COMMANDS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro']);

export interface RedisCounts {
  /** every command run per request, commands inside scripts included */
  redisCommandsPerRequest: number;
  /** script calls (EVAL, EVALSHA, FCALL...) per request */
  scriptCallsPerRequest: number;
}

/** Totals of a commands-per-request record (command name -> calls per request). */
export function redisCounts(commandsPerRequest: Record<string, number>): RedisCounts {
  let commands = 0;
  let scripts = 0;
  for (const [name, n] of Object.entries(commandsPerRequest)) {
    if (name === 'info' || !Number.isFinite(n)) continue;
    commands += n;
    if (SCRIPT_COMMANDS.has(name)) scripts += n;
  }
  return { redisCommandsPerRequest: Math.round(commands * 100) / 100, scriptCallsPerRequest: Math.round(scripts * 100) / 100 };
}
