/**
 * Run a benchmark's keypool process on the code as it ships: the packages' `dist/` (what
 * `npm run build` writes and `keypool serve` runs), not their TypeScript sources through tsx. tsx
 * compiles with esbuild's keepNames, which wraps every function the code creates in a `__name()`
 * call (an Object.defineProperty per closure, per request), and that is not what users run.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const SOURCE_CONDITION = '--conditions=@keypool/source';

/** The oldest and newest modification times (ms) of the files under dir whose names match. */
function mtimes(dir: string, match: (name: string) => boolean): { oldest: number; newest: number } {
  const out = { oldest: Infinity, newest: 0 };
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const inner = mtimes(p, match);
      out.oldest = Math.min(out.oldest, inner.oldest);
      out.newest = Math.max(out.newest, inner.newest);
    } else if (match(e.name)) {
      const t = statSync(p).mtimeMs;
      out.oldest = Math.min(out.oldest, t);
      out.newest = Math.max(out.newest, t);
    }
  }
  return out;
}

/**
 * Throws, saying what to run, when a public package has no build or a source newer than its build:
 * a benchmark of dist/ would measure older code than the tree holds. (core's Lua is read from its
 * lua/ folder in every layout: no build step.)
 */
export function assertBuildIsFresh(): void {
  const stale: string[] = [];
  for (const name of readdirSync(join(ROOT, 'packages'))) {
    const dir = join(ROOT, 'packages', name);
    const manifest = join(dir, 'package.json');
    if (!existsSync(manifest) || (JSON.parse(readFileSync(manifest, 'utf8')) as { private?: boolean }).private) continue;
    const esm = join(dir, 'dist', 'esm');
    const src = mtimes(join(dir, 'src'), (n) => n.endsWith('.ts') || n.endsWith('.html')).newest;
    if (!existsSync(esm) || src > mtimes(esm, (n) => n.endsWith('.js')).oldest) stale.push(name);
  }
  if (stale.length > 0) throw new Error(`the build of ${stale.join(', ')} is missing or older than its sources: run \`npm run build\` first (or pass --gateway-code src)`);
}

/** The environment of a child that imports the public packages from dist/ (NODE_OPTIONS without the source condition). */
export function shippedCodeEnv(): NodeJS.ProcessEnv {
  const opts = (process.env.NODE_OPTIONS ?? '').split(/\s+/).filter((o) => o && o !== SOURCE_CONDITION);
  return { ...process.env, NODE_OPTIONS: opts.join(' ') };
}
