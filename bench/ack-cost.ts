/**
 * What one session ack costs the server, alone (docs/performance.md, "The broadcast tail with
 * sessions on"): N session clients (5,000) attached to the in-memory store, one broadcast so each
 * holds seq 1, then acks of seq 1 sent round-robin at RATE per second (5,000: one per client per
 * second, the clients' ack clock) for SECONDS, and nothing else. Prints per ack the server's CPU,
 * and from its --trace-gc-nvp lines the bytes its scavenges found allocated and promoted; with
 * `heap`, V8's sampling heap profiler over the same window, bytes allocated per ack by function.
 *
 *   node --import tsx bench/ack-cost.ts [seconds 20] [rate 5000] [heap]
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { closeAll, pinSelf, RESULTS_DIR, sleep, startServer, waitForConnections } from './lib/harness.ts';
import { connectSessionMany, SessionClient } from './lib/session-client.ts';

pinSelf(1);
const N = 5000;
const SECONDS = Number(process.argv[2] ?? 20);
const RATE = Number(process.argv[3] ?? 5000);
const HEAP = process.argv[4] === 'heap';
const server = await startServer('supervisor', { sessions: 'memory', traceGc: true });
const sender = new SessionClient(server.url);
await sender.connect();
sender.onMessage(() => undefined);
const clients = await connectSessionMany(server.url, N, { batch: 250 });
for (const c of clients) c.onMessage(() => undefined);
await waitForConnections(server, N + 1, 60_000);
sender.send('{"requestID":1,"command":"broadcast","someOtherThing":"b1"}');
await sleep(3000); // every client has seq 1 (and its own clock's ack of it has gone)
if (HEAP) await server.command('profile start heap');
const gc0 = server.gcTrace.length;
const cpu0 = (await server.stats()).cpuUs;
let sent = 0;
let credit = 0;
const timer = setInterval(() => {
  for (credit += RATE / 200; credit >= 1; credit--) clients[sent++ % N]!.raw.send('{"session":"ack","seq":1}');
}, 5);
await sleep(SECONDS * 1000);
clearInterval(timer);
await sleep(500);
const cpu1 = (await server.stats()).cpuUs;
const field = (line: string, name: string): number => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0);
const sum = { scavenges: 0, full: 0, promoted: 0, allocated: 0, pause: 0 };
for (const line of server.gcTrace.slice(gc0)) {
  if (/\bgc=s\b/.test(line)) {
    sum.scavenges++;
    sum.promoted += field(line, 'promoted');
    sum.allocated += field(line, 'allocated');
  } else sum.full++;
  sum.pause += field(line, 'pause');
}
console.log(
  `${sent} acks in ${SECONDS} s: server CPU ${((cpu1 - cpu0) / sent).toFixed(1)} µs per ack; ${sum.scavenges} scavenges, ${sum.full} mark-compacts, ` +
    `${(sum.allocated / sent).toFixed(0)} B allocated and ${(sum.promoted / sent).toFixed(0)} B promoted per ack (scavenges' counts), GC pause ${sum.pause.toFixed(0)} ms`,
);
if (HEAP) {
  const dir = join(process.env.BENCH_RESULTS_DIR ?? RESULTS_DIR, 'ack-cost');
  mkdirSync(dir, { recursive: true });
  await server.command(`profile stop ${dir}`);
  interface Node {
    callFrame: { functionName: string; url: string; lineNumber: number };
    selfSize: number;
    children: Node[];
  }
  const { head } = JSON.parse(readFileSync(join(dir, 'heap.heapprofile'), 'utf8')) as { head: Node };
  const name = (n: Node): string => `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*node_modules\//, '').replace(/^.*\//, '')}:${n.callFrame.lineNumber + 1}`;
  const by = new Map<string, number>();
  const walk = (n: Node, parent: Node | null): void => {
    if (n.selfSize > 0) {
      const key = `${name(n)} ← ${parent ? name(parent) : '-'}`;
      by.set(key, (by.get(key) ?? 0) + n.selfSize);
    }
    for (const c of n.children) walk(c, n);
  };
  walk(head, null);
  console.log('bytes allocated per ack (sampled), by function ← caller:');
  for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${(v / sent).toFixed(0).padStart(6)} B  ${k}`);
}
await closeAll([sender, ...clients]);
await server.stop();
