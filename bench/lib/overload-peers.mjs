// Abusive peers for bench/scenarios/overload.ts and test/cli/overload.test.ts,
// in their own process (plain JavaScript: starts in ~50 ms even on a busy
// machine, and their own work does not weigh on the process that hosts the
// server and the prober), raw frames on /server (supervisor and raw ws).
//
//   node overload-peers.mjs '{"port":1234,"kind":"pipeline","peers":10,"durationMs":3000}'
//
// Prints `ready` once every peer is upgraded, waits for a line on stdin,
// sends, and prints one JSON line with what every peer received when all
// expected frames are in (or after `timeoutMs`). Kinds:
//   pipeline   requests pipelined as fast as the socket takes them for `durationMs`; checks every reply comes, in order
//   deep       `each` 500k-deep `[[[…]]]` messages, then one plain request
//   broadcast  `each` (2) `broadcast` requests from each of the first `senders` peers (all of them by default),
//              pipelined; every peer counts the pushes and checks each sender's order
//   deeploop   each peer sends a 500k-deep message whenever the last one was answered, for `durationMs`
//   pingflood  ping frames as fast as the socket takes them, for `durationMs` (`"noRead":true`: the peers never read,
//              so the server's pongs pile up; `at50k`: ms until the 50,000th ping was handed to the socket)
//   nofin      a close frame, then the echo is read and the TCP side never closed
// With `"proto":"eio"` the peers speak Socket.IO over engine.io's WebSocket
// transport (path /socket.io/?EIO=4&transport=websocket): they answer the
// open packet with a namespace connect (`40`), wrap every text as the event
// `42["message",text]`, unwrap the server's, and answer engine.io pings (`2`)
// with pongs (`3`). Ping flood and close frames are WebSocket frames either way.
import net from 'node:net';
import { randomBytes } from 'node:crypto';

const opts = JSON.parse(process.argv[2]);
const { port, kind, peers: n } = opts;
const EIO = opts.proto === 'eio';
/** What the peers send as one message: the text itself, or for Socket.IO the event `message` carrying it. */
const msg = (text) => frame(EIO ? '42' + JSON.stringify(['message', text]) : text);
const timeoutMs = opts.timeoutMs ?? 40_000;
/** broadcast: how many peers send, and how many broadcasts each. */
const senders = Math.min(opts.senders ?? n, n);
const each = opts.each ?? 2;
/** Text replies kept per peer for the report (the first ones); tests ask for more. */
const keepTexts = opts.keepTexts ?? 5;

/** A masked client text frame with a zero mask key (payload bytes unchanged; valid per RFC 6455). */
function frame(text) {
  const payload = Buffer.from(text);
  const len = payload.length;
  const header = len < 126 ? Buffer.from([0x81, 0x80 | len]) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (len >= 126 && len < 65536) {
    header[0] = 0x81;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  } else if (len >= 65536) {
    header[0] = 0x81;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, Buffer.alloc(4), payload]);
}

