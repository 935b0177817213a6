/**
 * AWS Signature Version 4 verification of a request's `Authorization` header, as an AWS endpoint
 * does it: rebuild the canonical request from what arrived (method, path, query, the signed
 * headers, the payload's SHA-256), the string to sign, the signing key derived from the secret
 * access key, and compare signatures. The answers name AWS's error types and messages (never the
 * expected signature nor the canonical request, which real endpoints sometimes echo).
 *
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { FakeAwsCredentials } from './types.js';

const ALGORITHM = 'AWS4-HMAC-SHA256';

/** Why a request was refused: an AWS error type (400) and its message. */
export class SigV4Error extends Error {
  constructor(
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

/** What arrived, as the server saw it. */
export interface SignedRequestParts {
  method: string;
  /** The request target as sent (`/`, `/a%20b?x=1`). */
  url: string;
  /** Node's `req.rawHeaders`: names and values alternating, as received. */
  rawHeaders: string[];
  body: Buffer;
}

export interface VerifyOptions {
  service: string;
  region: string;
  credentials: readonly FakeAwsCredentials[];
  /** Server time, epoch ms. */
  now: number;
  maxClockSkewMs: number;
}

const sha256Hex = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();

/** RFC 3986 escaping, as SigV4 wants it (`encodeURIComponent` leaves !'()* alone). */
function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Non-S3 services: normalised path segments, each escaped again (the "double encoding"). */
function canonicalPath(path: string): string {
  const segments: string[] = [];
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  const normalised = `${path.startsWith('/') ? '/' : ''}${segments.join('/')}${segments.length > 0 && path.endsWith('/') ? '/' : ''}`;
  return escapeUri(normalised).replace(/%2F/g, '/');
}

function canonicalQuery(query: string): string {
  if (!query) return '';
  const pairs: Array<[string, string]> = [];
  for (const part of query.split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    const key = decodeURIComponent((i < 0 ? part : part.slice(0, i)).replace(/\+/g, ' '));
    const value = i < 0 ? '' : decodeURIComponent(part.slice(i + 1).replace(/\+/g, ' '));
    pairs.push([escapeUri(key), escapeUri(value)]);
  }
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

/** `20240102T030405Z` -> epoch ms, or NaN. */
export function parseAmzDate(text: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text);
  if (!m) return NaN;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]));
}

/** Epoch ms -> `20240102T030405Z`. */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

/** The SigV4 signing key: HMAC chain over date, region, service, "aws4_request". */
export function signingKey(secretAccessKey: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, date), region), service), 'aws4_request');
}

/**
 * Verify the request; returns the credentials it was signed with, or throws {@link SigV4Error}
 * (MissingAuthenticationTokenException, IncompleteSignatureException, UnrecognizedClientException,
 * InvalidSignatureException) the way an AWS JSON endpoint answers.
 */
