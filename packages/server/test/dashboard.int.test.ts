/**
 * The ops dashboard (GET /dashboard) in a real browser: Debian's chromium driven by playwright-core,
 * against a gateway on the test Redis with the fake upstream. The page must load with no console
 * error, show the pool and its keys, follow changes without a reload (an operator disables a key,
 * traffic is spent), say so loudly when Redis is down or /status cannot be read, and never put
 * a string from the status into the page as HTML.
 *
 * The browser: KEYPOOL_CHROMIUM, else /usr/bin/chromium (`apt-get install -y chromium`; .ci/run
 * installs it). Without one the tests are skipped, saying why. Screenshots go to the OS temp dir
 * (keypool-dashboard-<target>*.png) for a person to look at.
 */
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyIdOf } from '@keypool/core';
import { testTarget } from '@keypool/testkit';
import { ADMIN, startGateway, testRedis, type TestGateway } from './helpers.js';

const CHROMIUM = process.env.KEYPOOL_CHROMIUM || '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
// CI (.ci/run) installs chromium: there a missing browser is a failure, not a skip
if (!haveBrowser && process.env.CI) throw new Error(`no browser at ${CHROMIUM}: .ci/run should have installed chromium`);
if (!haveBrowser) console.warn(`dashboard tests skipped: no browser at ${CHROMIUM} (apt-get install -y chromium, or set KEYPOOL_CHROMIUM)`);

const A = 'sk-test-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const B = 'sk-test-bbbbbbbbbbbbbbbbbbbbbbbb2222';
const C = 'sk-test-cccccccccccccccccccccccc3333';
const MODELS = ['gpt-4o-mini', 'gpt-4o'];
// a name that would be markup if the page ever used innerHTML with data
const EVIL = '<img src=x id=pwned onerror="window.__pwned=1">gamma';
const NAMES = ['alpha', 'beta', EVIL];
/** The key ids, once the gateway (and so the base URL they are for) is up. */
let IDS: string[] = [];
const SHOTS = join(tmpdir(), `keypool-dashboard-${testTarget()}`);

