"""Interop fixture: a client on Python's `websockets` library (Debian's
python3-websockets 10.4, asyncio API), run by test/interop/python.test.ts
against the CLI server. Not the Node `ws` package: a different framing,
masking, ping and close implementation.

Usage: client.py URL protocol [--ping-wait SECONDS]
       client.py URL oversize [--size BYTES]
       client.py URL[,URL…] session [--burst N]

Prints one JSON summary line on stdout; the TS test asserts on it. Exit status
is 0 unless the script itself crashed (failed checks are in the summary).

protocol:
  - 20 requests with Go-style capitalised names (R13: names match
    case-insensitively), each reply checked for requestID and success (R14);
  - a broadcast: its reply first, then the push (no requestID);
  - malformed JSON: an error reply with requestID 0, and the next request
    still works (R15);
  - stays idle for --ping-wait seconds while the server pings; websockets
    answers pings itself (R4); the pings are counted;
  - closes with 1000 and reports the code the server echoed (R16).
oversize:
  - sends a text message of --size bytes and reports the close code (R15/R21: 1009).
session (a server with --sessions; docs/sessions.md, "Writing a client"):
  - a session client written from the docs alone (not the Node client's
    codec): opens a session, sends numbered requests (`<cseq>:<payload>`,
    each a broadcast whose push a plain observer connection counts), reads
    `<seq>:` data frames, acks, and cuts the TCP connection at awkward
    moments, resuming with its token each time: half-way through a request
    frame; right after three requests, before their ack; in the middle of a
    burst of --burst broadcasts from another connection; and leaving the old
    connection open (a takeover: the server must drop it). Then a resume
    with a wrong token (a new session, reason forbidden), an ack, `end` and
    close 1000. The summary says what arrived how often, and every frame
    the client could not square with the docs (`violations`). Given several
    URLs (servers sharing a session store), each new connection goes to the
    next server, the takeover's to the same one.
"""

import argparse
import asyncio
import json
import os
import struct
import sys
import time

import websockets
from websockets.legacy.client import WebSocketClientProtocol


class CountingProtocol(WebSocketClientProtocol):
    """Counts the pings the server sends (websockets answers each with pong())."""

    pings_answered = 0

    async def pong(self, data=b""):
        CountingProtocol.pings_answered += 1
        await super().pong(data)


async def recv_json(ws, timeout=5.0):
    text = await asyncio.wait_for(ws.recv(), timeout)
    return json.loads(text)


async def protocol_case(url, ping_wait):
    s = {
        "library": "websockets " + websockets.__version__,
        "python": sys.version.split()[0],
        "requests": 0,
        "replies_ok": 0,
        "reply_errors": [],
    }
    # ping_interval=None: the client sends no pings of its own, so the only
    # heartbeat on the wire is the server's.
    async with websockets.connect(
        url, ping_interval=None, open_timeout=5, close_timeout=5, create_protocol=CountingProtocol
    ) as ws:
        # 1. Requests with capitalised (Go field) names.
        for i in range(1, 21):
            await ws.send(json.dumps({"RequestID": i, "Command": f"cmd {i}", "SomeOtherThing": "x"}))
            s["requests"] += 1
            reply = await recv_json(ws)
            want = f"Server processed command: cmd {i}"
            if reply.get("requestID") == i and reply.get("success") is True and reply.get("someOtherThing") == want:
                s["replies_ok"] += 1
            else:
                s["reply_errors"].append({"sent": i, "got": reply})

        # 2. Broadcast: our reply, then the push to every client (us included).
        await ws.send(json.dumps({"requestID": 100, "command": "broadcast", "someOtherThing": "hello from python"}))
        s["broadcast_reply"] = await recv_json(ws)
        s["broadcast_push"] = await recv_json(ws)

        # 3. Malformed JSON: answered, not fatal.
        await ws.send('{"RequestID": 7, oops')
        s["malformed_reply"] = await recv_json(ws)
        await ws.send(json.dumps({"requestID": 101, "command": "after malformed"}))
        s["after_malformed_reply"] = await recv_json(ws)

        # 4. Idle across several server ping intervals.
        before = CountingProtocol.pings_answered
        started = time.monotonic()
        await asyncio.sleep(ping_wait)
        s["idle_seconds"] = round(time.monotonic() - started, 3)
        s["pings_answered_while_idle"] = CountingProtocol.pings_answered - before
        s["open_after_idle"] = ws.open
        await ws.send(json.dumps({"requestID": 102, "command": "after idle"}))
        s["after_idle_reply"] = await recv_json(ws)

        # 5. Close 1000: websockets waits for the server's close frame.
        await ws.close(code=1000, reason="bye")
        s["close_code"] = ws.close_code  # the code in the server's close frame
        s["close_reason"] = ws.close_reason
    s["pings_answered_total"] = CountingProtocol.pings_answered
    return s


