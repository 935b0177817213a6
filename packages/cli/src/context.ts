/**
 * What a command needs from the outside world, injected so that commands can be run in-process by
 * tests: output streams and whether to use colours. (Options read the environment through commander.)
 */
import { hostname, userInfo } from 'node:os';
import type { Clock } from '@keypool/core';

export interface Context {
  /** Write to stdout (results: tables, JSON, the new token). */
  out(text: string): void;
  /** Write to stderr (errors, notes for people). */
  err(text: string): void;
  /** ANSI colours in tables: stdout is a terminal and NO_COLOR is not set. */
  color: boolean;
  /**
   * "Now" of the commands' time decisions (a --deadline of +5m, "cooling for 12 s"); tests inject a
   * ManualClock. processContext reads Date.now: core's systemClock would cost every command the
   * load of @keypool/core, which the commands load only when they need it.
   */
  clock: Pick<Clock, 'now'>;
}

export function processContext(): Context {
  const env = process.env;
  return {
    out: (text) => void process.stdout.write(text),
    err: (text) => void process.stderr.write(text),
    color: Boolean(process.stdout.isTTY) && !('NO_COLOR' in env) && env.TERM !== 'dumb',
    clock: { now: () => Date.now() },
  };
}

/**
 * `user@host`, sent as x-keypool-actor with admin requests so that the gateway's audit log says who
 * acted. os.userInfo() throws when the uid has no passwd entry (some containers): then $USER.
 */
export function actor(env: NodeJS.ProcessEnv = process.env): string {
  let user: string | undefined;
  try {
    user = userInfo().username;
  } catch {
    user = env.USER ?? env.LOGNAME;
  }
  return `${user || 'unknown'}@${hostname()}`;
}
