/**
 * @keypool/secrets: where a pool's provider keys come from, and how a fleet learns they changed.
 *
 *   const loader = new SecretLoader(new VaultSource(VaultSourceConfigSchema.parse({ type: 'vault', path: 'keypool/openai' })));
 *   const set = await loader.start();            // throws if the first load fails
 *   const r = await loader.refresh();            // never throws; r.set is the last good set on failure
 */
export * from './types.js';
export * from './document.js';
export * from './loader.js';
export * from './sync.js';
export * from './config.js';
export * from './env.js';
export * from './file.js';
export * from './aws.js';
export * from './vault.js';