class Peer {
  constructor(index) {
    this.index = index;
    this.count = 0;
    this.texts = [];
    this.nextId = 1;
    this.inOrder = true;
    this.closeCode = null;
    this.closeReason = '';
    this.ended = false;
    this.buf = Buffer.alloc(0);
    this.lastFrom = new Map();
    this.pushes = 0;
    this.orderErrors = 0;
    this.sent = undefined;
  }
  connect() {
    return new Promise((resolve, reject) => {
      const socket = (this.socket = net.connect(port, '127.0.0.1'));
      let head = Buffer.alloc(0);
      const onHead = (chunk) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end === -1) return;
        socket.off('data', onHead);
        if (!head.subarray(0, 12).toString().includes('101')) return reject(new Error(head.toString()));
        socket.on('data', (c) => this.onData(c));
        if (EIO) this.eioConnected = resolve;
        if (head.length > end + 4) this.onData(head.subarray(end + 4));
        if (!EIO) resolve();
      };
      socket.on('data', onHead);
      socket.on('error', () => {});
      socket.on('close', () => (this.ended = true));
      socket.once('error', reject);
      socket.write(
        `GET ${EIO ? '/socket.io/?EIO=4&transport=websocket' : '/server'} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
  }
  onData(chunk) {
    const b = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let i = 0;
    for (;;) {
      if (b.length - i < 2) break;
      const opcode = b[i] & 0x0f;
      let len = b[i + 1] & 0x7f;
      let at = i + 2;
      if (len === 126) {
        if (b.length - i < 4) break;
        len = b.readUInt16BE(i + 2);
        at = i + 4;
      } else if (len === 127) {
        if (b.length - i < 10) break;
        len = Number(b.readBigUInt64BE(i + 2));
        at = i + 10;
      }
      if (b.length < at + len) break;
      const payload = b.subarray(at, at + len);
      if (opcode === 1) {
        if (EIO) this.eio(payload.toString());
        else this.text(payload.toString());
      }
      else if (opcode === 8) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : null;
        this.closeReason = payload.subarray(2).toString();
      }
      i = at + len;
    }
    this.buf = i === b.length ? Buffer.alloc(0) : Buffer.from(b.subarray(i));
  }
  /** An engine.io packet: open → namespace connect; connected; ping → pong; an event → its text. */
  eio(p) {
    if (p === '2') this.socket.write(frame('3'));
    else if (p.startsWith('0')) this.socket.write(frame('40'));
    else if (p.startsWith('40')) this.eioConnected?.();
    else if (p.startsWith('42')) {
      const [, text] = JSON.parse(p.slice(2));
      this.text(String(text));
    }
  }
  text(s) {
    this.count++;
    if (kind === 'pipeline') {
      const m = /"requestID":(\d+)/.exec(s);
      if (!m || Number(m[1]) !== this.nextId) this.inOrder = false;
      this.nextId++;
    } else if (kind === 'broadcast') {
      if (!s.startsWith('{"command":"broadcast"')) return;
      this.pushes++;
      const [from, k] = JSON.parse(s).someOtherThing.split('.');
      if (Number(k) !== (this.lastFrom.get(from) ?? 0) + 1) this.orderErrors++;
      this.lastFrom.set(from, Number(k));
    } else if (this.texts.length < keepTexts) this.texts.push(s.length > 300 ? s.slice(0, 300) : s);
  }
  expected() {
    if (kind === 'pipeline') return this.sent ?? Infinity;
    if (kind === 'deeploop' || kind === 'pingflood') return this.sent ?? Infinity;
    if (kind === 'nofin') return Infinity;
    if (kind === 'deep') return opts.each + 1;
    // Every sender's broadcasts, plus a sender's own replies.
    return senders * each + (this.index < senders ? each : 0);
  }
  done() {
    if (kind === 'nofin') return this.ended || (this.closeCode !== null && performance.now() - start > opts.durationMs);
    if (kind === 'pingflood') return this.ended || this.closeCode !== null || this.sent !== undefined;
    return this.ended || this.closeCode !== null || this.count >= this.expected();
  }
}

let start = 0;
const peers = Array.from({ length: n }, (_, i) => new Peer(i));
for (let i = 0; i < n; i += 50) await Promise.all(peers.slice(i, i + 50).map((p) => p.connect()));
process.stdout.write('ready\n');
await new Promise((resolve) => process.stdin.once('data', resolve));

start = performance.now();
if (kind === 'deeploop') {
  const deep = msg('['.repeat(500_000) + ']'.repeat(500_000));
  for (const p of peers) {
    void (async () => {
      let n = 0;
      while (performance.now() - start < opts.durationMs && !p.ended && p.closeCode === null) {
        p.socket.write(deep);
        n++;
        while (p.count < n && !p.ended && p.closeCode === null) await new Promise((r) => setTimeout(r, 2));
      }
      p.sent = n;
    })();
  }
} else if (kind === 'pingflood') {
  const ping = Buffer.concat(Array.from({ length: 1000 }, () => Buffer.from([0x89, 0x80, 0, 0, 0, 0])));
  for (const p of peers) {
    if (opts.noRead) p.socket.pause();
    void (async () => {
      let n = 0;
      while (performance.now() - start < opts.durationMs && !p.ended && p.closeCode === null) {
        n += 1000;
        p.pingsSent = n;
        if (n === 50_000) p.at50k = performance.now() - start;
        if (!p.socket.write(ping)) await new Promise((r) => p.socket.once('drain', r));
      }
      p.sent = n;
    })();
  }
} else if (kind === 'nofin') {
  // Close frame 1000; the server's echo is read (onData records it); our TCP side stays open.
  for (const p of peers) p.socket.write(Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]));
} else if (kind === 'pipeline') {
  // As fast as the socket takes them, for durationMs; then wait for every reply.
  for (const p of peers) {
    void (async () => {
      let id = 1;
      while (performance.now() - start < opts.durationMs && !p.ended && p.closeCode === null) {
        const parts = [];
        for (let k = 0; k < 500; k++, id++) parts.push(msg(`{"requestID":${id},"command":"work"}`));
        if (!p.socket.write(Buffer.concat(parts))) await new Promise((r) => p.socket.once('drain', r));
        // At most `window` requests unanswered (default 20k): more would only wait in kernel buffers.
        while (id - 1 - p.count > (opts.window ?? 20_000) && !p.ended) await new Promise((r) => setTimeout(r, 5));
      }
      p.sent = id - 1;
    })();
  }
} else if (kind === 'deep') {
  const deep = msg('['.repeat(500_000) + ']'.repeat(500_000));
  for (const p of peers) {
    for (let k = 0; k < opts.each; k++) p.socket.write(deep);
    p.socket.write(msg('{"requestID":42,"command":"after"}'));
  }
} else {
  for (const p of peers.slice(0, senders)) {
    const ks = Array.from({ length: each }, (_, i) => i + 1);
    p.socket.write(Buffer.concat(ks.map((k) => msg(`{"requestID":${k},"command":"broadcast","someOtherThing":"${p.index}.${k}"}`))));
  }
}
const deadline = Date.now() + timeoutMs;
while (!peers.every((p) => p.done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const result = {
  ms: performance.now() - start,
  peers: peers.map((p) => ({
    count: p.count,
    closeCode: p.closeCode,
    closeReason: p.closeReason,
    ended: p.ended,
    ...(kind === 'pipeline' ? { sent: p.sent ?? null, inOrder: p.inOrder } : {}),
    ...(kind === 'deeploop' ? { sent: p.sent ?? null } : {}),
    ...(kind === 'pingflood' ? { sent: p.pingsSent ?? 0, at50k: p.at50k ?? null } : {}),
    ...(kind === 'broadcast' ? { pushes: p.pushes, orderErrors: p.orderErrors } : {}),
    ...(kind === 'deep' ? { texts: p.texts } : {}),
  })),
};
process.stdout.write(JSON.stringify(result) + '\n');
for (const p of peers) p.socket.destroy();
