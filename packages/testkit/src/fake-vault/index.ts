/**
 * A fake HashiCorp Vault for tests: a real HTTP server (node:http) that speaks Vault 1.x's wire
 * protocol for what keypool uses, so the real `node-vault` client is tested over real HTTP.
 *
 * This entry (`@keypool/testkit/fake-vault`) never imports vitest.
 *
 * ```ts
 * const vault = await startFakeVault({ rootToken: 'root' });
 * vault.seed('keypool/openai', { 'openai-1': 'sk-...' });          // secret/data/keypool/openai, version 1
 * const { roleId, secretId } = vault.addAppRole({ name: 'keypool', policies: ['kp'], tokenTtlSeconds: 2 });
 * await vault.setFault({ kind: 'rate-limit', count: 2 });          // the next two requests get 429
 * await vault.setFault({ kind: 'outage' });                        // connections refused
 * await vault.clearFaults();                                       // listening again, same port
 * vault.counters();  // { requests: { 'kv.read': 3, ... }, logins, renewals, denied, aborted, ... }
 * await vault.stop();
 * ```
 *
 * **Auth.** Every request but `sys/health`, `sys/seal-status` and AppRole logins needs a live token
 * in `X-Vault-Token`; a missing, unknown, expired or revoked one gets 403
 * `{"errors":["permission denied"]}`, and so does a token whose policies do not allow the request.
 * `X-Vault-Namespace` is ignored. Tokens are `hvs.` strings with a TTL and a max TTL (the root token
 * has neither); an expired token is gone, as Vault revokes it.
 *
 * **Policies.** HCL `path "<glob>" { capabilities = [...] }` blocks (`*` at the end, `+` for one
 * segment; the most specific rule of each policy applies, `deny` wins); KV writes need `create` for
 * a new secret, `update` for an existing one. The `default` policy is implicit: it allows the
 * token's own lookup-self, renew-self and revoke-self, as Vault's built-in one does. `root` allows
 * everything; enabling auth methods and mounts also needs `sudo`.
 *
 * **Endpoints (under /v1).**
 * - KV v2 at each mount (default `secret`): `GET <mount>/data/<path>[?version=N]`, `POST|PUT
 *   <mount>/data/<path>` (`{data, options: {cas}}`; a cas mismatch is 400 `check-and-set parameter
 *   did not match the current version`), `DELETE <mount>/data/<path>` (soft-deletes the latest
 *   version: reading it is then a 404 whose body has `data: null` and the metadata),
 *   `GET|DELETE <mount>/metadata/<path>`, `GET <mount>/metadata/<prefix>?list=true`,
 *   `GET <mount>/config`. A missing secret or version is 404 `{"errors":[]}`. `max_versions`
 *   (default 10) older versions are dropped.
 * - AppRole at each enabled mount: `POST auth/<m>/login` (`{role_id, secret_id}`; wrong ones get
 *   400 `invalid role or secret ID`), `POST|GET|DELETE auth/<m>/role/<name>` (`token_policies`,
 *   `token_ttl`, `token_max_ttl`, `bind_secret_id`, `token_no_default_policy`),
 *   `GET|POST auth/<m>/role/<name>/role-id`, `POST auth/<m>/role/<name>/secret-id` and
 *   `.../custom-secret-id`.
 * - Tokens: `POST auth/token/create[-orphan]` (`policies`, `ttl`, `explicit_max_ttl`,
 *   `renewable`, `no_default_policy`, `id`), `GET auth/token/lookup-self`, `POST
 *   auth/token/renew-self` (`increment`; capped at the max TTL with Vault's warning; a token that
 *   is not renewable gets 400 `lease is not renewable`), `POST auth/token/revoke-self`.
 * - System: `GET sys/health`, `GET sys/seal-status`, `GET sys/auth`, `POST|DELETE sys/auth/<path>`
 *   (`{"type":"approle"}`), `GET sys/mounts`, `POST|DELETE sys/mounts/<path>` (KV v2 only),
 *   `GET|PUT|DELETE sys/policies/acl/<name>` (and the older `sys/policy/<name>`).
 * Answers carry Vault's envelope (`request_id`, `lease_id`, `renewable`, `lease_duration`, `data`,
 * `wrap_info`, `warnings`, `auth`, `mount_type`); an unknown route is 404 `no handler for route`.
 *
 * **Faults** ({@link FakeVaultFault}): `outage` (the port is closed: connections refused, open ones
 * destroyed), `reset` (the connection is destroyed without an answer), `sealed` (503 `Vault is
 * sealed`), `rate-limit` (429 with Retry-After), `error` (any status), `latency` (added delay);
 * each for every route or one (`route: 'kv.read'`, or a prefix: `'kv'`), for `count` requests or
 * until cleared.
 *
 * **Counters** ({@link FakeVaultCounters}): requests by route, answers by status, logins, refused
 * logins, renewals, 403s, resets, requests whose client went away before the answer (a timeout or
 * an abort), tokens issued.
 *
 * **No secret out.** The fake logs nothing; error bodies never quote a token or a secret_id.
 */
export * from './types.js';
export { startFakeVault } from './server.js';
export { parsePolicy, capabilitiesOn, parseDurationSeconds } from './acl.js';
