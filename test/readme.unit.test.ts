import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { BEGIN, END, PAGE, configReference } from '../scripts/config-reference.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

it('the configuration reference (docs/configuration.md) matches the config schema (run npm run docs:config)', () => {
  const page = readFileSync(PAGE, 'utf8');
  const start = page.indexOf(BEGIN);
  const end = page.indexOf(END);
  expect(start).toBeGreaterThan(0);
  expect(page.slice(start + BEGIN.length, end).trim()).toBe(configReference());
});

it('the README quickstart is two commands: the demo and the test suite that .ci/run runs', () => {
  const block = /## Quickstart[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
  const commands = block.split('\n').filter(Boolean).map((l) => l.replace(/\s+#.*$/, '').trim());
  expect(commands).toEqual(['npm ci && npm run demo', 'npm test']);
  const ci = readFileSync(new URL('../.ci/run', import.meta.url), 'utf8');
  expect(ci).toMatch(/^npm test 2>&1 \| tee "\$out" \|\| status=\$\?$/m);
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  expect(pkg.scripts.demo).toBeDefined();
});