describe.skipIf(!haveBrowser)('dashboard in a browser', () => {
  let g: TestGateway;
  let stopped = false;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const consoleErrors: string[] = [];

  beforeAll(async () => {
    g = await startGateway({
      fakeKeys: [
        // alpha's provider allows (and reports) half of what alpha is configured with
        { key: A, name: 'a', rpm: 300 },
        { key: B, name: 'b' },
        { key: C, name: 'c' },
      ],
      keys: [
        { secret: A, name: NAMES[0], models: MODELS, rpm: 600, tpm: 200_000, maxConcurrent: 20, budget: { usd: 5, period: 'day' } },
        { secret: B, name: NAMES[1], models: MODELS, rpm: 3000, maxConcurrent: 50 },
        { secret: C, name: NAMES[2], models: ['gpt-4o-mini'] },
      ],
      routes: { fast: { models: ['gpt-4o-mini', 'gpt-4o'] } },
    });
    IDS = [A, B, C].map((s) => keyIdOf(s, g.fake.url));
    // playwright gives the browser a fresh profile of its own (a temp dir it removes on close)
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('console', (m) => {
      // the browser's own request for /favicon.ico is not the page's doing (the gateway has none:
      // a 404; CSP default-src 'self' forbids a data: icon)
      if (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) consoleErrors.push(`${m.text()} @ ${m.location().url}`);
    });
    page.on('requestfailed', (r) => consoleErrors.push(`request failed: ${r.url()}`));
    page.on('response', (r) => {
      if (r.status() >= 400) consoleErrors.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));
  });

  afterAll(async () => {
    await browser?.close();
    if (g && !stopped) await g.stop();
    testRedis.disconnect();
  });

  const row = (id: string) => page.locator(`tr[data-key-id="${id}"]`);
  const stateOf = (id: string) => row(id).locator('td[data-col="state"] .badge').textContent();
  const cell = (id: string, col: string) => row(id).locator(`td[data-col="${col}"]`).innerText();

  it('loads with no console error and shows the pool, every key by name and its state', async () => {
    const res = await page.goto(`${g.url}/dashboard`);
    expect(res!.status()).toBe(200);
    expect(res!.headers()['content-security-policy']).toContain("default-src 'self'");
    // the first load: a cold browser and the first status read (CI once took over the default 1 s)
    await expect.poll(() => page.getByTestId('pool').textContent(), { timeout: 10_000 }).toBe(g.pool.name);
    for (const [i, id] of IDS.entries()) {
      await expect.poll(() => stateOf(id), { timeout: 5000 }).toBe('active');
      expect(await row(id).locator('.kname').textContent()).toBe(NAMES[i]);
    }
    expect(await page.getByTestId('redis').textContent()).toContain('ok');
    expect(await page.locator('#states [data-state="active"] .n').textContent()).toBe('3');
    // how old the figures are (the fleet's shared status; this gateway reads it fresh each time)
    expect(await page.locator('#snapage').textContent()).toMatch(/^\d+\.\d s ago$/);
    // the full id is in a tooltip, the hint on show; limits as "left / window's quota", the rpm and
    // the window (600 rpm over 1 s: 10)
    expect(await row(IDS[0]!).locator(`[title="Key id: ${IDS[0]}"]`).count()).toBe(1);
    expect(await cell(IDS[0]!, 'requests')).toMatch(/^10 \/ 10\s+600 rpm\s+1 s window$/);
    expect(await cell(IDS[0]!, 'budget')).toMatch(/\$5\.00 \/ \$5\.00\s+per day/);
    expect(await cell(IDS[2]!, 'budget')).toBe('no budget');
    // the name is text, not markup
    expect(await page.locator('#pwned').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.getByTestId('banner').isHidden()).toBe(true);
    // no traffic yet: the charts say so, axes and all
    for (const chart of ['chart-requests', 'chart-429', 'chart-waits', 'chart-keys']) {
      await expect.poll(() => page.getByTestId(chart).locator('svg .nodata').textContent(), { timeout: 5000 }).toMatch(/^No (traffic in the last 15 minutes|data yet)$/);
      expect(await page.getByTestId(chart).locator('svg text', { hasText: 'now' }).count()).toBe(1);
    }
    // no worker runs for this pool: the scheduler panel says how to start one
    expect(await page.locator('#nosched').isVisible()).toBe(true);
    expect(await page.locator('#nosched').textContent()).toContain('keypool worker --config');
    // the queue line is there (this test's gateway has no reader: "not readable")
    expect(await page.getByTestId('queue').textContent()).toMatch(/^LLM job queue: /);
    expect(consoleErrors).toEqual([]);
  });

  it('follows an operator disabling a key and traffic being spent, without a reload', async () => {
    const nav = await page.evaluate(() => performance.getEntriesByType('navigation').length);
    // through the admin API, as an operator would
    const res = await fetch(`${g.url}/admin/keys/${IDS[1]}/disable`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.status).toBe(200);
    await expect.poll(() => stateOf(IDS[1]!), { timeout: 5000 }).toBe('disabled');
    expect(await page.locator('#states [data-state="disabled"] .n').textContent()).toBe('1');

    const ask = (model: string) =>
      fetch(`${g.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${g.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8 }),
      }).then(async (r) => {
        expect(r.status, await r.clone().text()).toBe(200);
        return r.json();
      });
    await Promise.all([ask('gpt-4o-mini'), ask('gpt-4o-mini'), ask('gpt-4o'), ask('fast'), ask('fast')]);
    const st = await g.pool.status();
    const mini = st.spend!.byModel['gpt-4o-mini']!.requests;
    expect(mini).toBeGreaterThanOrEqual(4);

    const byModel = page.getByTestId('spend-by-model');
    await expect.poll(() => byModel.locator('tr[data-name="gpt-4o-mini"] td').nth(1).textContent(), { timeout: 5000 }).toBe(String(mini));
    expect(await byModel.locator('tr[data-name="gpt-4o"] td').nth(1).textContent()).toBe(String(st.spend!.byModel['gpt-4o']!.requests));
    expect(await page.getByTestId('spend-by-route').locator('tr[data-name="fast"] td').nth(1).textContent()).toBe('2');
    expect(await page.getByTestId('spend-total').textContent()).toMatch(/^\$0\.0\d+ · 5 req$/);
    // the keys that served show their spend; the disabled one served nothing
    const spent = st.keys.filter((k) => (k.spendUsd ?? 0) > 0).map((k) => k.id);
    expect(spent.length).toBeGreaterThan(0);
    expect(spent).not.toContain(IDS[1]);
    for (const id of spent) expect(await cell(id, 'spend')).toMatch(/^\$0\.0\d+$/);
    expect(await cell(IDS[1]!, 'spend')).toBe('$0');
    // alpha served gpt-4o (beta is disabled) and its provider said 300 rpm: configured / enforced
    // now (reported), a window of 5
    await expect.poll(() => cell(IDS[0]!, 'requests'), { timeout: 5000 }).toMatch(/^\d+ \/ 5\s+600 \/ 300 \(rep 300\) rpm\s+1 s window$/);
    expect(await row(IDS[0]!).locator('td[data-col="requests"] .t').getAttribute('title')).toMatch(/Configured: 600 rpm\. Enforced now: 300 rpm \(lowered .*\)\. Reported by the provider: 300 rpm\.$/);
    // the budget of alpha went down if it served
    if (spent.includes(IDS[0]!)) expect(await row(IDS[0]!).locator('td[data-col="budget"] .t').getAttribute('title')).toMatch(/^\$4\.99\d+ left of \$5 per day/);

    // sorting by a header keeps its order across refreshes
    await page.locator('th[data-col="state"] button').click();
    const order = () => page.locator('#rows tr').evaluateAll((trs) => trs.map((t) => (t as HTMLElement).dataset.keyId));
    expect((await order())[0]).toBe(IDS[1]); // by state: problems first, active last
    await page.locator('th[data-col="state"] button').click();
    const desc = await order();
    expect(desc.at(-1)).toBe(IDS[1]);
    await page.waitForTimeout(2300);
    expect(await order()).toEqual(desc);
    expect(await page.locator('th[data-col="state"]').getAttribute('aria-sort')).toBe('descending');

    expect(await page.evaluate(() => performance.getEntriesByType('navigation').length)).toBe(nav);
    expect(consoleErrors).toEqual([]);
    await page.locator('th[data-col="key"] button').click();
    await page.screenshot({ path: `${SHOTS}.png`, fullPage: true });
    await page.setViewportSize({ width: 420, height: 900 });
    await page.screenshot({ path: `${SHOTS}-narrow.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it('shows a red banner when Redis is down (status says so)', async () => {
    // the gateway answers /status with redis.ok false when the pool cannot reach Redis; fake that answer
    await page.route('**/status', async (route) => {
      const res = await route.fetch();
      const st = await res.json();
      st.redis = { ok: false, policy: 'fail-closed', downSince: new Date(Date.now() - 42_000).toISOString(), lastError: 'connect ECONNREFUSED 10.0.0.5:6379' };
      st.mode = 'failing-closed';
      st.leasesInFlight = null;
      delete st.spend;
      for (const k of st.keys) {
        k.state = 'unknown';
        for (const f of ['left', 'spendUsd', 'reservedUsd', 'coolingUntil', 'breaker', 'latency', 'errorRate', 'healthScore', 'degraded']) delete k[f];
      }
      await route.fulfill({ response: res, json: st });
    });
    const banner = page.getByTestId('banner');
    await expect.poll(() => banner.isVisible(), { timeout: 5000 }).toBe(true);
    expect(await banner.textContent()).toMatch(/Redis is down since .*ECONNREFUSED.*fail-closed.*refuses new requests \(503\)/);
    expect(await page.getByTestId('redis').textContent()).toContain('DOWN');
    await expect.poll(() => stateOf(IDS[0]!), { timeout: 5000 }).toBe('unknown');
    await page.screenshot({ path: `${SHOTS}-redis-down.png`, fullPage: true });
    await page.unroute('**/status');
    await expect.poll(() => banner.isHidden(), { timeout: 5000 }).toBe(true);
    expect(consoleErrors).toEqual([]);
  });

  it('shows a red banner when the gateway tokens were lost (status says so)', async () => {
    await page.route('**/status', async (route) => {
      const res = await route.fetch();
      const st = await res.json();
      st.tokens = { store: 'lost', lostAt: new Date(Date.now() - 5000).toISOString(), lostCount: 1, declared: 2 };
      await route.fulfill({ response: res, json: st });
    });
    const lost = page.getByTestId('tokens-lost');
    await expect.poll(() => lost.isVisible(), { timeout: 5000 }).toBe(true);
    expect(await lost.textContent()).toMatch(/Gateway tokens lost at .*401 invalid_api_key.*2 token\(s\) declared in the config were registered again/);
    await page.unroute('**/status');
    await expect.poll(() => lost.isHidden(), { timeout: 5000 }).toBe(true);
    expect(consoleErrors).toEqual([]);
  });

  it('asks for the status token when the gateway sets one, keeps it for the tab and sends it with each refresh', async () => {
    const STATUS = 'status-token-for-dashboard-0123456789';
    const closed = await startGateway({ fakeKeys: [{ key: A, name: 'a' }], keys: [{ secret: A, name: 'solo', models: MODELS }], settings: { statusToken: STATUS } });
    const tab = await context.newPage();
    try {
      await tab.goto(`${closed.url}/dashboard`);
      const auth = tab.getByTestId('auth');
      await expect.poll(() => auth.isVisible(), { timeout: 5000 }).toBe(true);
      expect(await tab.getByTestId('pool').textContent()).toBe('…');
      await tab.fill('#auth-token', 'not-the-status-token-at-all-000');
      await tab.click('#auth button');
      await expect.poll(() => tab.locator('#auth-text').textContent(), { timeout: 5000 }).toMatch(/refused that token/);
      await tab.fill('#auth-token', STATUS);
      await tab.click('#auth button');
      await expect.poll(() => tab.getByTestId('pool').textContent(), { timeout: 5000 }).toBe(closed.pool.name);
      expect(await auth.isHidden()).toBe(true);
      // refreshes carry it; a reload of the tab keeps it (sessionStorage)
      const sent = await tab.waitForRequest((r) => r.url().endsWith('/status'));
      expect(sent.headers().authorization).toBe(`Bearer ${STATUS}`);
      await tab.reload();
      await expect.poll(() => tab.getByTestId('pool').textContent(), { timeout: 5000 }).toBe(closed.pool.name);
      expect(await auth.isHidden()).toBe(true);
    } finally {
      await tab.close();
      await closed.stop();
    }
  });

  it('charts the last 15 minutes from real requests: requests, upstream 429s, waits per class, busiest keys; and the class and tenant lines', async () => {
    // a key whose provider allows 1 request a minute while the pool is told 600: requests sent at
    // once, before an answer tells the pool, get 429s
    const D = 'sk-test-dddddddddddddddddddddddd4444';
    const E = 'sk-test-eeeeeeeeeeeeeeeeeeeeeeee5555';
    const gw = await startGateway({
      fakeKeys: [{ key: D, name: 'd', rpm: 1, latency: 100 }, { key: E, name: 'e' }],
      keys: [
        { secret: D, name: 'delta', models: ['gpt-4o'], rpm: 600 },
        // 2 a second (its 1 s window): back-to-back requests wait for their turn (a reservation)
        { secret: E, name: 'echo', models: ['gpt-4o-mini'], rpm: 120 },
      ],
    });
    const tab = await context.newPage();
    try {
      const ask = (model: string) =>
        fetch(`${gw.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${gw.token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
        }).then((r) => r.status);
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) statuses.push(await ask('gpt-4o-mini'));
      await Promise.all([0, 1, 2, 3].map(() => ask('gpt-4o')));
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);
      const fake = await gw.fake.counters();
      expect(fake['d']!.rate429).toBeGreaterThan(0);

      await tab.goto(`${gw.url}/dashboard`);
      await expect.poll(() => tab.getByTestId('pool').textContent(), { timeout: 5000 }).toBe(gw.pool.name);
      const st = await gw.pool.status({ fresh: true });
      const t = st.traffic!.last15m;
      expect(t.upstream429).toBe(fake['d']!.rate429);
      const total = (id: string) => tab.getByTestId(id).getAttribute('data-total').then(Number);
      // the requests chart: every admission (admitted and waited) and every refusal, as counted in Redis
      await expect.poll(() => total('chart-requests'), { timeout: 5000 }).toBe(t.requests + t.refused);
      expect(t.requests).toBeGreaterThanOrEqual(7);
      expect(Number(await tab.getByTestId('chart-requests').locator('path[data-series="admitted"]').getAttribute('data-total'))).toBe(t.requests);
      expect(await total('chart-429')).toBe(fake['d']!.rate429);
      expect(t.byClass.normal.waited).toBeGreaterThan(0);
      expect(await total('chart-waits')).toBe(t.byClass.normal.waited + t.byClass.low.waited + t.byClass.critical.waited);
      expect(Number(await tab.getByTestId('chart-waits').locator('path[data-series="normal"]').getAttribute('data-total'))).toBe(t.byClass.normal.waited);
      expect(t.byClass.normal.waitP99Ms).toBeGreaterThan(0);
      // the busiest keys: what went upstream on each, per the fake upstream's own counters
      const keys = tab.getByTestId('chart-keys');
      expect(Number(await keys.locator('path[data-series="echo"]').getAttribute('data-total'))).toBe(fake['e']!.requests);
      expect(Number(await keys.locator('path[data-series="delta"]').getAttribute('data-total'))).toBe(fake['d']!.requests);
      expect(await keys.locator('.keys-legend').textContent()).toContain('delta');
      // a line drawn is not flat at the bottom: some point is above the x axis
      const ys = await tab.getByTestId('chart-requests').locator('path[data-series="admitted"]').getAttribute('d');
      expect(new Set([...ys!.matchAll(/[ML][\d.]+ ([\d.]+)/g)].map((m) => m[1])).size).toBeGreaterThan(1);
      expect(await tab.getByTestId('chart-requests').locator('svg text', { hasText: 'req/s' }).count()).toBe(1);
      // the class line and the gateway token's tenant line (60 s / 15 min)
      const normal = tab.locator('#trafficrows tr[data-class="normal"] td');
      expect(await normal.nth(1).textContent()).toBe(`${t.byClass.normal.admitted} / ${t.byClass.normal.admitted}`);
      const tenant = Object.keys(t.byTenant)[0]!;
      expect(await tab.locator(`#trafficrows tr[data-tenant="${tenant}"] td`).first().textContent()).toBe(`tenant ${tenant}`);
      // nothing of a secret in what the page was given
      const body = await (await fetch(`${gw.url}/status/series`)).text();
      for (const secret of [D, E]) {
        expect(body).not.toContain(secret);
        expect(body).not.toContain(secret.slice(-8));
      }
      await tab.screenshot({ path: `${SHOTS}-charts.png`, fullPage: true });
      expect(consoleErrors).toEqual([]);
    } finally {
      await tab.close();
      await gw.stop();
    }
  });

  it('shows a red banner when /status cannot be read, and keeps the last numbers, marked stale', async () => {
    await g.stop();
    stopped = true;
    const banner = page.getByTestId('banner');
    await expect.poll(() => banner.isVisible(), { timeout: 5000 }).toBe(true);
    expect(await banner.textContent()).toMatch(/cannot read \/status.*stale/);
    expect(await stateOf(IDS[1]!)).toBe('disabled');
    await page.screenshot({ path: `${SHOTS}-down.png`, fullPage: true });
    // the only console errors are the failed fetches of /status
    expect(consoleErrors.length).toBeGreaterThan(0);
    for (const e of consoleErrors) expect(e).toMatch(/Failed to load resource|ERR_CONNECTION_REFUSED|\/status/);
  });
});
