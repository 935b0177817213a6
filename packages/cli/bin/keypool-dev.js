#!/usr/bin/env node
// `keypool` from the TypeScript sources, for this repository's tests and development; not published
// (the installed command is keypool.js, which runs dist/). tsx compiles the sources on import
// (tsconfig: false: the caller's directory may hold an unrelated tsconfig.json), and the
// @keypool/source export condition makes every @keypool/* import load its package's src/, as
// vitest and `tsc -p tsconfig.json` do, so no build is needed and a stale dist/ is never run.
import { register } from 'node:module';
import { register as registerTsx } from 'tsx/esm/api';

registerTsx({ tsconfig: false });
// registered last, so it runs first and hands tsx (and Node) the extra condition
register('data:text/javascript,export function resolve(s, c, next) { return next(s, { ...c, conditions: [...c.conditions, "@keypool/source"] }); }');
await import('../src/main.ts');
