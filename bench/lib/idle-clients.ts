/**
 * A process holding N idle client connections (`ulimit -n` was capped at 20000
 * on the benchmark machine, ~19k sockets per process, so 10k clients plus a 10k-socket server need more than one process):
 *
 *   node --import tsx bench/lib/idle-clients.ts <system> <url> <n>
 *
 * `ws` clients answer pings automatically; socket.io-client answers engine.io
 * pings. Prints "open <n>" once all are open; on "counts" from stdin prints
 * `counts {open, closed, pings, errors}`.
 */
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { io as ioClient } from 'socket.io-client';

const [system, url, nArg] = process.argv.slice(2);
const n = Number(nArg);
const counts = { open: 0, closed: 0, pings: 0, errors: 0 };
const keep: unknown[] = [];

function openOne(): Promise<void> {
  return new Promise((resolve, reject) => {
    if (system === 'socketio') {
      const socket = ioClient(url!, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 60_000 });
      keep.push(socket);
      socket.io.on('ping', () => counts.pings++);
      socket.once('connect', () => {
        counts.open++;
        socket.once('disconnect', () => counts.closed++);
        resolve();
      });
      socket.once('connect_error', (err) => {
        counts.errors++;
        reject(err);
      });
      return;
    }
    const ws = new WebSocket(url!, { perMessageDeflate: false });
    keep.push(ws);
    ws.on('ping', () => counts.pings++);
    ws.on('error', () => counts.errors++);
    ws.once('open', () => {
      counts.open++;
      ws.once('close', () => counts.closed++);
      resolve();
    });
    ws.once('unexpected-response', () => reject(new Error('unexpected response')));
    ws.once('error', reject);
  });
}

const BATCH = 250;
for (let i = 0; i < n; i += BATCH) {
  await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, openOne));
}
console.log(`open ${counts.open}`);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'counts') console.log(`counts ${JSON.stringify(counts)}`);
});
