/**
 * A process holding N idle client connections (`ulimit -n` was capped at 20000
 * on the benchmark machine, ~19k sockets per process, so 10k clients plus a 10k-socket server need more than one process):
 *
 *   node bench/.build/idle-clients.mjs <system> <url> <n> [localAddress|''] [batch]
 *
 * `localAddress` (e.g. 127.0.0.11) is the source address of every connection:
 * one source address has ~28k ephemeral ports (net.ipv4.ip_local_port_range
 * 32768–60999 here), so 50k connections to one server port need several.
 * `batch`: handshakes in flight at once (default 250).
 *
 * `ws` clients answer pings automatically; socket.io-client answers engine.io
 * pings. Prints "open <n> <ms>" once all are open (ms: from the first
 * handshake to the last open). Commands on stdin, one line each:
 *   counts  → `counts {open, closed, pings, errors}`
 *   request → every connection sends one request with its own requestID and
 *             waits for its reply: `replied {ok, wrong, missing, ms}` (missing:
 *             no reply within 60 s)
 */
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client';

const [system, url, nArg, localAddress, batchArg] = process.argv.slice(2);
const n = Number(nArg);
/** Handshakes in flight at once. */
const BATCH = Number(batchArg ?? 250);
const counts = { open: 0, closed: 0, pings: 0, errors: 0 };
/** Every open connection, whatever the system, as send + a replaceable message handler. */
interface Held {
  send(text: string): void;
  handler: (text: string) => void;
}
const held: Held[] = [];
const REQUEST_TIMEOUT_MS = 60_000;

function openOne(): Promise<void> {
  return new Promise((resolve, reject) => {
    const h: Held = { send: () => undefined, handler: () => undefined };
    if (system === 'socketio') {
      const socket: IoSocket = ioClient(url!, {
        transports: ['websocket'],
        forceNew: true,
        reconnection: false,
        timeout: 60_000,
        ...(localAddress ? { localAddress } : {}),
      } as Parameters<typeof ioClient>[1]);
      h.send = (text) => void socket.emit('message', text);
      socket.on('message', (text: string) => h.handler(text));
      socket.io.on('ping', () => counts.pings++);
      socket.once('connect', () => {
        counts.open++;
        held.push(h);
        socket.once('disconnect', () => counts.closed++);
        resolve();
      });
      socket.once('connect_error', (err) => {
        counts.errors++;
        reject(err);
      });
      return;
    }
    const ws = new WebSocket(url!, { perMessageDeflate: false, ...(localAddress ? { localAddress } : {}) });
    h.send = (text) => ws.send(text);
    ws.on('message', (data: Buffer) => h.handler(data.toString()));
    ws.on('ping', () => counts.pings++);
    ws.on('error', () => counts.errors++);
    ws.once('open', () => {
      counts.open++;
      held.push(h);
      ws.once('close', () => counts.closed++);
      resolve();
    });
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

/** Every held connection sends one request and must get the reply carrying its own requestID. */
function requestAll(): Promise<{ ok: number; wrong: number; missing: number; ms: number }> {
  const REPLY = /^\{"requestID":(\d+),"success":true/;
  const t0 = performance.now();
  let ok = 0;
  let wrong = 0;
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      resolve({ ok, wrong, missing: held.length - ok, ms: performance.now() - t0 });
    };
    const timer = setTimeout(done, REQUEST_TIMEOUT_MS);
    held.forEach((h, i) => {
      let answered = false;
      h.handler = (text) => {
        const m = REPLY.exec(text);
        if (answered || !m || Number(m[1]) !== i + 1) return void wrong++;
        answered = true;
        if (++ok === held.length) done();
      };
    });
    held.forEach((h, i) => h.send(`{"requestID":${i + 1},"command":"c${i + 1}"}`));
    if (held.length === 0) done();
  });
}

const t0 = performance.now();
try {
  for (let i = 0; i < n; i += BATCH) {
    await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, openOne));
  }
} catch (err) {
  // One line the parent can quote (socket.io-client's connect timeout is a bare "timeout").
  console.error(`failed: ${(err as Error).message} after ${((performance.now() - t0) / 1000).toFixed(0)} s (${counts.open} of ${n} open)`);
  process.exit(1);
}
console.log(`open ${counts.open} ${(performance.now() - t0).toFixed(0)}`);
const commands = createInterface({ input: process.stdin });
// The parent went away (killed, crashed): so do these sockets.
commands.on('close', () => process.exit(0));
commands.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'counts') console.log(`counts ${JSON.stringify(counts)}`);
  else if (cmd === 'request') void requestAll().then((r) => console.log(`replied ${JSON.stringify(r)}`));
  else console.log(`error unknown command ${cmd}`);
});