export function verifySigV4(req: SignedRequestParts, options: VerifyOptions): FakeAwsCredentials {
  const headers = new Map<string, string[]>();
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!.toLowerCase();
    const list = headers.get(name) ?? [];
    list.push(req.rawHeaders[i + 1]!);
    headers.set(name, list);
  }
  const header = (name: string) => headers.get(name)?.join(',');

  const auth = header('authorization');
  if (!auth) throw new SigV4Error('MissingAuthenticationTokenException', 'Missing Authentication Token');
  const space = auth.indexOf(' ');
  const algorithm = space < 0 ? auth : auth.slice(0, space);
  if (algorithm !== ALGORITHM) throw new SigV4Error('IncompleteSignatureException', `Unsupported AWS 'algorithm': '${algorithm}'`);
  const fields = new Map<string, string>();
  for (const part of auth.slice(space + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const missing = ['Credential', 'SignedHeaders', 'Signature'].filter((f) => !fields.get(f));
  if (missing.length > 0) {
    throw new SigV4Error('IncompleteSignatureException', missing.map((f) => `Authorization header requires '${f}' parameter.`).join(' '));
  }
  const amzDate = header('x-amz-date');
  if (!amzDate) throw new SigV4Error('IncompleteSignatureException', "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
  const signedAt = parseAmzDate(amzDate);
  if (Number.isNaN(signedAt)) throw new SigV4Error('IncompleteSignatureException', `Date must be in ISO-8601 'basic format'. Got '${amzDate}'.`);

  const [accessKeyId = '', date = '', region = '', service = '', terminator = '', ...extra] = fields.get('Credential')!.split('/');
  if (!terminator || extra.length > 0) throw new SigV4Error('IncompleteSignatureException', 'Credential is malformed: expected <access key id>/<date>/<region>/<service>/aws4_request.');
  const creds = options.credentials.find((c) => c.accessKeyId === accessKeyId);
  if (!creds) throw new SigV4Error('UnrecognizedClientException', 'The security token included in the request is invalid.');
  const token = header('x-amz-security-token');
  if ((creds.sessionToken ?? undefined) !== token) throw new SigV4Error('UnrecognizedClientException', 'The security token included in the request is invalid.');

  if (date !== amzDate.slice(0, 8)) {
    throw new SigV4Error('InvalidSignatureException', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${date}' != '${amzDate.slice(0, 8)}', from '${amzDate}'.`);
  }
  if (region !== options.region) throw new SigV4Error('InvalidSignatureException', `Credential should be scoped to a valid region, not '${region}'. `.trim());
  if (service !== options.service) throw new SigV4Error('InvalidSignatureException', `Credential should be scoped to correct service: '${options.service}'. `.trim());
  if (terminator !== 'aws4_request') throw new SigV4Error('InvalidSignatureException', `Credential should be scoped with a valid terminator: 'aws4_request', not '${terminator}'.`);

  const skew = signedAt - options.now;
  if (skew < -options.maxClockSkewMs) {
    throw new SigV4Error(
      'InvalidSignatureException',
      `Signature expired: ${amzDate} is now earlier than ${formatAmzDate(options.now - options.maxClockSkewMs)} (${formatAmzDate(options.now)} - ${options.maxClockSkewMs / 60_000} min.)`,
    );
  }
  if (skew > options.maxClockSkewMs) {
    throw new SigV4Error(
      'InvalidSignatureException',
      `Signature not yet current: ${amzDate} is still later than ${formatAmzDate(options.now + options.maxClockSkewMs)} (${formatAmzDate(options.now)} + ${options.maxClockSkewMs / 60_000} min.)`,
    );
  }

  const signedHeaders = fields.get('SignedHeaders')!.split(';');
  if (!signedHeaders.includes('host')) throw new SigV4Error('InvalidSignatureException', "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  const sorted = [...signedHeaders].sort();
  if (sorted.join(';') !== signedHeaders.join(';') || new Set(signedHeaders).size !== signedHeaders.length) {
    throw new SigV4Error('InvalidSignatureException', 'SignedHeaders must be lowercase, sorted and without duplicates.');
  }
  const canonicalHeaders = signedHeaders.map((name) => {
    const values = headers.get(name);
    // a header that is signed but absent makes the signature wrong, as on AWS
    const value = (values ?? []).map((v) => v.replace(/[\r\n]/g, ' ').replace(/[ \t]+/g, ' ').replace(/^ | $/g, '')).join(',');
    return `${name}:${value}\n`;
  });

  const q = req.url.indexOf('?');
  const path = q < 0 ? req.url : req.url.slice(0, q);
  const query = q < 0 ? '' : req.url.slice(q + 1);
  // the payload line is the hash of the body that arrived, whatever X-Amz-Content-Sha256 claims
  // (the SDK sends and signs that header): a body changed in transit fails the signature
  const payloadHash = sha256Hex(req.body);
  const canonicalRequest = [req.method, canonicalPath(path), canonicalQuery(query), canonicalHeaders.join(''), signedHeaders.join(';'), payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = [ALGORITHM, amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  const expected = createHmac('sha256', signingKey(creds.secretAccessKey, date, region, service)).update(stringToSign).digest();

  const given = Buffer.from(fields.get('Signature')!, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new SigV4Error(
      'InvalidSignatureException',
      'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.',
    );
  }
  return creds;
}
