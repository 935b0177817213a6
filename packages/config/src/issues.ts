/**
 * zod's issues turned into ConfigIssues (`path: message`), with the field-name suggestions of
 * unknown fields. Generic: the root schema that knows the field names is a parameter.
 */
import { formatPath, type ConfigIssue } from '@keypool/core';
import { z } from 'zod';

/** A YAML document as plain data. */
export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type JsonObject = { [k: string]: Json };
/** A path into a document: field names and array indexes. */
export type Path = (string | number)[];

/** True for a mapping (not null, not an array). */
export function isObject(v: Json | undefined): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The schema that validates the value at `path`, wrappers (optional, default...) removed. */
export function schemaAt(schema: z.ZodType, path: Path): z.ZodType | undefined {
  let s: z.ZodType | undefined = unwrap(schema);
  for (const p of path) {
    if (s instanceof z.ZodObject && typeof p === 'string') s = (s.shape as Record<string, z.ZodType>)[p];
    else if (s instanceof z.ZodArray && typeof p === 'number') s = s.element as z.ZodType;
    else if (s instanceof z.ZodRecord && typeof p === 'string') s = s.valueType as z.ZodType;
    else return undefined;
    s = s && unwrap(s);
  }
  return s;
}

function unwrap(s: z.ZodType): z.ZodType {
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodNullable) {
      s = s.unwrap() as z.ZodType;
    } else if (s instanceof z.ZodPipe) {
      s = s.out instanceof z.ZodTransform ? (s.in as z.ZodType) : (s.out as z.ZodType);
    } else return s;
  }
}

/**
 * Unknown fields in objects whose schema is not strict (core's breaker, health, cooling, redisDown
 * and price entries strip unknown fields silently); strict ones are reported by zod itself.
 */
export function unknownFields(value: Json | undefined, schema: z.ZodType | undefined, path: Path): ConfigIssue[] {
  const s = schema && unwrap(schema);
  if (s instanceof z.ZodArray && Array.isArray(value)) return value.flatMap((v, i) => unknownFields(v, s.element as z.ZodType, [...path, i]));
  if (!isObject(value)) return [];
  if (s instanceof z.ZodRecord) return Object.entries(value).flatMap(([k, v]) => unknownFields(v, s.valueType as z.ZodType, [...path, k]));
  if (!(s instanceof z.ZodObject)) return [];
  const shape = s.shape as Record<string, z.ZodType>;
  const strict = s.def.catchall instanceof z.ZodNever;
  return Object.entries(value).flatMap(([k, v]): ConfigIssue[] => {
    if (k in shape) return unknownFields(v, shape[k], [...path, k]);
    if (strict) return [];
    return [unknownField(path, k, Object.keys(shape))];
  });
}

/**
 * zod issues as ConfigIssues; an unknown field becomes one issue per field, with a suggestion taken
 * from the fields `root` (the whole file's schema) declares at that path.
 */
export function toIssues(error: z.ZodError, prefix: Path, root: z.ZodType): ConfigIssue[] {
  return error.issues.flatMap((i): ConfigIssue[] => {
    const path = [...prefix, ...(i.path as Path)];
    if (i.code === 'unrecognized_keys') {
      const known = schemaAt(root, path);
      const names = known instanceof z.ZodObject ? Object.keys(known.shape) : [];
      return i.keys.map((k) => unknownField(path, k, names));
    }
    return [{ path: formatPath(path), message: i.message }];
  });
}

function unknownField(path: Path, name: string, known: string[]): ConfigIssue {
  const near = closest(name, known);
  return { path: formatPath(path), message: `unknown field '${name}'${near ? ` (did you mean '${near}'?)` : ''}` };
}

/** The name within edit distance 2 of `word` (case ignored), if there is one. */
function closest(word: string, names: string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const n of names) {
    const d = distance(word.toLowerCase(), n.toLowerCase());
    if (d < bestD) (best = n), (bestD = d);
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
