/** The pool part of the file (keys with secretEnv, core's PoolConfigSchema) and the routes' check against its keys. */
import { PoolConfigSchema, type ConfigIssue, type PoolConfig } from '@keypool/core';
import { isObject, toIssues, type Json, type JsonObject } from './issues.js';
import { GatewayFileSchema } from './schema.js';
import { ENV_NAME } from './sections/keys.js';

/**
 * Fills secrets from secretEnv and validates the pool part with core's schema. Issues about a secret
 * read from an env var are reported at `keys[i].secretEnv`, naming the variable, never the value.
 */
export function parsePool(poolPart: JsonObject, env: NodeJS.ProcessEnv, issues: ConfigIssue[]): PoolConfig | undefined {
  const input: JsonObject = { ...poolPart };
  const fromEnv = new Map<number, string>(); // key index -> env var its secret came from
  const reported = new Set<number>(); // key indexes whose secret problem is already reported
  if (Array.isArray(poolPart.keys)) {
    input.keys = poolPart.keys.map((k, i) => {
      if (!isObject(k) || !('secretEnv' in k)) {
        if (isObject(k) && k.secret === undefined) {
          issues.push({
            path: `keys[${i}].secret`,
            message: 'missing: set secret (the API key) or secretEnv (the name of an environment variable holding it)',
          });
          reported.add(i);
        }
        return k;
      }
      const { secretEnv, ...rest } = k;
      if (rest.secret !== undefined) {
        issues.push({ path: `keys[${i}]`, message: 'set either secret or secretEnv, not both' });
        return rest;
      }
      reported.add(i);
      if (typeof secretEnv !== 'string' || !ENV_NAME.test(secretEnv)) {
        issues.push({ path: `keys[${i}].secretEnv`, message: 'must be the name of an environment variable (letters, digits and _)' });
        return rest;
      }
      const secret = env[secretEnv];
      if (secret === undefined || secret === '') {
        issues.push({ path: `keys[${i}].secretEnv`, message: `environment variable ${secretEnv} is ${secret === '' ? 'empty' : 'not set'}` });
        return rest;
      }
      reported.delete(i);
      fromEnv.set(i, secretEnv);
      return { ...rest, secret };
    });
  }

  const r = PoolConfigSchema.safeParse(input);
  if (r.success) return r.data;
  for (const issue of toIssues(r.error, [], GatewayFileSchema)) {
    const m = /^keys\[(\d+)\]\.secret$/.exec(issue.path);
    const i = m ? Number(m[1]) : -1;
    if (reported.has(i)) continue;
    const envName = fromEnv.get(i);
    issues.push(envName ? { path: `keys[${i}].secretEnv`, message: `the value of ${envName}: ${issue.message}` } : issue);
  }
  return undefined;
}

/** Runs on the raw routes, so that a malformed route does not hide the problems of the others. */
export function checkRoutes(routes: Json | undefined, keys: Json | undefined, issues: ConfigIssue[]): void {
  if (!isObject(routes)) return;
  if (!Array.isArray(keys) || keys.length === 0) return; // keys come from elsewhere (admin API) later
  const servedBy = new Map<string, number>();
  keys.forEach((k, i) => {
    const models = isObject(k) ? k.models : undefined;
    if (Array.isArray(models)) for (const m of models) if (typeof m === 'string' && !servedBy.has(m)) servedBy.set(m, i);
  });
  for (const [name, route] of Object.entries(routes)) {
    const key = servedBy.get(name);
    if (key !== undefined) {
      issues.push({
        path: `routes.${name}`,
        message: `'${name}' is also a model served by keys[${key}]: a request for it would be ambiguous; rename the route`,
      });
    }
    const models = isObject(route) && Array.isArray(route.models) ? route.models : [];
    models.forEach((m, j) => {
      if (typeof m === 'string' && m !== '' && !servedBy.has(m)) {
        issues.push({ path: `routes.${name}.models[${j}]`, message: `no key in this file serves model '${m}'` });
      }
    });
  }
}
