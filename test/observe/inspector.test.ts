/**
 * `ws-supervisor server --inspect`: a real connection's lifecycle reaches the
 * Stately inspector relay (open → pinging → open → closing → closed), read by a
 * plain WebSocket viewer the way any receiver would. Offline: loopback only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { startCliServer } from '../helpers/cli.ts';
import { waitFor } from '../helpers/server.ts';
import { pace } from '../helpers/pace.ts';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface InspectionMessage {
  type: string;
  sessionId?: string;
  snapshot?: { value?: unknown; context?: { io?: unknown } };
  definition?: string;
}

test('--inspect: the inspection events of a real connection lifecycle reach the relay (R4, R16)', { timeout: pace.scaled(30_000) }, async (t) => {
  const inspectPort = await freePort();
  const server = await startCliServer(
    ['--inspect', '--inspect-port', String(inspectPort), '--ping-interval', '150', '--pong-timeout', '300', '--close-timeout', '500', '--log-level', 'warn'],
    t,
  );
  await server.waitForStdout(new RegExp(`inspector relay on ws://localhost:${inspectPort}`), 5000);
  assert.match(server.stdout(), /\/dashboard/, 'the offline alternative is printed too');

  const viewer = new WebSocket(`ws://localhost:${inspectPort}`);
  t.after(() => viewer.terminate());
  const seen: InspectionMessage[] = [];
  viewer.on('message', (data) => seen.push(JSON.parse(data.toString()) as InspectionMessage));
  await new Promise((resolve, reject) => {
    viewer.once('open', resolve);
    viewer.once('error', reject);
  });

  const client = new WebSocket(server.wsUrl);
  t.after(() => client.terminate());
  await new Promise((resolve) => client.once('open', resolve));
  const connectionSnapshots = (): unknown[] =>
    seen.filter((e) => e.type === '@xstate.snapshot' && e.snapshot && typeof e.snapshot.value !== 'undefined' && e.snapshot.context && 'io' in e.snapshot.context).map((e) => e.snapshot!.value);
  await waitFor(
    () => connectionSnapshots().filter((v) => JSON.stringify(v).includes('"pinging"')).length >= 2,
    5000,
    'two heartbeats seen by the inspector',
  );
  // A server-initiated close: drain sends 1001, the machine goes closing → closed.
  const closed = new Promise<number>((resolve) => client.once('close', (code) => resolve(code)));
  server.child.kill('SIGTERM');
  assert.equal(await closed, 1001);
  await waitFor(() => connectionSnapshots().some((v) => v === 'closed'), 5000, 'closed seen by the inspector');

  const values = connectionSnapshots().map((v) => JSON.stringify(v));
  const distinct = values.filter((v, i) => v !== values[i - 1]);
  const idle = '{"open":{"heartbeat":"idle","write":"flowing"}}';
  const pinging = '{"open":{"heartbeat":"pinging","write":"flowing"}}';
  const order = [idle, pinging, idle, '{"closing":"handshake"}', '"closed"'];
  let at = 0;
  for (const v of distinct) if (v === order[at]) at++;
  assert.equal(at, order.length, `open → pinging → open → closing → closed in ${distinct.join(' → ')}`);
  assert.ok(seen.some((e) => e.type === '@xstate.actor' && e.definition?.includes('"id":"connection"')), 'the machine definition is sent');
  for (const e of seen) {
    if (e.snapshot?.context && 'io' in e.snapshot.context) assert.equal(e.snapshot.context.io, '[transport]', 'the socket is redacted');
  }
  assert.deepEqual(await server.exited, { code: 0, signal: null });
});
