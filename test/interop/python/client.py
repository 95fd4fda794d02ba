"""Interop fixture: a client on Python's `websockets` library (Debian's
python3-websockets 10.4, asyncio API), run by test/interop/python.test.ts
against the CLI server. Not the Node `ws` package: a different framing,
masking, ping and close implementation.

Usage: client.py URL protocol [--ping-wait SECONDS]
       client.py URL oversize [--size BYTES]

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
"""

import argparse
import asyncio
import json
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("case", choices=["protocol", "oversize"])
    parser.add_argument("--ping-wait", type=float, default=1.2)
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    if args.case == "protocol":
        summary = asyncio.run(protocol_case(args.url, args.ping_wait))
    else:
        summary = asyncio.run(oversize_case(args.url, args.size))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
