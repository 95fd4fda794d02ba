/** The Prometheus metrics of one supervisor (docs/metrics.md), on real sockets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
