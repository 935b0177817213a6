import { createHmac } from 'node:crypto';

/**
 * The stable id of a key: 16 hex chars of HMAC-SHA256 over the secret with a fixed label.
 * The same secret always gets the same id in every process, so a fleet agrees without sharing
 * the secret; 64 bits of a keyed hash of a high-entropy secret reveal nothing usable.
 */
export function keyIdOf(secret: string): string {
  return createHmac('sha256', 'keypool/key-id/v1').update(secret).digest('hex').slice(0, 16);
}

/**
 * A display hint like `sk-...a1b2` or `sk-proj-...a1b2`: the well-known prefix and the last four
 * characters, as providers' own dashboards show. Short secrets (under 20 chars) show only `...` and
 * the last two characters, so a hint never reveals a meaningful part of any secret.
 */
export function hintOf(secret: string): string {
  if (secret.length < 20) return `...${secret.slice(-2)}`;
  // only providers' published prefixes: anything else could be part of the secret
  const prefix = /^(sk-(?:proj-|svcacct-|admin-|or-v1-|ant-api\d\d-)?|gsk_|xai-|pplx-|nvapi-)/.exec(secret)?.[1] ?? '';
  return `${prefix}...${secret.slice(-4)}`;
}
