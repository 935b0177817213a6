/**
 * `keypool worker`: the scheduler of the fleet (secret refresh, health probes, budget periods,
 * housekeeping) on BullMQ. Run one or more anywhere that reaches the gateways' Redis: each job runs
 * once per interval whatever their number, and a worker that dies is replaced by the others.
 */
import { Option, type Command } from 'commander';
import type { Context } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { examples, paragraphs } from '../options.js';
import { loadConfigFile } from '../config-file.js';

interface WorkerOptions {
  config?: string;
}

export function registerWorker(program: Command, _ctx: Context): void {
  program
    .command('worker')
    .description('run the scheduler: secret refresh and rotation, health probes of failing keys, budget periods, housekeeping')
    .addOption(new Option('-c, --config <file>', 'the same YAML config file as serve (its redis, keys, secrets and scheduler sections)').env('KEYPOOL_CONFIG'))
    .addHelpText(
      'after',
      paragraphs(
        'Needs the Redis the gateways use (the redis section: url, sentinel or cluster; or REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_SEEDS): no embedded Redis here. Run as many workers as you like; each periodic job runs once per interval across all of them. The schedule and the last runs show in the gateways\' /status and /metrics.',
        'SIGTERM or SIGINT: finish the jobs in progress, leave the fleet, exit 0. A second signal exits 1 at once.',
        'Exit codes: 0 stopped by a signal; 1 could not start (Redis unreachable, a secret source failed at the first load); 2 invalid config.',
      ) + examples('keypool worker --config keypool.yaml', 'REDIS_URL=redis://redis:6379 keypool worker -c /etc/keypool.yaml'),
    )
    .action((opts: WorkerOptions) => runWorker(opts));
}

async function runWorker(opts: WorkerOptions): Promise<void> {
  const [{ isConfigError }, { startWorker }] = await Promise.all([import('@keypool/core'), import('@keypool/worker')]);
  const { config, logger } = await loadConfigFile(opts.config);
  let received = 0;
  let stop: (s: NodeJS.Signals) => void = () => undefined;
  const stopped = new Promise<NodeJS.Signals>((resolve) => (stop = resolve));
  const onSignal = (signal: NodeJS.Signals) => {
    if (++received > 1) process.exit(EXIT.failure);
    logger.info({ signal }, `${signal}: finishing the jobs in progress (send it again to exit at once)`);
    stop(signal);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let worker: Awaited<ReturnType<typeof startWorker>>;
  try {
    worker = await startWorker(config, { logger });
  } catch (e) {
    if (isConfigError(e)) throw new CliError('CONFIG_INVALID', e.message, { cause: e });
    const message = (e as Error).message ?? String(e);
    logger.error({ err: message }, 'the worker could not start');
    throw new CliError('SERVE_FAILED', `cannot start the worker: ${message.split('\n')[0]}`, { cause: e });
  }
  await stopped;
  await worker.close();
}
