/**
 * `npm run build`: every public package (not `private`) to `dist/`, in dependency order, so a
 * package compiles against the .d.ts of the packages it imports:
 *
 *   dist/esm   tsc (packages/<name>/tsconfig.build.json): ES modules, .d.ts, source maps
 *   dist/cjs   esbuild, file by file, the same sources as CommonJS (`import.meta.url` from
 *              `__filename`), the .d.ts of dist/esm beside them, and a package.json saying
 *              {"type":"commonjs"} so Node and TypeScript read that folder as CommonJS
 *
 * Files of src/ that are not TypeScript (the gateway's dashboard.html) are copied into both, so
 * `new URL('./x.html', import.meta.url)` finds them in every layout. tsc cannot write CommonJS from
 * sources that use `import.meta`; esbuild can, with the shim below.
 *
 *   npm run build                  all public packages
 *   npm run build -- core client   these only (their dependencies must be built)
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
/** Sources that are entry points only, never imported, and ES modules on purpose (top-level await). */
const ESM_ONLY = new Set(['packages/cli/src/main.ts']);

interface Manifest {
  name: string;
  private?: boolean;
  dependencies?: Record<string, string>;
}

export interface Workspace {
  dir: string;
  name: string;
  deps: string[];
}

/** The public workspace packages, each after the packages it depends on. */
export function publicPackages(root = ROOT): Workspace[] {
  const all: Workspace[] = [];
  for (const d of readdirSync(join(root, 'packages'))) {
    const file = join(root, 'packages', d, 'package.json');
    if (!existsSync(file)) continue;
    const m = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
    if (m.private) continue;
    all.push({ dir: join(root, 'packages', d), name: m.name, deps: Object.keys(m.dependencies ?? {}) });
  }
  const ordered: Workspace[] = [];
  const visit = (w: Workspace, path: string[]): void => {
    if (ordered.includes(w)) return;
    if (path.includes(w.name)) throw new Error(`dependency cycle: ${[...path, w.name].join(' -> ')}`);
    for (const dep of w.deps) {
      const inner = all.find((x) => x.name === dep);
      if (inner) visit(inner, [...path, w.name]);
    }
    ordered.push(w);
  };
  for (const w of all.sort((a, b) => a.name.localeCompare(b.name))) visit(w, []);
  return ordered;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

async function buildPackage(w: Workspace): Promise<void> {
  const src = join(w.dir, 'src');
  const esm = join(w.dir, 'dist', 'esm');
  const cjs = join(w.dir, 'dist', 'cjs');
  rmSync(join(w.dir, 'dist'), { recursive: true, force: true });

  const tsc = spawnSync(process.execPath, [TSC, '-p', join(w.dir, 'tsconfig.build.json')], { stdio: 'inherit' });
  if (tsc.status !== 0) throw new Error(`${w.name}: tsc failed (exit ${tsc.status ?? tsc.signal})`);

  const sources = filesUnder(src);
  const entryPoints = sources.filter((f) => f.endsWith('.ts') && !ESM_ONLY.has(relative(ROOT, f)));
  await build({
    entryPoints,
    outbase: src,
    outdir: cjs,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    sourcemap: true,
    logLevel: 'warning',
    // `import()` becomes require(): the CommonJS flavour loads the CommonJS flavour of its imports
    supported: { 'dynamic-import': false },
    define: { 'import.meta.url': '__keypoolImportMetaUrl' },
    banner: { js: "var __keypoolImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  });
  for (const f of filesUnder(esm).filter((f) => /\.d\.ts(\.map)?$/.test(f))) cpSync(f, join(cjs, relative(esm, f)));
  for (const f of sources.filter((f) => !f.endsWith('.ts'))) {
    cpSync(f, join(esm, relative(src, f)));
    cpSync(f, join(cjs, relative(src, f)));
  }
  writeFileSync(join(cjs, 'package.json'), '{ "type": "commonjs" }\n');
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const started = performance.now();
  for (const w of publicPackages()) {
    if (only.length > 0 && !only.some((o) => w.name === o || w.name === `@keypool/${o}`)) continue;
    const t = performance.now();
    await buildPackage(w);
    console.log(`built ${w.name} in ${Math.round(performance.now() - t)} ms`);
  }
  console.log(`build done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error((err as Error).message);
    process.exitCode = 1;
  });
}
