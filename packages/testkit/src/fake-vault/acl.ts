/**
 * The small part of Vault's ACL the fake needs: HCL policies of `path` blocks with `capabilities`,
 * globs (`*` at the end, `+` for one segment), and Vault's duration strings.
 */

export type Capability = 'create' | 'read' | 'update' | 'patch' | 'delete' | 'list' | 'sudo' | 'deny';

export interface PolicyRule {
  pattern: string;
  capabilities: Set<Capability>;
  /** Higher wins among the rules of one policy that match a path (Vault takes the most specific). */
  specificity: number;
  regex: RegExp;
}

const CAPABILITIES = new Set<Capability>(['create', 'read', 'update', 'patch', 'delete', 'list', 'sudo', 'deny']);

/** Parse `path "<glob>" { capabilities = ["read", ...] }` blocks. Throws on anything else it can read. */
export function parsePolicy(hcl: string): PolicyRule[] {
  const rules: PolicyRule[] = [];
  const text = hcl.replace(/#[^\n]*/g, '').replace(/\/\/[^\n]*/g, '');
  const block = /path\s+"([^"]*)"\s*\{([^}]*)\}/g;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = block.exec(text))) {
    if (text.slice(consumed, m.index).trim()) throw new Error(`failed to parse policy: unexpected ${JSON.stringify(text.slice(consumed, m.index).trim().slice(0, 40))}`);
    consumed = m.index + m[0].length;
    const pattern = m[1]!.replace(/^\/+/, '');
    const caps = /capabilities\s*=\s*\[([^\]]*)\]/.exec(m[2]!);
    if (!caps) throw new Error(`failed to parse policy: path "${pattern}" has no capabilities`);
    const list = [...caps[1]!.matchAll(/"([^"]*)"/g)].map((c) => c[1]!);
    for (const c of list) if (!CAPABILITIES.has(c as Capability)) throw new Error(`failed to parse policy: unknown capability "${c}"`);
    rules.push({ pattern, capabilities: new Set(list as Capability[]), specificity: specificity(pattern), regex: globRegex(pattern) });
  }
  if (text.slice(consumed).trim()) throw new Error(`failed to parse policy: unexpected ${JSON.stringify(text.slice(consumed).trim().slice(0, 40))}`);
  return rules;
}

function globRegex(pattern: string): RegExp {
  const glob = pattern.endsWith('*');
  const body = (glob ? pattern.slice(0, -1) : pattern)
    .split('+')
    .map((s) => s.replace(/[.*?^${}()|[\]\\]/g, '\\$&'))
    .join('[^/]+');
  return new RegExp(`^${body}${glob ? '.*' : ''}$`);
}

/** Exact paths beat globs; fewer `+` and longer prefixes beat the rest (an approximation of Vault's order). */
function specificity(pattern: string): number {
  const glob = pattern.endsWith('*') ? 0 : 1_000_000;
  const plus = (pattern.match(/\+/g) ?? []).length;
  return glob + pattern.length * 10 - plus * 5;
}

/** The capabilities `policies` grant on `path` (most specific rule of each policy, merged; deny wins). */
export function capabilitiesOn(policies: Iterable<PolicyRule[]>, path: string): Set<Capability> {
  const out = new Set<Capability>();
  for (const rules of policies) {
    let best: PolicyRule | undefined;
    for (const r of rules) if (r.regex.test(path) && (!best || r.specificity > best.specificity)) best = r;
    if (!best) continue;
    if (best.capabilities.has('deny')) return new Set(['deny']);
    for (const c of best.capabilities) out.add(c);
  }
  return out;
}

/** Vault's duration fields: a number of seconds, or `"90"`, `"2s"`, `"5m"`, `"1h30m"`, `"768h"`, `"1d"`. */
export function parseDurationSeconds(input: unknown, field: string): number {
  if (input === undefined || input === null || input === '') return 0;
  if (typeof input === 'number' && Number.isFinite(input) && input >= 0) return Math.floor(input);
  if (typeof input === 'string') {
    const s = input.trim();
    if (/^\d+$/.test(s)) return Number(s);
    const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
    let total = 0;
    let consumed = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(s))) {
      if (m.index !== consumed) break;
      consumed = m.index + m[0].length;
      const n = Number(m[1]);
      total += m[2] === 'ms' ? n / 1000 : m[2] === 's' ? n : m[2] === 'm' ? n * 60 : m[2] === 'h' ? n * 3600 : n * 86400;
    }
    if (consumed === s.length && consumed > 0) return Math.floor(total);
  }
  throw new Error(`error converting input ${JSON.stringify(input)} for field "${field}": invalid duration`);
}

/** `1h2m3s` the way Vault prints a duration in warnings. */
export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${s}s`;
}
