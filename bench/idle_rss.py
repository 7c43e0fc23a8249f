#!/usr/bin/env python3
"""Idle RSS of ferry-proxy as bench/run.py's two-hop variant starts it: proxy A (upstream
listener resolving MESH_SERVICE through ferry-control, identity on), proxy B (inbound,
identity on) and a proxy without identity; VmRSS after /ready, before traffic. With
--requests N, also RSS after N HTTP/1.1 requests (h2load) through A -> B.

Most of an idle proxy's RSS is its binary's code mapped from the page cache, and how much
of it a fault maps depends on the page cache's state: --evict drops the binary's cached
pages first (posix_fadvise DONTNEED on that file only) so runs compare alike.
Usage: bench/idle_rss.py [--proxy PATH] [--runs 3] [--evict] [--requests 10000]
Needs release builds of ferry-proxy, ferry-control and ferry-testkit (ferry-bench-backend)."""
import argparse, os, pathlib, statistics, sys, tempfile, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run as R  # noqa: E402


def status(pid):
    fields = dict(l.split(":", 1) for l in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0])


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def once(proxy, requests):
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-idle-rss-"))
    try:
        port = R.free_port()
        backend = R.spawn([R.RELEASE / "ferry-bench-backend", "--http1", f"127.0.0.1:{port}"],
                          R.LOAD_CPU, work / "backend.log")
        R.wait_port(port, backend, "backend")
        b_port, a_admin, b_admin = R.free_port(), R.free_port(), R.free_port()
        _, mesh = R.start_mesh_control(work, "mesh", b_port)
        _, b = R.start_ferry(proxy, port, work, "b", port=b_port, admin=b_admin,
                             extra=R.mesh_b_args(mesh))
        R.wait_port(b_port, b, "proxy B")
        a_port, a = R.start_ferry_upstream(proxy, R.MESH_SERVICE, work, "a", admin=a_admin,
                                           extra=R.mesh_a_args(mesh))
        R.wait_port(a_port, a, "proxy A")
        p_port, p = R.start_ferry(proxy, port, work, "plain")
        R.wait_port(p_port, p, "proxy without identity")
        R.wait_ready(b_admin, b, "proxy B")
        R.wait_ready(a_admin, a, "proxy A")
        out = {"A": status(a.pid), "B": status(b.pid), "no identity": status(p.pid)}
        if requests:
            R.run_bounded(["taskset", "-c", R.LOAD_CPU, "h2load", "--h1", "-n", str(requests),
                           "-c", "32", "-t", "1", f"http://127.0.0.1:{a_port}/"], 300)
            out["A after load"], out["B after load"] = status(a.pid), status(b.pid)
        return out
    finally:
        R.stop(list(R.PROCS))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", default=R.RELEASE / "ferry-proxy")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--evict", action="store_true")
    ap.add_argument("--requests", type=int, default=0)
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        if args.evict:
            evict(args.proxy)
        runs.append(once(args.proxy, args.requests))
        time.sleep(0.2)
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key:14s} median {statistics.median(values) / 1024:5.2f} MB  (KB: {values})")


if __name__ == "__main__":
    main()
