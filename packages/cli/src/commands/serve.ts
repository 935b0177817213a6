/**
 * `keypool serve`: load the config file and run the gateway until SIGTERM / SIGINT. The first
 * signal drains (requests in flight get up to server.drainMs to finish, their leases are released),
 * then the process exits 0; a second signal exits 1 at once. Logs are pino JSON on stdout.
 */
import { Option, type Command } from 'commander';
import type { Logger } from 'pino';
import type { Serving } from '@keypool/server';
import { loadConfigFile } from '../config-file.js';
import type { Context } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { examples, paragraphs } from '../options.js';

interface ServeOptions {
  config?: string;
}

export function registerServe(program: Command, _ctx: Context): void {
  program
    .command('serve')
    .description('run the gateway: an OpenAI-compatible API (/v1) in front of the pool, plus /status, /metrics, /admin and a dashboard')
    .addOption(new Option('-c, --config <file>', 'YAML config file (see packages/server/keypool.example.yaml)').env('KEYPOOL_CONFIG'))
    .addHelpText(
      'after',
      paragraphs(
        'Environment variables override the file: REDIS_URL (or REDIS_SENTINELS with REDIS_SENTINEL_MASTER, or REDIS_CLUSTER_SEEDS; REDIS_USERNAME, REDIS_PASSWORD, REDIS_TLS_CA), KEYPOOL_HOST, KEYPOOL_PORT, KEYPOOL_ADMIN_TOKEN, KEYPOOL_STATUS_TOKEN, KEYPOOL_POOL, KEYPOOL_LOG_LEVEL; ${VAR} in the file is replaced by the environment. Without REDIS_URL or redis.url an embedded redis-server is started (it must be on the PATH) and stopped with the gateway.',
        'SIGTERM or SIGINT (Ctrl-C): stop taking requests, let those in flight finish (up to server.drainMs), exit 0. A second signal exits 1 at once. Logs: pino JSON on stdout (pipe them through pino-pretty to read them).',
        'Exit codes: 0 stopped by a signal; 1 could not start (port in use, Redis unreachable, no redis-server) or did not stop cleanly; 2 invalid config (every problem is listed with its path).',
      ) +
        examples(
          'keypool serve --config keypool.yaml',
          'KEYPOOL_CONFIG=/etc/keypool.yaml REDIS_URL=redis://redis:6379 keypool serve',
          'KEYPOOL_PORT=0 keypool serve -c keypool.yaml    # any free port; the log says which',
        ),
    )
    .action((opts: ServeOptions) => runServe(opts));
}

async function runServe(opts: ServeOptions): Promise<void> {
  const { serve } = await import('@keypool/server');
  const { config, logger } = await loadConfigFile(opts.config);
  if (opts.config === undefined) logger.warn('no config file (--config or KEYPOOL_CONFIG): the gateway has no keys of its own');

  const stop = waitForSignals(logger);
  let serving: Serving;
  try {
    serving = await serve(config, { logger });
  } catch (e) {
    const message = (e as Error).message ?? String(e);
    logger.error({ err: message }, 'the gateway could not start');
    throw new CliError('SERVE_FAILED', `cannot start the gateway: ${message.split('\n')[0]}`, { cause: e });
  }
  await stop;
  try {
    await serving.close();
  } catch (e) {
    logger.error({ err: (e as Error).message }, 'shutdown failed');
    throw new CliError('SERVE_FAILED', `the gateway did not shut down cleanly: ${(e as Error).message.split('\n')[0]}`, { cause: e });
  }
}

/**
 * Resolves at the first SIGTERM / SIGINT (also one that came during startup: the gateway then
 * stops as soon as it is up). A second signal exits 1 at once, whatever is in flight.
 */
function waitForSignals(logger: Logger): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      if (++received > 1) {
        logger.warn({ signal }, `${signal} again: exiting at once`);
        process.exit(EXIT.failure);
      }
      logger.info({ signal }, `${signal}: draining requests in flight (send it again to exit at once)`);
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
