import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * The root of the package a module belongs to, as a directory URL (trailing slash), for the files a
 * package ships beside its code (core's `lua/`, a package.json's version). One rule for every layout
 * the code runs from: the sources (`src/x.ts` under tsx or vitest), the ESM build (`dist/esm/x.js`)
 * and the CommonJS build (`dist/cjs/x.js`, where `import.meta.url` is the build's shim), in this
 * repository or installed anywhere. The root is the nearest directory above the module whose
 * package.json has a name: `dist/cjs/package.json` only says `{"type":"commonjs"}`.
 */
export function packageRoot(moduleUrl: string): URL {
  const start = dirname(fileURLToPath(moduleUrl));
  for (let dir = start; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && typeof (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'string') {
      return pathToFileURL(dir + '/');
    }
    if (dirname(dir) === dir) throw new Error(`no package.json with a name above ${start}`);
  }
}
