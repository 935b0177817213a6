/**
 * The config file of `keypool serve` and `keypool worker`. From @keypool/config, not from the
 * gateway: `keypool worker` must start without loading express or @keypool/server.
 */
import type { GatewayConfig } from '@keypool/config';
import type { Logger } from 'pino';
import { CliError } from './errors.js';

/** The config file (exit 2 with every problem when it is invalid), and the root logger. */
export async function loadConfigFile(file: string | undefined): Promise<{ config: GatewayConfig; logger: Logger }> {
  // loaded here, not at the top: the other commands need none of the config's dependencies
  const [{ loadGatewayConfig, rootLogger }, { isConfigError }] = await Promise.all([import('@keypool/config'), import('@keypool/core')]);
  let config: GatewayConfig;
  try {
    config = loadGatewayConfig(file !== undefined ? { file } : {});
  } catch (e) {
    if (isConfigError(e)) throw new CliError('CONFIG_INVALID', e.message, { cause: e });
    throw e;
  }
  return { config, logger: rootLogger(config.logLevel) };
}
