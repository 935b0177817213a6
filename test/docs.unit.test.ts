/**
 * The docs are checked against the tree, so a page cannot quietly go stale: the packages, Lua scripts
 * and `keypool` commands that docs/architecture.md lists are exactly those that exist (both ways),
 * every `*.lua` a page names exists, and every relative link of README.md and docs/*.md points at a
 * file and, with a #fragment, at a heading of it.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { processContext } from '../packages/cli/src/context.js';
import { buildProgram } from '../packages/cli/src/program.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');
const PAGES = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** The page without its fenced code blocks (a `# comment` in a shell block is not a heading). */
function prose(md: string): string {
  return md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** The text under `## <title>`, up to the next heading of level 2 or 1. */
function section(md: string, title: string): string {
  const lines = prose(md).split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${title}`);
  if (start < 0) throw new Error(`no section "## ${title}"`);
  const end = lines.findIndex((l, i) => i > start && /^#{1,2} /.test(l));
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n');
}

/** The body rows of the markdown tables in `text`, as cells (header and separator rows dropped). */
function tableRows(text: string): string[][] {
  const rows: string[][] = [];
  let inTable = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith('|')) {
      inTable = false;
      continue;
    }
    const cells = line.replace(/^\||\|$/g, '').split(/(?<!\\)\|/).map((c) => c.trim());
    if (!inTable) inTable = true; // the header row
    else if (!cells.every((c) => /^:?-+:?$/.test(c))) rows.push(cells);
  }
  return rows;
}

const codeSpans = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
const sorted = (xs: Iterable<string>): string[] => [...xs].sort();

/** GitHub's anchor for a heading: lower case, markup and most punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  const text = heading.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*]/g, '');
  // github-slugger keeps letters, marks, digits, connector punctuation (_), spaces and hyphens
  return text.trim().toLowerCase().replace(/[^\p{L}\p{M}\p{N}\p{Pc}\s-]/gu, '').replace(/\s/g, '-');
}

/** The anchors a markdown file offers: its headings' slugs, repeats numbered as GitHub does. */
function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of prose(md).matchAll(/^#{1,6} (.+)$/gm)) {
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

const architecture = read('docs/architecture.md');

describe('docs/architecture.md lists what the tree holds', () => {
  it('packages: the directories under packages/', () => {
    const listed = tableRows(section(architecture, 'Packages')).map((r) => codeSpans(r[0]!)[0]);
    const real = readdirSync(join(ROOT, 'packages')).filter((d) => existsSync(join(ROOT, 'packages', d, 'package.json')));
    expect(sorted(listed.filter((p): p is string => p !== undefined))).toEqual(sorted(real));
  });

  it('Lua scripts: the files packages/core/lua/*.lua', () => {
    const listed = tableRows(section(architecture, 'Lua scripts')).map((r) => codeSpans(r[0]!)[0]);
    const real = readdirSync(join(ROOT, 'packages/core/lua')).filter((f) => f.endsWith('.lua'));
    expect(sorted(listed.filter((s): s is string => s !== undefined))).toEqual(sorted(real));
  });

  it('CLI: the commands and subcommands `keypool` registers', () => {
    const listed = Object.fromEntries(
      tableRows(section(architecture, 'The `keypool` command')).map((r) => [codeSpans(r[0]!)[0], sorted(codeSpans(r[1] ?? ''))]),
    );
    // the process context with its output silenced: whatever fields a Context grows, this one has them
    const program = buildProgram({ ...processContext(), out: () => {}, err: () => {} });
    const real = Object.fromEntries(program.commands.map((c) => [c.name(), sorted(c.commands.map((s) => s.name()))]));
    expect(listed).toEqual(real);
  });
});

describe('README.md and docs/*.md', () => {
  it('name only Lua files that exist (scripts or includes)', () => {
    const lua = new Set([...readdirSync(join(ROOT, 'packages/core/lua')), ...readdirSync(join(ROOT, 'packages/core/lua/includes'))]);
    const stale = PAGES.flatMap((page) =>
      [...read(page).matchAll(/([\w-]+\.lua)\b/g)].map((m) => m[1]!).filter((f) => !lua.has(f)).map((f) => `${page}: ${f}`),
    );
    expect(stale).toEqual([]);
  });

  it('link only to files and headings that exist', () => {
    const broken: string[] = [];
    for (const page of PAGES) {
      // inline code is not a link: `[a](b)` in backticks is an example
      const text = prose(read(page)).replace(/`[^`\n]*`/g, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
        const [path = '', fragment] = target.split('#');
        const file = path === '' ? join(ROOT, page) : join(ROOT, dirname(page), decodeURIComponent(path));
        if (!existsSync(file)) {
          broken.push(`${page}: ${target} (no ${relative(ROOT, file)})`);
        } else if (fragment !== undefined && !(statSync(file).isFile() && file.endsWith('.md') && anchors(readFileSync(file, 'utf8')).has(fragment))) {
          broken.push(`${page}: ${target} (no heading #${fragment})`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it('the README stays a guide: under 20 KB, the reference on the docs/ pages', () => {
    expect(Buffer.byteLength(read('README.md'))).toBeLessThan(20 * 1024);
  });
});
