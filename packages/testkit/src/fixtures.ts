/**
 * The fixtures the integration tests run as child processes (packages/<pkg>/test/fixtures/*.ts),
 * bundled once per test run by the global setup.
 *
 * Under `node --import tsx fixture.ts` a child took 2 to 7 s to load on a busy 2-core machine
 * (about 1 s of CPU: tsx starts its esbuild service and hooks every module the child loads), and
 * the integration tests start dozens of children per project. Here esbuild bundles every fixture
 * once, from the sources (`@keypool/*` resolved with the @keypool/source condition, as vitest
 * resolves them; third-party packages stay imports of node_modules), and a child runs
 * `node <bundle>.mjs`, which loaded in 0.8 to 2 s (0.4 s of CPU) on the same machine. Each source file keeps its own
 * `import.meta.url`, so code that finds files next to it (the Lua scripts, package.json, the
 * dashboard page) finds the same files as under tsx.
 *
 * Not imported by index.ts: only the global setup loads esbuild.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build, type Plugin } from 'esbuild';

/** The directory, under the repository's node_modules (so the bundles' imports of packages resolve), the bundles of a run go to. */
export const FIXTURE_BUNDLES = 'node_modules/.cache/keypool-fixtures';

/** Every fixture a child process runs: the .ts files of packages/<pkg>/test/fixtures that do not import vitest (helpers for the test process do). */
export function fixtureFiles(root: string): string[] {
  const files: string[] = [];
  for (const pkg of readdirSync(join(root, 'packages'))) {
    const dir = join(root, 'packages', pkg, 'test', 'fixtures');
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const file = join(dir, name);
      if (name.endsWith('.ts') && !/from 'vitest'/.test(readFileSync(file, 'utf8'))) files.push(file);
    }
  }
  return files;
}

/** Bundle directories (`<project>-<pid>`) left by runs that were killed before their teardown. */
async function removeOrphans(parent: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(/-(\d+)$/.exec(n)?.[1]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) continue;
    try {
      process.kill(pid, 0); // still running: its bundles are in use
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') await rm(join(parent, n), { recursive: true, force: true });
    }
  }
}

/**
 * Bundles every fixture of `root` into a fresh directory `name` of FIXTURE_BUNDLES, each at its path
 * relative to `root` with `.mjs` for `.ts` (where fixtureArgs in index.ts looks); returns it and its removal.
 */
export async function bundleFixtures(root: string, name: string): Promise<{ dir: string; stop(): Promise<void> }> {
  const dir = join(root, FIXTURE_BUNDLES, name);
  await removeOrphans(join(root, FIXTURE_BUNDLES));
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const remove = () => rm(dir, { recursive: true, force: true });
  try {
    await build({
      entryPoints: fixtureFiles(root),
      outbase: root,
      outdir: dir,
      outExtension: { '.js': '.mjs' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      conditions: ['@keypool/source'],
      // no source map: under --enable-source-maps every error's stack is mapped, a cost the children
      // of the timing tests should not pay; esbuild names each source file in a comment of the bundle
      logLevel: 'silent',
      plugins: [sourcesOnly(), ownImportMetaUrl()],
    });
  } catch (err) {
    await remove();
    throw err;
  }
  return { dir, stop: remove };
}

/** Packages other than @keypool/* stay imports (resolved from node_modules when the child runs). */
function sourcesOnly(): Plugin {
  return {
    name: 'keypool-sources-only',
    setup(b) {
      b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@keypool/') ? undefined : { path: args.path, external: true }));
    },
  };
}

/** `import.meta.url` in a source file is that file's URL, not the bundle's. */
function ownImportMetaUrl(): Plugin {
  return {
    name: 'keypool-own-import-meta-url',
    setup(b) {
      b.onLoad({ filter: /\.[cm]?ts$/ }, async (args) => ({
        contents: (await readFile(args.path, 'utf8')).replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)),
        loader: 'ts',
      }));
    },
  };
}
