/**
 * Reading the YAML file and `${VAR}` interpolation. Nothing here knows the sections: the schema
 * that decides whether an interpolated string becomes a number or a boolean is a parameter.
 */
import { readFileSync } from 'node:fs';
import { formatPath, type ConfigIssue } from '@keypool/core';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { schemaAt, type Json, type JsonObject, type Path } from './issues.js';

/** The file parsed to plain data, or every syntax problem as `file:line:column: message`. */
export function readYaml(file: string): { ok: true; value: JsonObject } | { ok: false; issues: ConfigIssue[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (err as Error).message;
    return { ok: false, issues: [{ path: file, message: `cannot read the config file: ${why}` }] };
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const lines = text.split('\n');
    return {
      ok: false,
      issues: doc.errors.map((e) => {
        const at = e.linePos?.[0];
        // `[${MODEL}]` is the usual way to get here: in flow collections braces are syntax.
        const line = lines[(at?.line ?? 0) - 1] ?? '';
        const flowRef = line.includes('${') && /[[\]{}]/.test(line.replace(/\$\{[^}]*\}/g, ''));
        const hint = flowRef ? ' (inside [ ] or { }, quote a reference: "${VAR}")' : '';
        return { path: at ? `${file}:${at.line}:${at.col}` : file, message: yamlMessage(e.message) + hint };
      }),
    };
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    return { ok: false, issues: [{ path: file, message: yamlMessage((err as Error).message) }] };
  }
  if (value === null || value === undefined) return { ok: true, value: {} };
  if (typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, issues: [{ path: file, message: 'expected a mapping of sections at the top level (pool, keys, redis, server, routes...)' }] };
  }
  return { ok: true, value: value as JsonObject };
}

/**
 * yaml's message without its position suffix and source excerpt, and without quoted tokens longer
 * than a few characters: either could be a secret written on the line that is wrong.
 */
function yamlMessage(message: string): string {
  const first = message.replace(/ at line \d+, column \d+:[\s\S]*$/, '').split('\n')[0]!;
  return first.replace(/:?\s*"[^"]{4,}"/g, '').trim();
}

/**
 * A copy of `value` with `${VAR}` and `${VAR:-default}` replaced in every string (`$${` writes a
 * literal `${`). A string that was interpolated where the schema wants a number or a boolean is
 * converted (`port: ${PORT:-8080}`), and nowhere else (a numeric token stays a string). `root` is the
 * schema of the whole document.
 */
export function interpolate(value: unknown, path: Path, env: NodeJS.ProcessEnv, issues: ConfigIssue[], root: z.ZodType): Json {
  if (typeof value === 'string') {
    if (!value.includes('$')) return value;
    let problem = false;
    const out = value.replace(/\$\$|\$\{([^}]*)\}/g, (whole, inner: string | undefined) => {
      if (whole === '$$') return '$';
      const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::-([\s\S]*))?$/.exec(inner!);
      if (!m) {
        issues.push({ path: formatPath(path), message: 'malformed ${...} reference: write ${VAR} or ${VAR:-default} ($${ for a literal ${)' });
        problem = true;
        return '';
      }
      const [, name, fallback] = m;
      const v = env[name!];
      if (fallback !== undefined) return v === undefined || v === '' ? fallback : v;
      if (v === undefined) {
        issues.push({ path: formatPath(path), message: `environment variable ${name} is not set` });
        problem = true;
        return '';
      }
      return v;
    });
    return problem || out === value ? out : coerce(out, path, root);
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, [...path, i], env, issues, root));
  if (value !== null && typeof value === 'object') {
    // fromEntries defines own properties: a `__proto__:` field stays a field (and is reported unknown).
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, [...path, k], env, issues, root)]));
  }
  return value as Json;
}

function coerce(text: string, path: Path, root: z.ZodType): Json {
  const want = schemaAt(root, path);
  if (want instanceof z.ZodNumber && /^-?\d+(\.\d+)?$/.test(text.trim())) return Number(text);
  if (want instanceof z.ZodBoolean && /^(true|false)$/.test(text.trim())) return text.trim() === 'true';
  return text;
}
