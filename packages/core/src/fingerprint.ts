import { createHmac } from 'node:crypto';

/** The base URL a key is for when its spec names none (OpenAI's API). */
export const DEFAULT_BASE_URL = 'https://api.openai.com/v1';

/**
 * The destination of a key in one spelling: the base URL parsed (scheme and host lowercased, the
 * scheme's default port dropped), without trailing slashes, user info or fragment. The query stays:
 * it is part of where requests go. Two spellings of one place give the same string.
 */
export function destinationOf(baseURL: string): string {
  const u = new URL(baseURL);
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}${u.search}`;
}

/** The origin of a base URL (scheme://host[:port]), what `upstreams.allow` lists. */
export function originOf(baseURL: string): string {
  return new URL(baseURL).origin;
}

/**
 * The stable id of a key: 16 hex chars of HMAC-SHA256 (label `keypool/key-id/v2`) over the key's
 * destination ({@link destinationOf} its base URL), a newline, and the secret. The same secret for
 * the same destination always gets the same id in every process, so a fleet agrees without sharing
 * the secret; the same secret for another destination is another key, so nothing that knows a key
 * by its id (Redis, the admin API) can send its secret elsewhere. 64 bits of a keyed hash of a
 * high-entropy secret reveal nothing usable.
 *
 * The v1 scheme (label keypool/key-id/v1, over the secret alone) gave other ids: on upgrade every
 * key is registered again under its new id, once (docs/security.md).
 */
export function keyIdOf(secret: string, baseURL: string = DEFAULT_BASE_URL): string {
  return createHmac('sha256', 'keypool/key-id/v2').update(`${destinationOf(baseURL)}\n${secret}`).digest('hex').slice(0, 16);
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
