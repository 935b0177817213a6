/**
 * `@keypool/secrets/local`: the sources that need no SDK (environment variables, the encrypted
 * file), for tools such as `keypool secrets` that must start fast: the package root also loads the
 * AWS SDK and node-vault.
 */
export * from './types.js';
export * from './document.js';
export * from './env.js';
export * from './file.js';
