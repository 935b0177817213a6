/**
 * A fake AWS Secrets Manager for tests: a real HTTP server (node:http) speaking AWS's JSON 1.1
 * protocol, so the real `@aws-sdk/client-secrets-manager` talks to it unchanged (endpoint + static
 * credentials) and keypool's AWS source is tested against something honest.
 *
 * This entry (`@keypool/testkit/fake-aws-secrets`) never imports vitest.
 *
 * ```ts
 * const fake = await startFakeSecretsManager({ region: 'us-east-1' });
 * const client = new SecretsManagerClient({ endpoint: fake.url, region: fake.region, credentials: fake.credentials });
 * await client.send(new CreateSecretCommand({ Name: 'keypool/openai', SecretString: '{"openai-1":"sk-..."}' }));
 * fake.setFault({ kind: 'throttle', count: 2, operation: 'GetSecretValue' });
 * await fake.setOutage('refuse');  // ECONNREFUSED until setOutage(false)
 * fake.counters().operations.GetSecretValue; // { requests, ok, errors: { ThrottlingException: 2 }, aborted }
 * await fake.stop();
 * ```
 *
 * **Wire protocol.** `POST /` with `Content-Type: application/x-amz-json-1.1` and
 * `X-Amz-Target: secretsmanager.<Operation>`, JSON bodies both ways, timestamps as epoch seconds,
 * `x-amzn-RequestId` on every answer. Errors are a status (400, 5xx) with a body
 * `{ "__type": "<Type>", "Message": "..." }` (`message` for errors of the AWS front end:
 * authentication, throttling, unknown operations) and the header `x-amzn-ErrorType:
 * <Type>:http://internal.amazon.com/coral/...`, as AWS answers and the SDK parses.
 *
 * **Authentication.** Every request must carry a SigV4 `Authorization` header (AWS4-HMAC-SHA256)
 * for service `secretsmanager` and the fake's region, signed by one of the configured access keys:
 * the canonical request is rebuilt from what arrived (method, path, query, signed headers, SHA-256
 * of the body) and the signature recomputed with the secret access key. An unknown access key id (or
 * a wrong session token) is 400 UnrecognizedClientException; a wrong signature, scope or a
 * X-Amz-Date more than 5 minutes off is 400 InvalidSignatureException (the SDK corrects its clock
 * from the `Date` header and retries on "Signature expired", as against AWS); no header is 400
 * MissingAuthenticationTokenException.
 *
 * **Operations** (SecretId is a name, a full ARN or a partial ARN without the random suffix):
 * CreateSecret (to seed; the value, if any, becomes the first version, AWSCURRENT), GetSecretValue
 * (VersionId and/or VersionStage, default AWSCURRENT; ARN, Name, VersionId, SecretString or
 * SecretBinary, VersionStages, CreatedDate), PutSecretValue (ClientRequestToken is the new VersionId
 * and makes it idempotent: the same token and value return that version, the same token with another
 * value is ResourceExistsException; VersionStages default [AWSCURRENT]), UpdateSecretVersionStage
 * (MoveToVersionId / RemoveFromVersionId; moving a label that is attached elsewhere needs
 * RemoveFromVersionId naming its holder), DescribeSecret (VersionIdsToStages of the versions that
 * have a label, LastChangedDate, LastAccessedDate, DeletedDate...), ListSecretVersionIds
 * (IncludeDeprecated) and DeleteSecret (a recovery window, or ForceDeleteWithoutRecovery). The rules
 * of staging labels are AWS's (see ./store.ts): moving AWSCURRENT leaves AWSPREVIOUS on the version
 * it left, a version with no label is deprecated.
 *
 * **Faults** (`faults` option, `setFault`): `throttle` (400 ThrottlingException), `error` (500
 * InternalServiceError, 503 ServiceUnavailable), `deny` (400 AccessDeniedException), `latency` (a
 * wait before the answer; a client that gives up is counted `aborted`), `truncate` (200 with the
 * JSON body cut short, as a broken proxy would answer), each for `count` requests
 * (default: until cleared), for one operation or all. `setOutage('refuse' | 'reset' | false)`:
 * stop listening (ECONNREFUSED) or destroy every connection (ECONNRESET), and back.
 *
 * **Counters** per operation: requests, ok, errors by type, aborted; and in total.
 *
 * **No secret out.** Nothing is logged; error messages never quote a secret value, a signature or
 * a canonical request.
 */
export * from './types.js';
export { startFakeSecretsManager } from './server.js';
export { verifySigV4, signingKey, parseAmzDate, formatAmzDate, SigV4Error, type SignedRequestParts, type VerifyOptions } from './sigv4.js';