async def oversize_case(url, size):
    s = {"sent_bytes": size}
    async with websockets.connect(url, ping_interval=None, open_timeout=5, close_timeout=5) as ws:
        await ws.send("x" * size)
        try:
            extra = await asyncio.wait_for(ws.recv(), 5)
            s["unexpected_message"] = extra
        except websockets.ConnectionClosed as e:
            s["exception"] = type(e).__name__
        except asyncio.TimeoutError:
            s["exception"] = "timeout"
        s["close_code"] = ws.close_code
        s["close_reason"] = ws.close_reason
    return s


class SessionClient:
    """The client side of one session, from docs/sessions.md: its position, its numbered requests, its resumes."""

    def __init__(self, urls):
        # Several servers sharing one session store: each connection goes to the next (a load balancer's choice).
        self.urls = [u + ("&" if "?" in u else "?") + "ws-session=1" for u in urls.split(",")]
        self.node = -1
        self.id = self.token = self.epoch = None
        self.last_seq = 0  # the highest seq received, every one before it included
        self.next_cseq = 1
        self.held = {}  # cseq -> payload, until the server acks it
        self.data = []  # payloads in the order received, duplicates dropped
        self.attached = []
        self.violations = []
        self.ws = None
        self.reader = None
        self.since_ack = self.since_ack_chars = 0
        self.cut_when = None  # checked after each data frame: true cuts the connection there, mid-read

    async def connect(self, claim=None, same_node=False):
        if not same_node:
            self.node = (self.node + 1) % len(self.urls)
        ws = await websockets.connect(self.urls[self.node], ping_interval=None, max_queue=None, open_timeout=5, close_timeout=1)
        if claim is None and self.id is None:
            await ws.send('{"session":"open"}')
        else:
            claim = claim or {"id": self.id, "token": self.token, "lastSeq": self.last_seq, "epoch": self.epoch}
            await ws.send(json.dumps({"session": "resume", **claim}))
        a = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if a.get("session") != "attached":
            self.violations.append(f"first frame not attached: {a}")
        self.attached.append(a)
        resend = []
        if a.get("resumed") is True:
            if a["id"] != self.id or a["lastSeq"] != self.last_seq or a["cseq"] >= self.next_cseq:
                self.violations.append(f"attached does not square with the resume: {a}")
            # cseq: the last request run; 0: re-send every one held (those run are answered duplicate).
            for k in [k for k in self.held if k <= a["cseq"]]:
                del self.held[k]
            resend = sorted(self.held)
        elif self.id is not None and claim is None:
            # A new session: the position restarts at 0, requests at 1; the old ones are the application's to judge.
            self.last_seq, self.next_cseq, self.held = 0, 1, {}
        self.id, self.token, self.epoch = a["id"], a["token"], a["epoch"]
        self.ws = ws
        self.reader = asyncio.ensure_future(self._read(ws))
        for k in resend:
            await ws.send(f"{k}:{self.held[k]}")
        return a

    async def _read(self, ws):
        try:
            async for f in ws:
                if f.startswith("{"):
                    c = json.loads(f)
                    if c.get("session") == "ack":
                        if c["cseq"] >= self.next_cseq:
                            self.violations.append(f"ack of a cseq never sent: {f}")
                        for k in [k for k in self.held if k <= c["cseq"]]:
                            del self.held[k]
                    elif c.get("session") == "error":
                        self.violations.append(f"error frame: {f}")
                    continue
                head, colon, payload = f.partition(":")
                if not colon or not head.isdigit():
                    self.violations.append(f"data frame without its number: {f[:60]}")
                    continue
                seq = int(head)
                if seq <= self.last_seq:
                    continue  # had it: sent before the cut, and replayed
                if seq != self.last_seq + 1:
                    self.violations.append(f"seq {seq} after {self.last_seq}")
                self.last_seq = seq
                self.data.append(json.loads(payload))
                if self.cut_when is not None and self.cut_when():
                    self.cut_when = None
                    ws.transport.abort()
                    return
                # Every 32 messages or 1 MiB, whichever first (a count alone overflows on large messages).
                self.since_ack += 1
                self.since_ack_chars += len(f)
                if self.since_ack >= 32 or self.since_ack_chars >= 1 << 20:
                    self.since_ack = self.since_ack_chars = 0
                    await ws.send(json.dumps({"session": "ack", "seq": self.last_seq}))
        except websockets.ConnectionClosed:
            pass

    async def request(self, payload, partial=False):
        k = self.next_cseq
        self.next_cseq += 1
        self.held[k] = payload
        if self.ws is None:
            return
        if not partial:
            await self.ws.send(f"{k}:{payload}")
            return
        # Half of the frame (masked, as a client's must be), then the cut.
        body = f"{k}:{payload}".encode()
        mask = os.urandom(4)
        head = bytes([0x81]) + (bytes([0x80 | len(body)]) if len(body) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(body)))
        frame = head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body))
        self.ws.transport.write(frame[: len(frame) // 2])
        await asyncio.sleep(0.02)
        await self.cut()

    async def cut(self):
        """A TCP cut: no close frame, nothing more read from this connection."""
        ws, self.ws = self.ws, None
        ws.transport.abort()
        await asyncio.wait([self.reader], timeout=2)


async def until(ok, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return ok()


async def session_case(urls, burst):
    s = {}
    seen = {}  # what the plain observer got: each request's broadcast, once per run of the request
    plain = urls.split(",")
    observer = await websockets.connect(plain[-1], ping_interval=None, max_queue=None, open_timeout=5)

    async def observe():
        try:
            async for f in observer:
                m = json.loads(f)
                if m.get("command") == "broadcast":
                    seen[m["someOtherThing"]] = seen.get(m["someOtherThing"], 0) + 1
        except websockets.ConnectionClosed:
            pass

    watching = asyncio.ensure_future(observe())
    c = SessionClient(urls)
    await c.connect()
    n = 0

    async def request(partial=False):
        nonlocal n
        n += 1
        await c.request(json.dumps({"requestID": n, "command": "broadcast", "someOtherThing": f"c{n}"}), partial)

    for _ in range(5):
        await request()
    await until(lambda: seen.get("c5"))
    # 1. Cut half-way through request 6's frame.
    await request(partial=True)
    await c.connect()
    # 2. Three requests, cut before their ack (and their replies) could come.
    for _ in range(3):
        await request()
    await c.cut()
    await c.connect()
    # 3. A burst from another connection, cut in the middle of it.
    pusher = await websockets.connect(plain[0], ping_interval=None, max_queue=None, open_timeout=5)
    for i in range(1, burst + 1):
        await pusher.send(json.dumps({"requestID": i, "command": "broadcast", "someOtherThing": f"p{i}"}))
    pushes = lambda: [m["someOtherThing"] for m in c.data if m.get("command") == "broadcast" and m["someOtherThing"].startswith("p")]
    c.cut_when = lambda: len(pushes()) >= burst // 3
    await asyncio.wait([c.reader], timeout=5)
    s["burst_cut_after"] = len(pushes())
    c.ws = None
    await c.connect()
    await until(lambda: len(pushes()) >= burst)
    await pusher.close()
    # 4. A takeover: the old connection left open (the client stops reading it), a request held meanwhile. On the
    # same server (across servers the old one drops it only at its next lease renewal, seconds later).
    old, old_reader = c.ws, c.reader
    old_reader.cancel()
    c.ws = None
    await request()
    await c.connect(same_node=True)
    try:
        await asyncio.wait_for(old.wait_closed(), 3)
        s["takeover_old_close"] = old.close_code
    except asyncio.TimeoutError:
        s["takeover_old_close"] = None
    await request()
    replies = lambda: [m["requestID"] for m in c.data if "requestID" in m]
    await until(lambda: len(replies()) >= n and all(seen.get(f"c{k}") for k in range(1, n + 1)))
    # 5. A wrong token: a new session (forbidden), which numbers its requests from 1; this one goes on.
    other = SessionClient(plain[0])
    forbidden = await other.connect({"id": c.id, "token": "A" * 43, "lastSeq": c.last_seq, "epoch": c.epoch})
    s["forbidden"] = {k: forbidden.get(k) for k in ("resumed", "reason", "lastSeq", "cseq")}
    s["forbidden_new_id"] = forbidden["id"] != c.id
    await other.request(json.dumps({"requestID": 1, "command": "after forbidden"}))
    await until(lambda: other.data)
    s["forbidden_session_reply"] = other.data[:1]
    await other.ws.close()
    # 6. Orderly end: ack what arrived, end, close 1000.
    await c.ws.send(json.dumps({"session": "ack", "seq": c.last_seq}))
    await c.ws.send('{"session":"end"}')
    await c.ws.close(1000)
    s["end_close_code"] = c.ws.close_code
    await observer.close()
    await watching

    s["requests"] = n
    s["reply_counts"] = {str(k): replies().count(k) for k in range(1, n + 1)}
    s["runs"] = {str(k): seen.get(f"c{k}", 0) for k in range(1, n + 1)}
    own = [m["someOtherThing"] for m in c.data if m.get("command") == "broadcast" and m["someOtherThing"].startswith("c")]
    s["own_pushes_in_order"] = own == [f"c{k}" for k in range(1, n + 1)]
    s["burst"] = burst
    s["burst_in_order_once"] = pushes() == [f"p{i}" for i in range(1, burst + 1)]
    s["burst_received"] = len(pushes())
    s["resumes"] = [{k: a.get(k) for k in ("resumed", "lastSeq", "replay", "cseq", "reason")} for a in c.attached[1:]]
    s["last_seq"] = c.last_seq
    s["messages"] = len(c.data)
    s["violations"] = c.violations + other.violations
    s["servers"] = len(plain)
    return s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("case", choices=["protocol", "oversize", "session"])
    parser.add_argument("--ping-wait", type=float, default=1.2)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--burst", type=int, default=300)
    args = parser.parse_args()
    if args.case == "protocol":
        summary = asyncio.run(protocol_case(args.url, args.ping_wait))
    elif args.case == "session":
        summary = asyncio.run(session_case(args.url, args.burst))
    else:
        summary = asyncio.run(oversize_case(args.url, args.size))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
