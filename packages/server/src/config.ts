/**
 * The gateway config moved to @keypool/config (the worker and the CLI read it without loading the
 * gateway). This module only re-exports it for scripts that still import this path; import
 * @keypool/config instead.
 */
export * from '@keypool/config';
