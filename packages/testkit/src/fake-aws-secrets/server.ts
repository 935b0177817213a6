/**
 * The fake AWS Secrets Manager: node:http only, one process, state in memory.
 * See ./index.ts for what it does and ./types.ts for the options.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { delay, readBody } from '../http-util.js';
import { SigV4Error, verifySigV4 } from './sigv4.js';
import { AwsError, SecretStore } from './store.js';
import type {
  FakeAwsCredentials,
  FakeAwsFault,
  FakeOperationCounters,
  FakeOutage,
  FakeSecretsManager,
  FakeSecretsManagerCounters,
  FakeSecretsManagerOptions,
  FakeSecretsOperation,
} from './types.js';

const SERVICE = 'secretsmanager';
const CONTENT_TYPE = 'application/x-amz-json-1.1';
const MAX_BODY_BYTES = 1024 * 1024;
/** What AWS appends to x-amzn-ErrorType (the SDK keeps what is before the colon). */
const ERROR_TYPE_SUFFIX = ':http://internal.amazon.com/coral/com.amazonaws.secretsmanager/';

const OPERATIONS: readonly FakeSecretsOperation[] = [
  'CreateSecret',
  'GetSecretValue',
  'PutSecretValue',
  'UpdateSecretVersionStage',
  'DescribeSecret',
  'ListSecretVersionIds',
  'DeleteSecret',
];

type FaultState = FakeAwsFault & { remaining: number };

function checkFault(f: FakeAwsFault): void {
  if (!f || typeof f !== 'object') throw new TypeError('a fault must be an object');
  if (!['throttle', 'error', 'deny', 'latency', 'truncate'].includes(f.kind)) throw new TypeError('fault kind must be "throttle", "error", "deny", "latency" or "truncate"');
  if (f.operation !== undefined && !OPERATIONS.includes(f.operation)) throw new TypeError(`unknown operation ${String(f.operation)} (expected one of ${OPERATIONS.join(', ')})`);
  if (f.count !== undefined && (!Number.isInteger(f.count) || f.count < 1)) throw new TypeError('fault count must be an integer >= 1');
  if (f.kind === 'error' && f.status !== undefined && (!Number.isInteger(f.status) || f.status < 500 || f.status > 599)) throw new TypeError('error fault status must be a 5xx status');
  if (f.kind === 'latency' && (typeof f.ms !== 'number' || !Number.isFinite(f.ms) || f.ms < 0)) throw new TypeError('latency fault ms must be a number >= 0');
}

function serverError(status: number): AwsError {
  if (status === 500) return new AwsError(500, 'InternalServiceError', 'An error occurred on the server side.');
  if (status === 503) return new AwsError(503, 'ServiceUnavailable', 'Service Unavailable', true);
  return new AwsError(status, 'InternalFailure', 'The request processing has failed because of an unknown error, exception or failure.', true);
}


function newCounters(): FakeSecretsManagerCounters {
  return { requests: 0, errors: {}, aborted: 0, resetConnections: 0, inFlight: 0, maxInFlight: 0, operations: {} };
}

