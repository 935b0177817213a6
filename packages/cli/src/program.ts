/**
 * The `keypool` command line: the commander program and the mapping of every outcome to an exit
 * code (see EXIT). `run` never throws and never exits the process; main.ts does that.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { packageRoot } from '@keypool/core/package-dir';
import { registerKeys } from './commands/keys.js';
import { registerQueue } from './commands/queue.js';
import { registerSecrets } from './commands/secrets.js';
import { registerServe } from './commands/serve.js';
import { registerStatus } from './commands/status.js';
import { registerTokens } from './commands/tokens.js';
import { registerWorker } from './commands/worker.js';
import { processContext, type Context } from './context.js';
import { EXIT, isCliError, type ExitCode } from './errors.js';
import { DEFAULT_URL, examples, paragraphs } from './options.js';

const VERSION = (JSON.parse(readFileSync(new URL('package.json', packageRoot(import.meta.url)), 'utf8')) as { version: string }).version;

/** The program with every command; commander errors are thrown (exitOverride), not exited on. */
export function buildProgram(ctx: Context): Command {
  const program = new Command('keypool')
    .description('keypool: a pool of LLM API keys shared through Redis, and its OpenAI-compatible gateway')
    .version(VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({ writeOut: (s) => ctx.out(s), writeErr: (s) => ctx.err(s) })
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      paragraphs(
        `serve runs a gateway and worker the scheduler and the LLM job queue, both from a config file; queue adds and reads LLM jobs through Redis (--config or --redis); secrets manages an encrypted secrets file, offline. status, keys and tokens talk to a running gateway at --url (env KEYPOOL_URL, default ${DEFAULT_URL}); keys and tokens use its admin API with KEYPOOL_ADMIN_TOKEN (or --admin-token).`,
        'Exit codes: 0 done; 1 failed (gateway unreachable, admin token refused, API error, serve or worker could not start, secrets file unreadable); 2 usage error (unknown command or option, bad argument, invalid config file).',
      ) +
        examples(
          'keypool serve --config keypool.yaml',
          'keypool worker --config keypool.yaml',
          'keypool queue add --config keypool.yaml --model gpt-4o-mini --prompt "Summarise: ..." --wait',
          'keypool status',
          'export KEYPOOL_ADMIN_TOKEN=...; keypool keys disable openai-1',
          'keypool tokens create --name my-service --rpm 600',
        ),
    );
  // settings above are copied to the commands created below (exitOverride, output, help after error)
  registerServe(program, ctx);
  registerStatus(program, ctx);
  registerKeys(program, ctx);
  registerTokens(program, ctx);
  registerWorker(program, ctx);
  registerSecrets(program, ctx);
  registerQueue(program, ctx);
  return program;
}

/** Runs `keypool <args>` and returns the exit code. Errors are printed as one `error: ...` line on stderr. */
export async function run(args: string[], ctx: Context = processContext()): Promise<ExitCode> {
  const program = buildProgram(ctx);
  try {
    await program.parseAsync(args, { from: 'user' });
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander has printed its message (or the help / version); only the code is left to set
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (isCliError(e)) {
      ctx.err(`error: ${e.message}\n`);
      return e.exitCode;
    }
    ctx.err(`error: unexpected failure: ${(e as Error)?.stack ?? String(e)}\n`);
    return EXIT.failure;
  }
}
