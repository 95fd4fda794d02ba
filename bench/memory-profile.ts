/**
 * Where the memory of an idle connection goes: heap snapshots of a server
 * (bench/servers.ts) with 0 and with N idle connections, self sizes summed per
 * constructor, the difference divided by N (bytes per connection), largest first.
 *
 *   node --import tsx bench/memory-profile.ts [--system supervisor] [--connections 2000] [--top 30] [--sessions memory|redis://…] [--versus-off]
 *
 * --sessions: the supervisor with sessions on, every client opting in (bench/lib/session-client.ts).
 * --versus-off (with --sessions): the same run with sessions off too, one server after the other, and the
 *   difference per constructor: what an idle session adds to its connection (docs/performance.md,
 *   "Sessions, ninth pass").
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { heapDelta, summarizeHeap, type HeapSummary } from './lib/heap-summary.ts';
import { connectSessionMany } from './lib/session-client.ts';
import { closeAll, connectMany, pinSelf, sleep, startServer, waitForConnections, type System } from './lib/harness.ts';

const { values } = parseArgs({
  options: {
    system: { type: 'string', default: 'supervisor' },
    connections: { type: 'string', default: '2000' },
    top: { type: 'string', default: '30' },
    sessions: { type: 'string' },
    'versus-off': { type: 'boolean', default: false },
  },
});
const N = Number(values.connections);
const TOP = Number(values.top);
pinSelf(1);

type Summary = HeapSummary;
const summarize = summarizeHeap;
const delta = heapDelta;

function print(title: string, d: Summary): void {
  const rows = [...d].map(([k, v]) => ({ k, ...v })).sort((x, y) => Math.abs(y.size) - Math.abs(x.size));
  const total = rows.reduce((t, r) => t + r.size, 0);
  const code = rows.filter((r) => r.k === 'code').reduce((t, r) => t + r.size, 0);
  console.log(`${title}: ${(total / N).toFixed(0)} B per connection (${((total - code) / N).toFixed(0)} B without code objects); largest:`);
  for (const r of rows.slice(0, TOP)) console.log(`${(r.size / N).toFixed(0).padStart(7)} B  ${(r.count / N).toFixed(2).padStart(6)} per conn  ${r.k}`);
}

/** One server: snapshots before and after N idle connections; their difference per constructor. */
async function profile(sessions: string | undefined): Promise<Summary> {
  const dir = mkdtempSync(join(tmpdir(), 'ws-sup-heap-'));
  const server = await startServer(values.system as System, sessions !== undefined ? { sessions } : {});
  try {
    await sleep(500);
    await server.command(`snapshot ${join(dir, 'a.heapsnapshot')}`);
    const before = await server.gc();
    const clients = sessions !== undefined ? await connectSessionMany(server.url, N, { batch: 250 }) : await connectMany(server, N, { batch: 250 });
    await waitForConnections(server, N);
    await sleep(1000);
    const after = await server.gc();
    await server.command(`snapshot ${join(dir, 'b.heapsnapshot')}`);
    const kib = (x: number): string => (x / N / 1024).toFixed(2);
    console.log(`${values.system}${sessions !== undefined ? ` (sessions ${sessions})` : ''}, ${N} idle connections, per connection: RSS ${kib(after.rss - before.rss)} KiB, heapUsed ${kib(after.heapUsed - before.heapUsed)} KiB, external ${kib(after.external - before.external)} KiB, arrayBuffers ${kib(after.arrayBuffers - before.arrayBuffers)} KiB`);
    await closeAll(clients);
    const d = delta(summarize(join(dir, 'a.heapsnapshot')), summarize(join(dir, 'b.heapsnapshot')));
    print('heap snapshot delta', d);
    return d;
  } finally {
    await server.stop();
    console.log('snapshots in', dir);
  }
}

if (values['versus-off'] && values.sessions === undefined) throw new Error('--versus-off compares with --sessions: give one');
const on = await profile(values.sessions);
if (values['versus-off']) {
  console.log('');
  const off = await profile(undefined);
  console.log('');
  print(`sessions ${values.sessions} minus sessions off, per idle session`, delta(off, on));
}
