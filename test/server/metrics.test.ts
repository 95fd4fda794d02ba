/** The Prometheus metrics of one supervisor (docs/metrics.md), on real sockets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Histogram, Registry } from 'prom-client';
import { SupervisorMetrics } from '../../src/server/metrics.ts';
import { pace } from '../helpers/pace.ts';
import { closeOf, nextMessage, openClient, startSupervisor, waitFor } from '../helpers/server.ts';

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  assert.ok(line, `missing series ${series}`);
  return Number(line.slice(series.length + 1));
}

test('metrics: states, opens, closes by cause, RTT, traffic of live and closed connections, queue depth', { timeout: pace.scaled(10_000) }, async (t) => {
  const ts = await startSupervisor({
    // The clients answer pings from this process: pongTimeout scaled by the measured pace.
    timing: { pingInterval: 50, pongTimeout: pace.scaled(500), closeTimeout: 200 },
    onMessage: (c, data) => c.send(`echo ${data.toString()}`),
  });
  t.after(() => ts.close());
  const metrics = (): Promise<string> => ts.supervisor.metrics.registry.metrics();

  const a = await openClient(ts.url);
  const b = await openClient(ts.url);
  for (const ws of [a, b]) {
    const reply = nextMessage(ws);
    ws.send('hello'); // 5 bytes in, 'echo hello' = 10 bytes out
    await reply;
  }
  await waitFor(() => [...ts.supervisor.hub].every((c) => c.rttMs !== null), 3000, 'a heartbeat round trip each');

  let text = await metrics();
  assert.equal(value(text, 'ws_supervisor_connections'), 2);
  assert.equal(value(text, 'ws_supervisor_connections_opened_total'), 2);
  const byState = ['open', 'pinging', 'connecting', 'closing'].map((s) => value(text, `ws_supervisor_connections_by_state{state="${s}"}`));
  assert.equal(byState[0]! + byState[1]!, 2, 'both live connections are open or pinging');
  assert.equal(byState[2]! + byState[3]!, 0);
  assert.ok(value(text, 'ws_supervisor_rtt_seconds_count') >= 2, 'RTT observed per pong');
  assert.equal(value(text, 'ws_supervisor_messages_received_total'), 2);
  assert.equal(value(text, 'ws_supervisor_received_bytes_total'), 10);
  assert.equal(value(text, 'ws_supervisor_messages_sent_total'), 2);
  assert.equal(value(text, 'ws_supervisor_sent_bytes_total'), 20);
  assert.equal(value(text, 'ws_supervisor_send_queue_messages'), 0);
  assert.equal(value(text, 'ws_supervisor_send_queue_bytes'), 0);

  // A closed connection's traffic stays in the totals; its closure is counted by code and cause.
  const closed = closeOf(a);
  a.close(1000, 'bye');
  await closed;
  await waitFor(() => ts.supervisor.size === 1, 2000, 'the closed connection unregistered');
  await new Promise((r) => setTimeout(r, 120)); // past the 100 ms scrape cache
  text = await metrics();
  assert.equal(value(text, 'ws_supervisor_connections'), 1);
  assert.equal(value(text, 'ws_supervisor_messages_received_total'), 2, 'closed traffic is kept');
  assert.equal(value(text, 'ws_supervisor_sent_bytes_total'), 20);
  assert.equal(value(text, 'ws_supervisor_closes_total{code="1000"}'), 1);
  assert.equal(value(text, 'ws_supervisor_closes_by_cause_total{cause="peer",expected="true",initiator="remote"}'), 1);
  b.close();
});

test('the RTT histogram (counted without prom-client\'s observe, handed over at export) exports exactly what a prom-client Histogram fed the same values exports: name, help, buckets, sum, count, as text and as JSON, after a reset too, and observe still adds to it', async () => {
  const metrics = new SupervisorMetrics({ closedTraffic: () => ({ messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0 }), live: () => [] });
  const reference = new Registry();
  // The metric as it was defined before the histogram was counted here (docs/metrics.md: buckets 0.5 ms … 5 s).
  const plain = new Histogram({
    name: 'ws_supervisor_rtt_seconds',
    help: 'Heartbeat ping-to-pong round trip time',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [reference],
  });
  const NAME = 'ws_supervisor_rtt_seconds';
  const same = async (when: string): Promise<void> => {
    assert.equal(await metrics.registry.getSingleMetricAsString(NAME), await reference.getSingleMetricAsString(NAME), `text, ${when}`);
    assert.deepEqual(await metrics.registry.getSingleMetric(NAME)!.get(), await plain.get(), `JSON, ${when}`);
    const json = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === NAME);
    assert.deepEqual(json, (await reference.getMetricsAsJSON())[0], `getMetricsAsJSON, ${when}`);
  };
  await same('before any pong');
  // Round trips in ms, as the reader reports them: on and around every bound, below the first and above the last.
  const ms = [0, 1e-6, 0.1, 0.5, 0.5000001, 0.9999, 1, 1.7, 2.5, 4.2, 5, 9.99, 10, 24, 25, 26, 50, 99, 100, 250, 333.3, 500, 999, 1000, 2499.9, 2500, 4999, 5000, 5000.01, 7000, 86_400_000];
  for (const m of ms) {
    metrics.rtt(m);
    plain.observe(m / 1000);
  }
  await same(`after ${ms.length} round trips`);
  const text = await metrics.registry.getSingleMetricAsString(NAME);
  assert.match(text, new RegExp(`^${NAME}_count ${ms.length}$`, 'm'));
  assert.match(text, /^ws_supervisor_rtt_seconds_bucket\{le="0\.0005"\} 4$/m, 'a value equal to a bound counts in its bucket');
  metrics.registry.resetMetrics();
  reference.resetMetrics();
  await same('after a reset');
  // From here dyadic values (2^-10 s, 0.25 s, 0.5 s, 2^-8 s): their sums are exact in any order.
  metrics.rtt(0.9765625);
  plain.observe(0.9765625 / 1000);
  await same('after a reset and one round trip');
  // prom-client's own observe (a user's) adds to the same series.
  metrics.rttSeconds.observe(0.25);
  metrics.rtt(500);
  metrics.rtt(3.90625);
  for (const v of [0.25, 0.5, 0.00390625]) plain.observe(v);
  await same('beside observe');
});

test('docs/metrics.md has a row for every metric a supervisor registers, and no row for one it does not', () => {
  // The page says it lists every metric; ws_supervisor_session_store_failures_total had been registered without a row.
  const metrics = new SupervisorMetrics({ closedTraffic: () => ({ messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0 }), live: () => [] });
  const registered = metrics.registry.getMetricsAsArray().map((m) => m.name).sort();
  const page = readFileSync(fileURLToPath(new URL('../../docs/metrics.md', import.meta.url)), 'utf8');
  const documented = [...page.matchAll(/^\| `(ws_supervisor_[a-z_]+)` \|/gm)].map((m) => m[1]!).sort();
  assert.ok(registered.length >= 20, `${registered.length} metrics registered`);
  assert.deepEqual(registered.filter((name) => !documented.includes(name)), [], 'registered, but no row in docs/metrics.md');
  assert.deepEqual(documented.filter((name) => !registered.includes(name)), [], 'a row in docs/metrics.md, but not registered');
});
