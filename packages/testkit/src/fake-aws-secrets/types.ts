/**
 * Public types of the fake AWS Secrets Manager (see ./index.ts for the overview).
 */

/** An AWS access key the fake accepts (SigV4 is verified against its secret access key). */
export interface FakeAwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** When set, requests signed with this key must carry it as `X-Amz-Security-Token`. */
  sessionToken?: string;
}

/** A secret present from the start (and again after {@link FakeSecretsManager.reset}). */
export interface FakeSecretSeed {
  name: string;
  /** The first version's SecretString (AWSCURRENT). Absent with no `secretBinary`: a secret with no version. */
  secretString?: string;
  /** The first version's SecretBinary. */
  secretBinary?: Uint8Array;
  description?: string;
}

/** The operations the fake implements (the `X-Amz-Target: secretsmanager.<Operation>` names). */
export type FakeSecretsOperation =
  | 'CreateSecret'
  | 'GetSecretValue'
  | 'PutSecretValue'
  | 'UpdateSecretVersionStage'
  | 'DescribeSecret'
  | 'ListSecretVersionIds'
  | 'DeleteSecret';

/**
 * An injected fault. Faults are checked in the order they were set; the first one that matches the
 * request applies and uses one of its `count`. `latency` is waited before anything else (so it also
 * delays a request that then fails authentication); the others apply after authentication, as on
 * AWS where a throttled or failed request was first authenticated.
 */
export type FakeAwsFault = {
  /** Only requests for this operation. Absent: every operation. */
  operation?: FakeSecretsOperation;
  /** Requests the fault affects, then it is gone. Absent: until cleared. */
  count?: number;
} & (
  | /** 400 ThrottlingException "Rate exceeded", as the AWS front end answers. */ { kind: 'throttle' }
  | /** 500 InternalServiceError, 503 ServiceUnavailable (any other 5xx: InternalFailure). */ { kind: 'error'; status?: number }
  | /** 400 AccessDeniedException: the caller's IAM policy does not allow the operation. */ { kind: 'deny' }
  | /** Wait `ms` before handling the request (answered in full afterwards, unless the client went away). */ { kind: 'latency'; ms: number }
  | /** Handle the request, then answer 200 with the JSON body cut short by 16 bytes (a broken proxy). */ { kind: 'truncate' }
);

/**
 * How the fake is unreachable: `refuse` stops listening (clients get ECONNREFUSED, open
 * connections are closed); `reset` accepts connections and destroys them at once (ECONNRESET).
 */
export type FakeOutage = 'refuse' | 'reset';

/** What happened to one operation. */
export interface FakeOperationCounters {
  /** Requests that named this operation (any outcome). */
  requests: number;
  /** 200 answers (truncated ones included). */
  ok: number;
  /** Error answers by `__type` (ThrottlingException, InvalidSignatureException...). */
  errors: Record<string, number>;
  /** Requests whose client went away before the answer was sent (an aborted SDK call). */
  aborted: number;
}

export interface FakeSecretsManagerCounters {
  /** Every HTTP request that reached the server (unknown operations included). */
  requests: number;
  /** Error answers by `__type`, every operation together. */
  errors: Record<string, number>;
  /** Requests whose client went away before the answer was sent. */
  aborted: number;
  /** Connections destroyed by a `reset` outage. */
  resetConnections: number;
  inFlight: number;
  maxInFlight: number;
  /** Per operation (only those that were called). */
  operations: Partial<Record<FakeSecretsOperation, FakeOperationCounters>>;
}

/** One version of a secret as the fake holds it (for assertions; AWS shows this only through its API). */
export interface FakeSecretVersionInfo {
  versionId: string;
  stages: string[];
  secretString?: string;
  secretBinary?: Uint8Array;
  /** Epoch ms. */
  createdDate: number;
}

export interface FakeSecretInfo {
  name: string;
  arn: string;
  /** Every version in creation order, deprecated ones (no stage) included. */
  versions: FakeSecretVersionInfo[];
  /** Epoch ms when it will be deleted, if DeleteSecret scheduled it. */
  deletionDate?: number;
}

/** Options of {@link startFakeSecretsManager}. */
export interface FakeSecretsManagerOptions {
  /** Default 0: a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The region requests must be signed for (the credential scope). Default us-east-1. */
  region?: string;
  /** Account id in ARNs. Default 123456789012. */
  accountId?: string;
  /** Accepted access keys. Default: one generated key, {@link FakeSecretsManager.credentials}. */
  credentials?: FakeAwsCredentials[];
  /** Secrets present from the start. */
  secrets?: FakeSecretSeed[];
  /** Largest difference between the request's X-Amz-Date and the server clock. Default 5 minutes, as AWS. */
  maxClockSkewMs?: number;
  /** Faults active from the start (and again after reset). */
  faults?: FakeAwsFault[];
}

/** A running fake Secrets Manager. */
export interface FakeSecretsManager {
  /** The endpoint for SDK clients: `http://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  readonly region: string;
  readonly accountId: string;
  /** The first accepted access key (give it to the SDK as static credentials). */
  readonly credentials: FakeAwsCredentials;
  /** Close the server and every connection. Idempotent. */
  stop(): Promise<void>;
  counters(): FakeSecretsManagerCounters;
  /** Zero the counters. */
  resetCounters(): void;
  /** Back to the start: secrets as seeded, counters zeroed, faults as given, no outage. */
  reset(): Promise<void>;
  /** Add a fault (see {@link FakeAwsFault}). */
  setFault(fault: FakeAwsFault): void;
  clearFaults(): void;
  /** The active faults, with what is left of their count. */
  faults(): FakeAwsFault[];
  /** Start an outage, or end it with `false` (the server listens again on the same port). */
  setOutage(outage: FakeOutage | false): Promise<void>;
  /** A secret's versions and stages, by name or ARN; undefined when there is none. */
  secret(id: string): FakeSecretInfo | undefined;
}
