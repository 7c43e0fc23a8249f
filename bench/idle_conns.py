#!/usr/bin/env python3
"""Memory per idle keep-alive connection (issue #25): one ferry hop in front of the bulk
cells' nginx origin; N client connections each fetch one response of --path (64 KiB by
default, so every connection has carried a large body) and then stay open, idle. Reports
the proxy's VmRSS before the connections, with all N open and idle, and the bytes per
connection.

Usage: bench/idle_conns.py [--connections 10000] [--path /64k] [--proxy PATH]
Needs a release build of ferry-proxy (bench/run.py builds it)."""
import argparse, atexit, os, pathlib, resource, socket, sys, tempfile, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run as R  # noqa: E402


def fetch(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = s.recv(262144)
        if not chunk:
            raise RuntimeError("closed mid-body")
        body += chunk
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--path", default="/64k")
    ap.add_argument("--proxy", default=str(R.RELEASE / "ferry-proxy"))
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds the connections stay idle before RSS is read again "
                         "(the proxy gives back an idle connection's buffers after 1 s)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    atexit.register(R.cleanup)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-idle-"))
    origin, ports = R.start_bulk_origin(work)
    # The proxy's own fd limit: inherited, raised above.
    port, proxy = R.start_ferry(args.proxy, ports["http1"], work, "ferry")
    R.wait_port(port, proxy, "ferry")
    time.sleep(0.5)
    before = R.status_kb([proxy.pid], "VmRSS")
    socks = []
    for i in range(args.connections):
        socks.append(fetch(port, args.path))
    at_once = R.status_kb([proxy.pid], "VmRSS")
    time.sleep(args.settle)
    after = R.status_kb([proxy.pid], "VmRSS")
    peak = R.status_kb([proxy.pid], "VmHWM")
    per = (after - before) * 1024 / args.connections
    per_at_once = (at_once - before) * 1024 / args.connections
    print(f"{args.connections} idle keep-alive connections, each after one {args.path}: "
          f"VmRSS {before} KB -> {at_once} KB right after the last ({per_at_once:,.0f} bytes "
          f"per connection) -> {after} KB after {args.settle:g} s idle (peak {peak} KB): "
          f"{per:,.0f} bytes per connection (client side only; the upstream pool keeps at "
          f"most 512)")
    for s in socks:
        s.close()
    R.stop([proxy, origin])


if __name__ == "__main__":
    main()