/** A generated access key in AWS's shapes (AKIA + 16, 40 characters of secret). */
function generatedCredentials(): FakeAwsCredentials {
  const upper = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const id = [...randomBytes(16)].map((b) => upper[b % upper.length]).join('');
  return { accessKeyId: `AKIA${id}`, secretAccessKey: randomBytes(30).toString('base64').replace(/\+/g, 'x').replace(/\//g, 'y') };
}

/** Start the fake Secrets Manager; resolves once it listens. */
export async function startFakeSecretsManager(options: FakeSecretsManagerOptions = {}): Promise<FakeSecretsManager> {
  const host = options.host ?? '127.0.0.1';
  const region = options.region ?? 'us-east-1';
  const accountId = options.accountId ?? '123456789012';
  const credentials = options.credentials?.length ? options.credentials.map((c) => ({ ...c })) : [generatedCredentials()];
  for (const c of credentials) {
    if (!c.accessKeyId || !c.secretAccessKey) throw new TypeError('every credential needs accessKeyId and secretAccessKey');
  }
  const maxClockSkewMs = options.maxClockSkewMs ?? 5 * 60_000;
  const initialFaults = (options.faults ?? []).map((f) => {
    checkFault(f);
    return structuredClone(f);
  });
  const store = new SecretStore(region, accountId, options.secrets ?? []);

  let counters = newCounters();
  let faults: FaultState[] = [];
  let outage: FakeOutage | false = false;
  const sockets = new Set<Socket>();

  function addFault(f: FakeAwsFault): void {
    checkFault(f);
    faults.push({ ...structuredClone(f), remaining: f.count ?? Infinity });
  }
  for (const f of initialFaults) addFault(f);

  /** The first fault of one of `kinds` matching `op`, its count used. */
  function takeFault(op: FakeSecretsOperation, kinds: ReadonlyArray<FakeAwsFault['kind']>): FaultState | undefined {
    const f = faults.find((x) => kinds.includes(x.kind) && (x.operation === undefined || x.operation === op) && x.remaining > 0);
    if (!f) return undefined;
    f.remaining--;
    if (f.remaining <= 0) faults = faults.filter((x) => x !== f);
    return f;
  }

  function opCounters(op: FakeSecretsOperation): FakeOperationCounters {
    return (counters.operations[op] ??= { requests: 0, ok: 0, errors: {}, aborted: 0 });
  }

  function dispatch(op: FakeSecretsOperation, body: Record<string, unknown>): Record<string, unknown> {
    switch (op) {
      case 'CreateSecret':
        return store.createSecret(body);
      case 'GetSecretValue':
        return store.getSecretValue(body);
      case 'PutSecretValue':
        return store.putSecretValue(body);
      case 'UpdateSecretVersionStage':
        return store.updateSecretVersionStage(body);
      case 'DescribeSecret':
        return store.describeSecret(body);
      case 'ListSecretVersionIds':
        return store.listSecretVersionIds(body);
      case 'DeleteSecret':
        return store.deleteSecret(body);
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const c = counters;
    c.requests++;
    c.inFlight++;
    c.maxInFlight = Math.max(c.maxInFlight, c.inFlight);
    const gone = new AbortController();
    let op: FakeSecretsOperation | undefined;
    res.on('close', () => {
      c.inFlight--;
      if (!res.writableFinished) {
        c.aborted++;
        if (op) opCounters(op).aborted++;
        gone.abort();
      }
    });

    const send = (status: number, body: unknown, extra: Record<string, string> = {}, truncate = false) => {
      if (res.destroyed || res.headersSent) return;
      const full = JSON.stringify(body);
      const data = truncate ? full.slice(0, Math.max(1, full.length - 16)) : full;
      res.writeHead(status, {
        'content-type': CONTENT_TYPE,
        'content-length': String(Buffer.byteLength(data)),
        'x-amzn-requestid': randomUUID(),
        ...extra,
      });
      res.end(data);
    };
    const fail = (err: AwsError) => {
      c.errors[err.type] = (c.errors[err.type] ?? 0) + 1;
      if (op) {
        const oc = opCounters(op);
        oc.errors[err.type] = (oc.errors[err.type] ?? 0) + 1;
      }
      send(err.status, { __type: err.type, [err.frontEnd ? 'message' : 'Message']: err.message }, { 'x-amzn-errortype': `${err.type}${ERROR_TYPE_SUFFIX}` });
    };

    const raw = await readBody(req, MAX_BODY_BYTES);
    try {
      if (raw === null) throw new AwsError(413, 'RequestEntityTooLargeException', 'Request is too large.', true);
      const target = req.headers['x-amz-target'];
      const m = typeof target === 'string' ? /^secretsmanager\.(\w+)$/.exec(target) : null;
      if (req.method !== 'POST' || !m || !OPERATIONS.includes(m[1] as FakeSecretsOperation)) {
        throw new AwsError(400, 'UnknownOperationException', `Unknown operation ${typeof target === 'string' ? target : '(no X-Amz-Target)'}`, true);
      }
      op = m[1] as FakeSecretsOperation;
      opCounters(op).requests++;

      const slow = takeFault(op, ['latency']);
      if (slow && slow.kind === 'latency' && !(await delay(slow.ms, gone.signal))) return;

      try {
        verifySigV4({ method: req.method, url: req.url ?? '/', rawHeaders: req.rawHeaders, body: raw }, { service: SERVICE, region, credentials, now: Date.now(), maxClockSkewMs });
      } catch (e) {
        if (e instanceof SigV4Error) throw new AwsError(400, e.type, e.message, true);
        throw e;
      }
      const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
      if (contentType !== CONTENT_TYPE) throw new AwsError(400, 'UnknownOperationException', `Unsupported Content-Type ${contentType || '(none)'}: use ${CONTENT_TYPE}`, true);

      const fault = takeFault(op, ['throttle', 'error', 'deny', 'truncate']);
      if (fault?.kind === 'throttle') throw new AwsError(400, 'ThrottlingException', 'Rate exceeded', true);
      if (fault?.kind === 'error') throw serverError(fault.status ?? 500);
      if (fault?.kind === 'deny') {
        throw new AwsError(
          400,
          'AccessDeniedException',
          `User: arn:aws:iam::${accountId}:user/fake is not authorized to perform: secretsmanager:${op} because no identity-based policy allows the secretsmanager:${op} action`,
          true,
        );
      }

      let body: unknown;
      try {
        body = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
      } catch {
        throw new AwsError(400, 'SerializationException', 'The request body is not valid JSON.', true);
      }
      if (!body || typeof body !== 'object' || Array.isArray(body)) throw new AwsError(400, 'SerializationException', 'The request body must be a JSON object.', true);
      const out = dispatch(op, body as Record<string, unknown>);
      opCounters(op).ok++;
      send(200, out, {}, fault?.kind === 'truncate');
    } catch (e) {
      if (e instanceof AwsError) return fail(e);
      throw e;
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      // a bug of the fake: say so without taking the process down
      if (!res.headersSent && !res.destroyed) {
        const data = JSON.stringify({ __type: 'InternalServiceError', Message: `fake-aws-secrets internal error: ${(err as Error)?.message ?? err}` });
        res.writeHead(500, { 'content-type': CONTENT_TYPE, 'x-amzn-errortype': `InternalServiceError${ERROR_TYPE_SUFFIX}` });
        res.end(data);
      } else res.destroy();
    });
  });
  server.on('connection', (socket) => {
    if (outage === 'reset') {
      counters.resetConnections++;
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  const closeListener = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
    });

  await listen(options.port ?? 0);
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let stopped: Promise<void> | undefined;
  let outageChange: Promise<void> = Promise.resolve();

  async function applyOutage(next: FakeOutage | false): Promise<void> {
    if (stopped) return;
    const before = outage;
    outage = next;
    if (next === 'refuse' && before !== 'refuse') await closeListener();
    if (next === 'reset') for (const s of sockets) s.destroy();
    if (next !== 'refuse' && before === 'refuse') await listen(port);
  }

  const api: FakeSecretsManager = {
    url,
    port,
    region,
    accountId,
    credentials: { ...credentials[0]! },
    stop() {
      stopped ??= outageChange.then(closeListener);
      return stopped;
    },
    counters() {
      return structuredClone(counters);
    },
    resetCounters() {
      counters = newCounters();
    },
    async reset() {
      await api.setOutage(false);
      store.reset();
      counters = newCounters();
      faults = [];
      for (const f of initialFaults) addFault(f);
    },
    setFault: addFault,
    clearFaults() {
      faults = [];
    },
    faults() {
      return faults.map(({ remaining, ...f }) => ({ ...structuredClone(f), ...(Number.isFinite(remaining) ? { count: remaining } : {}) }) as FakeAwsFault);
    },
    setOutage(next) {
      if (next !== false && next !== 'refuse' && next !== 'reset') throw new TypeError('outage must be "refuse", "reset" or false');
      outageChange = outageChange.then(() => applyOutage(next));
      return outageChange;
    },
    secret(id) {
      return store.info(id);
    },
  };
  return api;
}
