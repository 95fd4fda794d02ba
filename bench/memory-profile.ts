/**
 * Where the memory of an idle connection goes: heap snapshots of a server
 * (bench/servers.ts) with 0 and with N idle connections, self sizes summed per
 * constructor, the difference divided by N (bytes per connection), largest first.
 *
 *   node --import tsx bench/memory-profile.ts [--system supervisor] [--connections 2000] [--top 30] [--sessions memory|redis://…]
 *
 * --sessions: the supervisor with sessions on, every client opting in (bench/lib/session-client.ts).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { connectSessionMany } from './lib/session-client.ts';
import { closeAll, connectMany, pinSelf, sleep, startServer, waitForConnections, type System } from './lib/harness.ts';

const { values } = parseArgs({
  options: { system: { type: 'string', default: 'supervisor' }, connections: { type: 'string', default: '2000' }, top: { type: 'string', default: '30' }, sessions: { type: 'string' } },
});
const N = Number(values.connections);
pinSelf(1);

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Self size and count per "type:name" (constructor name for objects). */
function summarize(file: string): Map<string, { size: number; count: number }> {
  const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const f = s.snapshot.meta.node_fields;
  const width = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const types = s.snapshot.meta.node_types[0];
  const out = new Map<string, { size: number; count: number }>();
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType]!]!;
    const name = type === 'object' || type === 'closure' || type === 'native' ? s.strings[s.nodes[i + iName]!]! : '';
    const key = `${type}${name ? `:${name.slice(0, 60)}` : ''}`;
    const e = out.get(key) ?? { size: 0, count: 0 };
    e.size += s.nodes[i + iSize]!;
    e.count++;
    out.set(key, e);
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'ws-sup-heap-'));
const server = await startServer(values.system as System, values.sessions !== undefined ? { sessions: values.sessions } : {});
try {
  await sleep(500);
  await server.command(`snapshot ${join(dir, 'a.heapsnapshot')}`);
  const before = await server.gc();
  const clients = values.sessions !== undefined ? await connectSessionMany(server.url, N, { batch: 250 }) : await connectMany(server, N, { batch: 250 });
  await waitForConnections(server, N);
  await sleep(1000);
  const after = await server.gc();
  await server.command(`snapshot ${join(dir, 'b.heapsnapshot')}`);
  const kib = (x: number): string => (x / N / 1024).toFixed(2);
  console.log(`${values.system}, ${N} idle connections, per connection: RSS ${kib(after.rss - before.rss)} KiB, heapUsed ${kib(after.heapUsed - before.heapUsed)} KiB, external ${kib(after.external - before.external)} KiB, arrayBuffers ${kib(after.arrayBuffers - before.arrayBuffers)} KiB`);
  await closeAll(clients);
  const a = summarize(join(dir, 'a.heapsnapshot'));
  const b = summarize(join(dir, 'b.heapsnapshot'));
  const rows = [...b].map(([k, v]) => ({ k, size: v.size - (a.get(k)?.size ?? 0), count: v.count - (a.get(k)?.count ?? 0) })).sort((x, y) => y.size - x.size);
  const total = rows.reduce((t, r) => t + r.size, 0);
  console.log(`heap snapshot delta: ${(total / N).toFixed(0)} B per connection; largest:`);
  for (const r of rows.slice(0, Number(values.top))) console.log(`${(r.size / N).toFixed(0).padStart(7)} B  ${(r.count / N).toFixed(2).padStart(6)} per conn  ${r.k}`);
} finally {
  await server.stop();
  console.log("snapshots in", dir);
}
