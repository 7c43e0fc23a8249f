#!/usr/bin/env python3
"""Ferry's benchmark harness: ferry-proxy against direct traffic, nginx and haproxy, in one run.

Usage: bench/run.py [--quick] [--runs N] [--seconds S] [--rate RPS] [--only PROTO,...]
                    [--cells grid,bulk | CELL,...]
See bench/README.md for what it measures and how to read the table.

Python (stdlib only) rather than bash: the harness parses three generators' outputs, reads
/proc, computes medians and ratios and must kill every process it started on any exit --
all of which is clearer in Python than in a shell script.
"""

import argparse
import atexit
import datetime
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The harness builds in release mode into cargo's target dir: target/ unless CARGO_TARGET_DIR
# says otherwise (set it to keep benchmark builds apart from a developer's own builds).
RELEASE = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
# The middle hop (proxy, nginx, haproxy) gets core 0 to itself; the backend and the load
# generator share core 1 -- the shape the issue's goals were measured in.
MIDDLE_CPU = "0"
LOAD_CPU = "1"
CONNECTIONS = 32
RATE_CONNECTIONS = 16
# The two-hop variant measures the mesh path: proxy A resolves MESH_SERVICE through a
# ferry-control (identity CA on, workloads file naming proxy B's inbound) and opens mTLS to
# proxy B, as meshed workloads do. MESH_TLS = False measures the old plaintext two-hop path
# instead (A's upstream is B's address, no control plane), for comparison.
MESH_TLS = True
MESH_SERVICE = "bench.default:8080"


def mesh_b_args(mesh):
    """Proxy B's identity flags: service account bench-b, certified by the bench's CA."""
    return ["--identity-addr", f"127.0.0.1:{mesh['grpc']}",
            "--identity-token-file", mesh["dir"] / "tokens" / "default" / "bench-b",
            "--identity-trust-anchors", mesh["dir"] / "ca" / "ca-bundle.crt",
            "--service-account", "bench-b"]


def mesh_a_args(mesh):
    """Proxy A's discovery and identity flags: service account bench-a."""
    return ["--destination-addr", f"127.0.0.1:{mesh['grpc']}",
            "--identity-token-file", mesh["dir"] / "tokens" / "default" / "bench-a",
            "--identity-trust-anchors", mesh["dir"] / "ca" / "ca-bundle.crt",
            "--service-account", "bench-a"]

VARIANTS = ["direct", "ferry", "ferry-2hop", "nginx", "haproxy"]
# Tracing cells (not in the default set; `--variants ferry,ferry-trace0,ferry-trace100`):
# the single proxy with `--trace-collector` on, sampling 0 (nothing traced: the cost of the
# checks alone, goal <= 2 % of `ferry`'s throughput) and 1 (every request a span, exported
# to a ferry-control trace receiver on the load core; its cost is reported).
TRACE_VARIANTS = {"ferry-trace0": "0", "ferry-trace100": "1"}
# Issue #21's cell: one proxy reaching ROUTE_SERVICE through a ferry-control (no identity),
# without routes (`ferry-svc`) and with a route that has a header match, two weighted
# backends, timeouts and retries within the budget (`ferry-route`; ROUTES below). Not in
# the default grid: `--variants ferry-svc,ferry-route` (and others to compare).
ROUTE_VARIANTS = ("ferry-svc", "ferry-route")
ROUTE_SERVICE = "bench.default:8080"
ROUTES = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench-route, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: bench, port: 8080}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: bench-canary, port: 8080}]
  - backendRefs: [{name: bench, port: 8080, weight: 90}, {name: bench-canary, port: 8080, weight: 10}]
    timeouts: {request: 10s, backendRequest: 5s}
    retry: {codes: [502, 503], attempts: 2}
"""
# Issue #23's cells: the one-hop `ferry` path with an authorization policy in force, served
# by a ferry-control (no identity) to the proxy as its pod's inbound policy: a Server on the
# backend's port admitting loopback clients (a NetworkAuthentication), decided once per
# connection (`ferry-authz`), and the same with an inbound HTTPRoute on the Server, so every
# request is routed and authorized (`ferry-authz-route`; HTTP only). Goal: the
# one-hop figure with a policy within 3 % of `ferry`'s. Not in the default grid:
# `--variants ferry,ferry-authz,ferry-authz-route`.
AUTHZ_VARIANTS = ("ferry-authz", "ferry-authz-route")
AUTHZ_POLICY = """apiVersion: policy.ferry.io/v1alpha1
kind: Server
metadata: {{name: bench, namespace: default}}
spec:
  podSelector: {{matchLabels: {{app: bench}}}}
  port: {port}
  accessPolicy: deny
---
apiVersion: policy.ferry.io/v1alpha1
kind: NetworkAuthentication
metadata: {{name: loopback, namespace: default}}
spec:
  networks: [{{cidr: 127.0.0.0/8}}]
---
apiVersion: policy.ferry.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: loopback-to-bench, namespace: default}}
spec:
  targetRef: {{group: policy.ferry.io, kind: Server, name: bench}}
  requiredAuthenticationRefs:
  - {{group: policy.ferry.io, kind: NetworkAuthentication, name: loopback}}
"""
AUTHZ_ROUTE = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench-inbound, namespace: default}
spec:
  parentRefs: [{group: policy.ferry.io, kind: Server, name: bench}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
"""
PROTOCOLS = ["http1", "h2c", "grpc", "tcp"]

# The backend's unary gRPC method (ferry-bench-backend answers any path alike).
GRPC_PATH = "/bench.Echo/Unary"

PROCS: list[subprocess.Popen] = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and cleanup


def cleanup(*_):
    for p in reversed(PROCS):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    PROCS.clear()


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def spawn(cmd, cpu, log_path):
    """Starts `cmd` pinned to `cpu`, in its own process group, killed on exit."""
    out = open(log_path, "ab")
    p = subprocess.Popen(
        ["taskset", "-c", cpu, *map(str, cmd)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    PROCS.append(p)
    return p


def stop(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        if p in PROCS:
            PROCS.remove(p)


_HANDED_OUT = set()


def free_port():
    """A port nothing listens on now, and never one this run handed out before: the kernel
    may offer a just-closed port again before the process it was meant for has bound it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port, proc, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def run_bounded(cmd, timeout):
    """Runs a load generator pinned to the load core; every run is bounded in time."""
    r = subprocess.run(
        ["taskset", "-c", LOAD_CPU, *map(str, cmd)],
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r.stdout


# ---------------------------------------------------------------- /proc accounting


def pids_of(procs):
    """The pids of the processes under each taskset wrapper (taskset execs, so the same)."""
    return [p.pid for p in procs]


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime: fields 14 and 15 of stat(5), the 12th and 13th after the name.
        total += int(fields[11]) + int(fields[12])
    return total / tick


def status_kb(pids, key):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


# ---------------------------------------------------------------- the variants


class Middle:
    """The processes between the load generator and the backend for one variant. `aux`
    (the two-hop variant's control plane) is stopped with them but not measured."""

    def __init__(self, name, procs, port, aux=()):
        self.name, self.procs, self.port, self.aux = name, procs, port, list(aux)


def start_ferry(bin_, backend_port, work, tag, port=None, admin=None, extra=()):
    """ferry-proxy's inbound side in front of the backend."""
    port = port or free_port()
    cmd = [
        bin_, "--inbound-listen", f"127.0.0.1:{port}",
        "--inbound-forward", f"127.0.0.1:{backend_port}",
        "--outbound-listen", f"127.0.0.1:{free_port()}",
        "--admin-listen", f"127.0.0.1:{admin or free_port()}",
        "--tap-listen", f"127.0.0.1:{free_port()}",
        "--log-format", "json",
    ]
    return port, spawn(cmd + list(extra), MIDDLE_CPU, work / f"{tag}.log")


def start_ferry_upstream(bin_, target, work, tag, admin=None, extra=()):
    """ferry-proxy giving the client an upstream listener that reaches `target` (host:port)."""
    port = free_port()
    cmd = [
        bin_, "--upstream", f"127.0.0.1:{port}={target}",
        "--inbound-listen", f"127.0.0.1:{free_port()}",
        "--outbound-listen", f"127.0.0.1:{free_port()}",
        "--admin-listen", f"127.0.0.1:{admin or free_port()}",
        "--tap-listen", f"127.0.0.1:{free_port()}",
        "--log-format", "json",
    ]
    return port, spawn(cmd + list(extra), MIDDLE_CPU, work / f"{tag}.log")


def start_mesh_control(work, tag, b_port, control=None):
    """ferry-control for the two-hop variant: identity CA on, and a workloads file in which
    service MESH_SERVICE is proxy B's inbound (service account bench-b) and proxy A is the
    meshed client (bench-a). Pinned to the load core: it is idle while load runs. Returns
    the process and what mesh_a_args/mesh_b_args need."""
    d = work / f"{tag}-mesh"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    name, port = MESH_SERVICE.split(":")
    svc, ns = name.split(".")
    (d / "workloads.yaml").write_text(f"""workloads:
  - name: bench-b
    namespace: {ns}
    serviceAccount: bench-b
    instances:
      - {{ name: bench-b-0, addr: "127.0.0.1:{b_port}" }}
  - name: bench-a
    namespace: {ns}
    serviceAccount: bench-a
    instances:
      - {{ name: bench-a-0, addr: "127.0.0.1:9" }}
services:
  - name: {svc}
    namespace: {ns}
    port: {port}
    workloads: [bench-b]
""")
    grpc = free_port()
    cmd = [control or RELEASE / "ferry-control", "--workloads-file", d / "workloads.yaml",
           "--grpc-listen", f"127.0.0.1:{grpc}", "--api-listen", f"127.0.0.1:{free_port()}",
           "--trace-listen", "off", "--identity-dir", d / "identity", "--log-format", "json"]
    p = spawn(cmd, LOAD_CPU, work / f"{tag}-control.log")
    wait_port(grpc, p, tag + " (control plane)")
    mesh = {"grpc": grpc, "dir": d / "identity"}
    deadline = time.monotonic() + 15
    for sa in ("bench-a", "bench-b"):
        while not (mesh["dir"] / "tokens" / ns / sa).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tag}: the control plane wrote no token for {sa}")
            time.sleep(0.05)
    return p, mesh


def start_trace_collector(work, tag):
    """ferry-control as an OTLP/gRPC trace receiver for the tracing cells, pinned to the
    load core. Returns the process and the receiver's address."""
    d = work / f"{tag}-traces"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "workloads.yaml").write_text("workloads: []\nservices: []\n")
    trace = free_port()
    cmd = [RELEASE / "ferry-control", "--workloads-file", d / "workloads.yaml",
           "--grpc-listen", f"127.0.0.1:{free_port()}", "--api-listen", f"127.0.0.1:{free_port()}",
           "--trace-listen", f"127.0.0.1:{trace}", "--identity-dir", d / "identity",
           "--log-format", "json"]
    p = spawn(cmd, LOAD_CPU, work / f"{tag}-control.log")
    wait_port(trace, p, tag + " (trace receiver)")
    return p, f"127.0.0.1:{trace}"


def start_route_control(work, tag, backend_port, routes):
    """ferry-control for the route variants: services `bench` and `bench-canary` both reach
    the backend; with `routes`, ROUTES applies to `bench`. Returns the process and its gRPC
    port."""
    d = work / f"{tag}-routes"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "workloads.yaml").write_text(f"""workloads:
  - name: bench
    namespace: default
    instances:
      - {{ name: bench-0, addr: "127.0.0.1:{backend_port}" }}
services:
  - {{name: bench, namespace: default, port: 8080, workloads: [bench]}}
  - {{name: bench-canary, namespace: default, port: 8080, workloads: [bench]}}
""")
    grpc = free_port()
    cmd = [RELEASE / "ferry-control", "--workloads-file", d / "workloads.yaml",
           "--grpc-listen", f"127.0.0.1:{grpc}", "--api-listen", f"127.0.0.1:{free_port()}",
           "--trace-listen", "off", "--log-format", "json"]
    if routes:
        (d / "routes.yaml").write_text(ROUTES)
        cmd += ["--routes", d / "routes.yaml"]
    p = spawn(cmd, LOAD_CPU, work / f"{tag}-control.log")
    wait_port(grpc, p, tag + " (control plane)")
    return p, grpc


def start_authz_control(work, tag, proxy_port, backend_port, route):
    """ferry-control for the authorization variants: pod `bench-0` (labels app=bench) is the
    proxy at `proxy_port`; AUTHZ_POLICY on the backend's port, with AUTHZ_ROUTE when `route`.
    Returns the process and its gRPC port."""
    d = work / f"{tag}-authz"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    (d / "workloads.yaml").write_text(f"""workloads:
  - name: bench
    namespace: default
    labels: {{ app: bench }}
    instances:
      - {{ name: bench-0, addr: "127.0.0.1:{proxy_port}" }}
""")
    policy = AUTHZ_POLICY.format(port=backend_port) + (AUTHZ_ROUTE if route else "")
    (d / "policy.yaml").write_text(policy)
    grpc = free_port()
    cmd = [RELEASE / "ferry-control", "--workloads-file", d / "workloads.yaml",
           "--routes", d / "policy.yaml",
           "--grpc-listen", f"127.0.0.1:{grpc}", "--api-listen", f"127.0.0.1:{free_port()}",
           "--trace-listen", "off", "--log-format", "json"]
    p = spawn(cmd, LOAD_CPU, work / f"{tag}-control.log")
    wait_port(grpc, p, tag + " (control plane)")
    return p, grpc


def wait_policy(port, backend_port, admin_port, proc, what, timeout=15.0):
    """Waits until the proxy holds the control plane's policy for the backend's port: a
    connection to `port` opens the port's policy stream, and the proxy's /state then shows
    it as `server` (the control plane reads the policy file before it serves)."""
    deadline = time.monotonic() + timeout
    name = f"0.0.0.0:{backend_port}"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before its policy")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/state", timeout=1) as r:
                state = json.loads(r.read())
            if any(p["name"] == name and p["state"] == "server"
                   for p in state.get("inbound_policies", [])):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: no inbound policy for {name} within {timeout}s (see its log)")


def wait_ready(admin_port, proc, what, timeout=15.0):
    """Waits for a proxy's /ready: with identity on, until its first certificate."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout}s (see its log)")


def nginx_conf(proto, port, backend_port, work):
    tmp = work / "nginx-tmp"
    tmp.mkdir(exist_ok=True)
    head = f"""daemon off;
master_process off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
"""
    if proto == "tcp":
        return head + f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
events {{ worker_connections 4096; }}
stream {{
  server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{backend_port}; }}
}}
"""
    if proto == "http1":
        listen, upstream_pass = "", "proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";"
    else:
        # nginx speaks HTTP/2 to an upstream only through grpc_pass; it carries any h2 request.
        listen, upstream_pass = " http2", "grpc_pass grpc://origin;"
    return head + f"""events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  upstream origin {{ server 127.0.0.1:{backend_port}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port}{listen};
    location / {{ {upstream_pass} }}
  }}
}}
"""


def haproxy_conf(proto, port, backend_port):
    mode = "tcp" if proto == "tcp" else "http"
    h2 = " proto h2" if proto in ("h2c", "grpc") else ""
    return f"""global
  nbthread 1
  maxconn 4096
defaults
  mode {mode}
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  {"http-reuse always" if mode == "http" else ""}
frontend front
  bind 127.0.0.1:{port}{h2}
  default_backend origin
backend origin
  server origin 127.0.0.1:{backend_port}{h2}
"""


def start_middle(variant, proto, backend_port, work, args):
    tag = f"{variant}-{proto}"
    proxy = args.proxy or RELEASE / "ferry-proxy"
    if variant == "direct":
        return Middle(variant, [], backend_port)
    if variant in ("ferry", "ferry-alt"):
        binary = args.alt_proxy if variant == "ferry-alt" else proxy
        port, p = start_ferry(binary, backend_port, work, tag)
        wait_port(port, p, tag)
        return Middle(variant, [p], port)
    if variant in TRACE_VARIANTS:
        sampling = TRACE_VARIANTS[variant]
        aux = []
        if sampling == "0":
            # Nothing is exported at 0 %: a port nobody listens on will do.
            collector = f"127.0.0.1:{free_port()}"
        else:
            cp, collector = start_trace_collector(work, tag)
            aux = [cp]
        try:
            port, p = start_ferry(proxy, backend_port, work, tag,
                                  extra=["--trace-collector", collector,
                                         "--trace-sampling", sampling])
            wait_port(port, p, tag)
        except Exception:
            stop(aux)
            raise
        return Middle(variant, [p], port, aux=aux)
    if variant in AUTHZ_VARIANTS:
        port, admin = free_port(), free_port()
        cp, grpc = start_authz_control(work, tag, port, backend_port,
                                       variant == "ferry-authz-route")
        try:
            _, p = start_ferry(proxy, backend_port, work, tag, port=port, admin=admin,
                               extra=["--destination-addr", f"127.0.0.1:{grpc}",
                                      "--pod-namespace", "default", "--pod-name", "bench-0"])
            wait_port(port, p, tag)
            wait_policy(port, backend_port, admin, p, tag)
        except Exception:
            stop([cp])
            raise
        return Middle(variant, [p], port, aux=[cp])
    if variant in ROUTE_VARIANTS:
        cp, grpc = start_route_control(work, tag, backend_port, variant == "ferry-route")
        try:
            port, p = start_ferry_upstream(proxy, ROUTE_SERVICE, work, tag,
                                           extra=["--destination-addr", f"127.0.0.1:{grpc}"])
            wait_port(port, p, tag)
        except Exception:
            stop([cp])
            raise
        return Middle(variant, [p], port, aux=[cp])
    if variant == "ferry-2hop" and not MESH_TLS:
        b_port, b = start_ferry(proxy, backend_port, work, tag + "-b")
        wait_port(b_port, b, tag + " (proxy B)")
        a_port, a = start_ferry_upstream(proxy, f"127.0.0.1:{b_port}", work, tag + "-a")
        wait_port(a_port, a, tag + " (proxy A)")
        return Middle(variant, [a, b], a_port)
    if variant in ("ferry-2hop", "ferry-2hop-alt"):
        # ferry-2hop-alt: the same mesh pair with both proxies from --alt-proxy, certified
        # by --alt-control (a proxy from before the gRPC port spoke TLS needs its own).
        control = None
        if variant == "ferry-2hop-alt":
            proxy, control = args.alt_proxy, args.alt_control
        b_port, a_admin, b_admin = free_port(), free_port(), free_port()
        cp, mesh = start_mesh_control(work, tag, b_port, control)
        try:
            _, b = start_ferry(proxy, backend_port, work, tag + "-b", port=b_port,
                               admin=b_admin, extra=mesh_b_args(mesh))
            wait_port(b_port, b, tag + " (proxy B)")
            a_port, a = start_ferry_upstream(proxy, MESH_SERVICE, work, tag + "-a",
                                             admin=a_admin, extra=mesh_a_args(mesh))
            wait_port(a_port, a, tag + " (proxy A)")
            wait_ready(b_admin, b, tag + " (proxy B)")
            wait_ready(a_admin, a, tag + " (proxy A)")
        except Exception:
            stop([cp])
            raise
        return Middle(variant, [a, b], a_port, aux=[cp])
    port = free_port()
    if variant == "splice-relay":
        p = spawn([sys.executable, ROOT / "bench" / "splice_relay.py", str(port), str(backend_port)],
                  MIDDLE_CPU, work / f"{tag}.log")
        wait_port(port, p, tag)
        return Middle(variant, [p], port)
    if variant == "nginx":
        conf = work / f"nginx-{proto}.conf"
        conf.write_text(nginx_conf(proto, port, backend_port, work))
        p = spawn(["nginx", "-e", work / "nginx-error.log", "-c", conf, "-p", work],
                  MIDDLE_CPU, work / f"{tag}.log")
    else:
        conf = work / f"haproxy-{proto}.cfg"
        conf.write_text(haproxy_conf(proto, port, backend_port))
        p = spawn(["haproxy", "-db", "-f", conf], MIDDLE_CPU, work / f"{tag}.log")
    wait_port(port, p, tag)
    return Middle(variant, [p], port)


# ---------------------------------------------------------------- load generators


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    i = max(1, min(len(sorted_vals), int(-(-len(sorted_vals) * p // 1)))) - 1
    return sorted_vals[i]


def parse_unit_ms(text):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


def wrk_max(port, seconds):
    out = run_bounded(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s",
         f"http://127.0.0.1:{port}/"], seconds + 30)
    res = {"errors": 0}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        s = line.split()
        if s[:1] == ["Latency"] and len(s) >= 4:
            res["max_ms"] = parse_unit_ms(s[3])
        if s[:1] == ["50%"]:
            res["p50_ms"] = parse_unit_ms(s[1])
        if s[:1] == ["99%"]:
            res["p99_ms"] = parse_unit_ms(s[1])
        if "requests in" in line:
            res["requests"] = int(s[0])
        if line.startswith("Requests/sec:"):
            res["rps"] = float(s[1])
        if "Non-2xx" in line or line.strip().startswith("Socket errors"):
            res["errors"] += sum(int(x.strip(",")) for x in s if x.strip(",").isdigit())
    return res


def h2load(port, seconds, proto, work):
    """h2load at full speed, with a per-request log so percentiles come from every request."""
    log_file = work / "h2load.log"
    if log_file.exists():
        log_file.unlink()
    cmd = ["h2load", "-t1", f"-c{CONNECTIONS}", "-m1", f"-D{seconds}", f"--log-file={log_file}"]
    if proto == "http1":
        cmd.append("--h1")
    path = "/"
    if proto == "grpc":
        cmd += ["-d", work / "grpc-request.bin", "-H", "content-type: application/grpc",
                "-H", "te: trailers"]
        path = GRPC_PATH
    out = run_bounded(cmd + [f"http://127.0.0.1:{port}{path}"], seconds + 30)
    res = {"errors": 0}
    for line in out.splitlines():
        s = line.split()
        if line.startswith("finished in"):
            res["rps"] = float(s[3])
        if line.startswith("requests:"):
            res["requests"] = int(s[7])  # succeeded
            res["errors"] = int(s[9]) + int(s[11]) + int(s[13])
        if line.startswith("status codes:"):
            res["errors"] += sum(int(s[i]) for i in (4, 6, 8))
    lat = sorted(int(l.split("\t")[2]) / 1000.0 for l in open(log_file) if l.count("\t") == 2)
    res["p50_ms"] = percentile(lat, 0.50)
    res["p99_ms"] = percentile(lat, 0.99)
    res["max_ms"] = lat[-1] if lat else float("nan")
    return res


def own_load_cmd(proto, port, seconds, rate):
    """`ferry-bench-load`: TCP echo at full speed, or any protocol evenly paced at `rate`."""
    cmd = [RELEASE / "ferry-bench-load", f"127.0.0.1:{port}", "--proto", proto,
           "--seconds", seconds, "--connections", RATE_CONNECTIONS if rate else CONNECTIONS]
    if rate:
        cmd += ["--rate", rate]
    if proto == "grpc":
        cmd += ["--path", GRPC_PATH]
    return cmd


def own_load_summary(out):
    """The JSON line `ferry-bench-load` prints last."""
    return json.loads(out.strip().splitlines()[-1])


def own_load(proto, port, seconds, rate):
    """One `ferry-bench-load` run; at a fixed rate with what pooling runs takes: its latency
    histogram (`hist`) and the p99 of each of its seconds (`p99_seconds_ms`)."""
    cmd = own_load_cmd(proto, port, seconds, rate) + (["--pooling"] if rate else [])
    r = own_load_summary(run_bounded(cmd, seconds + 30))
    res = {"requests": r["requests"], "rps": r["rps"], "p50_ms": r["p50_us"] / 1000,
           "p99_ms": r["p99_us"] / 1000, "max_ms": r["max_us"] / 1000, "errors": r["errors"],
           "p99_1s_ms": None if r.get("p99_1s_us") is None else r["p99_1s_us"] / 1000}
    if "histogram" in r:
        res["hist"] = dict(r["histogram"])
        res["p99_seconds_ms"] = [us / 1000 for us in r["p99_seconds_us"]]
    return res


# Latency histograms: {microseconds: requests}, as ferry-bench-load's --pooling gives them.
# Runs are pooled by adding histograms, so a percentile of several runs is exact.


def hist_merge(hists):
    total = {}
    for h in hists:
        for us, n in h.items():
            total[us] = total.get(us, 0) + n
    return total


def hist_percentile(hist, p):
    """Nearest rank, as `percentile` and ferry-bench-load count it; None for no requests."""
    count = sum(hist.values())
    if not count:
        return None
    rank, seen = max(1, -(-count * p // 1)), 0
    for us in sorted(hist):
        seen += hist[us]
        if seen >= rank:
            return us
    return None


def load(proto, shape, port, seconds, rate, work):
    if shape == "rate":
        return own_load(proto, port, seconds, rate)
    if proto == "tcp":
        return own_load(proto, port, seconds, None)
    if proto == "http1":
        return wrk_max(port, seconds)
    return h2load(port, seconds, proto, work)


# ---------------------------------------------------------------- bulk cells (issue #25)

# Bulk traffic: large bodies and long one-way streams, reported as GB/s (10^9 bytes of body or
# stream a second) and the middle hop's CPU seconds per GB. The origin is nginx serving files
# with sendfile (HTTP/1.1 and h2c), or ferry-bench-backend --source for the opaque stream,
# both on the load core: it has to be fast enough not to be the limit (direct shows its rate).
# cell: (protocol the middles speak, what the generator does, path, body bytes)
BULK_CELLS = {
    "h1-64k": ("http1", "get", "/64k", 64 * 1024),
    "h1-1m": ("http1", "get", "/1m", 1 << 20),
    "h1-post-1m": ("http1", "post", "/upload", 1 << 20),
    "h2-1m": ("h2c", "get", "/1m", 1 << 20),
    "tcp-stream": ("tcp", "stream", None, None),
}
# The two-proxy mTLS path carries 1 MiB responses in this cell only.
BULK_2HOP_CELLS = {"h1-1m"}
BULK_CONNECTIONS = 8


def start_bulk_origin(work):
    """nginx as the bulk cells' HTTP origin, on the load core: files of 64 KiB and 1 MiB sent
    with sendfile, over HTTP/1.1 and h2c (prior knowledge), and POST /upload read and answered
    200. Returns the process and its ports."""
    d = work / "origin"
    (d / "www").mkdir(parents=True, exist_ok=True)
    (d / "tmp").mkdir(exist_ok=True)
    for name, size in (("64k", 64 * 1024), ("1m", 1 << 20)):
        (d / "www" / name).write_bytes(os.urandom(size))
    h1, h2 = free_port(), free_port()
    (d / "nginx.conf").write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  http2_max_requests 1000000;
  client_max_body_size 0;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{h1};
    listen 127.0.0.1:{h2} http2;
    root {d}/www;
    location = /upload {{ return 200 "ok\\n"; }}
  }}
}}
""")
    p = spawn(["nginx", "-e", d / "error.log", "-c", d / "nginx.conf", "-p", d], LOAD_CPU,
              work / "origin.log")
    wait_port(h1, p, "nginx origin")
    wait_port(h2, p, "nginx origin (h2c)")
    return p, {"http1": h1, "h2c": h2}


def wrk_bulk(port, path, seconds, work, post_size=None):
    """wrk over BULK_CONNECTIONS connections: GETs of `path`, or POSTs of `post_size` bytes."""
    cmd = ["wrk", "-t1", f"-c{BULK_CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s"]
    if post_size:
        script = work / f"post-{post_size}.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = string.rep("x", {post_size})\n'
                          'wrk.headers["Content-Type"] = "application/octet-stream"\n')
        cmd += ["-s", script]
    out = run_bounded(cmd + [f"http://127.0.0.1:{port}{path}"], seconds + 30)
    res = {"errors": 0}
    for line in out.splitlines():
        s = line.split()
        if "requests in" in line:
            res["requests"], res["seconds"] = int(s[0]), parse_unit_ms(s[3].rstrip(",")) / 1e3
        if "Non-2xx" in line or line.strip().startswith("Socket errors"):
            res["errors"] += sum(int(x.strip(",")) for x in s if x.strip(",").isdigit())
    return res


def h2load_bulk(port, path, seconds):
    out = run_bounded(["h2load", "-t1", f"-c{BULK_CONNECTIONS}", "-m1", f"-D{seconds}",
                       f"http://127.0.0.1:{port}{path}"], seconds + 30)
    res = {"errors": 0}
    for line in out.splitlines():
        s = line.split()
        if line.startswith("finished in"):
            res["seconds"] = parse_unit_ms(s[2].rstrip(","))
        if line.startswith("requests:"):
            res["requests"] = int(s[7])
            res["errors"] = int(s[9]) + int(s[11]) + int(s[13])
        if line.startswith("status codes:"):
            res["errors"] += sum(int(s[i]) for i in (4, 6, 8))
    res["seconds"] /= 1e3
    return res


def bulk_load(cell, port, seconds, work):
    """One bulk run: bytes of body (or stream) moved, seconds and errors."""
    _, kind, path, size = BULK_CELLS[cell]
    if kind == "stream":
        cmd = [RELEASE / "ferry-bench-load", f"127.0.0.1:{port}", "--proto", "stream",
               "--seconds", seconds, "--connections", BULK_CONNECTIONS]
        r = own_load_summary(run_bounded(cmd, seconds + 30))
        return {"bytes": r["bytes"], "seconds": r["seconds"], "errors": r["errors"]}
    if kind == "post":
        r = wrk_bulk(port, path, seconds, work, post_size=size)
    elif BULK_CELLS[cell][0] == "h2c":
        r = h2load_bulk(port, path, seconds)
    else:
        r = wrk_bulk(port, path, seconds, work)
    r["bytes"] = r["requests"] * size
    return r


def measure_bulk(cell, args, work, origin_ports, results):
    """One bulk cell: its middles started afresh, `args.runs` rounds over the variants in a
    rotated order. Records GB/s, CPU s/GB and the middle's peak RSS under (cell, "bulk", v)."""
    proto = BULK_CELLS[cell][0]
    port = origin_ports["tcp-source" if proto == "tcp" else proto]
    variants = [v for v in args.variants
                if not v.startswith("ferry-2hop") or cell in BULK_2HOP_CELLS]
    middles = {}
    try:
        for v in variants:
            middles[v] = start_middle(v, proto, port, work, args)
        for m in middles.values():
            if not args.quick:
                bulk_load(cell, m.port, 1, work)
        order = list(middles)
        for run in range(args.runs):
            k = run % len(order)
            for v in order[k:] + order[:k]:
                m = middles[v]
                pids = pids_of(m.procs)
                cpu0 = cpu_seconds(pids) if pids else 0.0
                res = bulk_load(cell, m.port, args.seconds, work)
                if pids:
                    if any(p.poll() is not None for p in m.procs):
                        raise RuntimeError(f"{v} died during bulk cell {cell}")
                    res["cpu_s_per_gb"] = (cpu_seconds(pids) - cpu0) / max(res["bytes"] / 1e9, 1e-9)
                    res["peak_rss_mb"] = status_kb(pids, "VmHWM") / 1024
                res["gbps"] = res["bytes"] / res["seconds"] / 1e9
                results.setdefault((cell, "bulk", v), []).append(res)
                log(f"{cell:10} {v:10} run {run + 1}: {res['gbps']:.3f} GB/s "
                    f"cpu/GB {fmt(res.get('cpu_s_per_gb'), '.3f')} s errors {res['errors']}")
    finally:
        for m in middles.values():
            stop(m.procs + m.aux)


# Issue #25's goals on plaintext hops, judged on these cells.
BULK_GOAL_CELLS = ("h1-64k", "h1-1m", "tcp-stream")
BULK_GOAL_X_DIRECT = 0.8


def bulk_report(cells, results):
    """The bulk cells' table and issue #25's goals; [] without bulk cells."""
    def fig(cell, v, key):
        rs = results.get((cell, "bulk", v))
        return med([r.get(key) for r in rs]) if rs else None

    lines = []
    rows = []
    for cell in cells:
        d, h = fig(cell, "direct", "gbps"), fig(cell, "haproxy", "gbps")
        hc = fig(cell, "haproxy", "cpu_s_per_gb")
        for v in VARIANTS + ["ferry-alt", "ferry-2hop-alt", "splice-relay"]:
            rs = results.get((cell, "bulk", v))
            if not rs:
                continue
            g, c = fig(cell, v, "gbps"), fig(cell, v, "cpu_s_per_gb")
            rows.append(f"| {cell} | {v} | {fmt(g, '.3f')} | {ratio(g, d)} | {ratio(g, h)} | "
                        f"{fmt(c, '.3f')} | {ratio(c, hc)} | {fmt(fig(cell, v, 'peak_rss_mb'), '.1f')} | "
                        f"{sum(r['errors'] for r in rs)} |")
    if not rows:
        return []
    lines += ["## Bulk — large bodies and one-way streams (GB/s = 10^9 bytes of body a second)", "",
              f"{BULK_CONNECTIONS} connections; medians; CPU and RSS are the middle hop's "
              "(`ferry-2hop`: both proxies, mTLS between them).", "",
              "| cell | variant | GB/s | ×direct | ×haproxy | CPU s/GB | ×haproxy | peak RSS MB | errors |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]
    goal_rows = []
    for cell in BULK_GOAL_CELLS:
        f, d, h = (fig(cell, v, "gbps") for v in ("ferry", "direct", "haproxy"))
        fc, hc = fig(cell, "ferry", "cpu_s_per_gb"), fig(cell, "haproxy", "cpu_s_per_gb")
        if None in (f, d, h, fc, hc):
            continue
        ok = f >= h and fc <= hc and f >= BULK_GOAL_X_DIRECT * d
        relay = fig(cell, "splice-relay", "gbps")
        ceiling = f" (the splice relay: {relay / d:.2f}× direct)" if relay else ""
        goal_rows.append(f"| {cell}: ≥ haproxy's GB/s, ≤ its CPU/GB, ≥ {BULK_GOAL_X_DIRECT}× direct | "
                         f"{f:.3f} vs {h:.3f} GB/s ({f / h:.2f}×), {fc:.3f} vs {hc:.3f} s/GB, "
                         f"{f / d:.2f}× direct{ceiling} | {'met' if ok else '**missed**'} |")
    m, f = fig("h1-1m", "ferry-2hop", "gbps"), fig("h1-1m", "ferry", "gbps")
    before = fig("h1-1m", "ferry-2hop-alt", "gbps")
    if m is not None and before:
        # The pair from --alt-proxy (the proxy before issue #25) measured in this run.
        goal_rows.append(f"| two proxies with mTLS, 1 MiB responses: ≥ 2× the `--alt-proxy` pair "
                         f"(`ferry-2hop-alt`) | {m:.3f} vs {before:.3f} GB/s ({m / before:.2f}×) | "
                         f"{'met' if m >= 2 * before else '**missed**'} |")
    elif m is not None:
        goal_rows.append(f"| two proxies with mTLS, 1 MiB responses (report; goal ≥ 2× the rate before "
                         f"issue #25) | {m:.3f} GB/s" + (f", {m / f:.2f}× one plaintext hop" if f else "")
                         + " | — |")
    if goal_rows:
        lines += ["## Goals of issue #25, judged on this run", "", "| goal | measured | |",
                  "|---|---|---|", *goal_rows, ""]
    return lines


# ---------------------------------------------------------------- the run


# Tasks moved off the middle hop's CPU for the run, with the CPUs each may use otherwise.
MOVED: dict[int, set[int]] = {}


def restore_affinity():
    for tid, cpus in MOVED.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # the task ended meanwhile
    MOVED.clear()


def clear_middle_cpu():
    """Moves every other task that may run on the middle hop's CPU, and may run elsewhere,
    to the load CPU until the harness exits (restore_affinity). What is left on the middle
    CPU is its own per-CPU kernel threads. Without this, whatever else the machine runs
    lands on the middle hop's core by the scheduler's choice: on this VM, DAMON's reclaim
    thread (kdamond) ran there for 42 ms in 5 s of one proxy's cell, up to 19 ms at once,
    and on the other core during the next proxy's, which was then the better one
    (bench/README.md, "Idle CPUs, other tasks and stalls"). Returns a note for the report."""
    middle, load = int(MIDDLE_CPU), {int(LOAD_CPU)}
    for pid in filter(str.isdigit, os.listdir("/proc")):  # the harness too
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                cpus = os.sched_getaffinity(tid)
                if middle in cpus and len(cpus) > 1:
                    os.sched_setaffinity(tid, load)
                    MOVED[tid] = cpus
            except OSError:
                pass  # ended, a per-CPU kernel thread, or not ours to move
    return f"{len(MOVED)} other tasks moved off CPU {MIDDLE_CPU} for the run"


def hold_cpus_awake():
    """Keeps every CPU out of its idle states until the harness exits, as tuned's
    latency-performance profile does: a PM QoS request of 0 µs wake-up latency, written to
    /dev/cpu_dma_latency and held for as long as the file stays open. On a VM an idle vCPU
    halts, and waking it again is the host's business: without this, two such wake-ups on
    the middle hop's core are most of every proxy's added latency at the fixed rate
    (bench/README.md, "Idle CPUs, other tasks and stalls"). Returns a note for the report."""
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)  # never closed: the exit does
        os.write(fd, struct.pack("i", 0))
    except OSError as e:
        return f"CPUs allowed to idle (/dev/cpu_dma_latency: {e.strerror})"
    return "CPUs held out of idle states (/dev/cpu_dma_latency at 0)"


def build():
    log(f"building in release mode ({RELEASE})")
    # The proxy on its own, as the images build it: with the control plane in the same
    # build, cargo unifies features and the proxy gets `tracing`'s `log` bridge (kube and
    # axum ask for it), a few percent of CPU per request that users' proxies do not pay.
    subprocess.run(["cargo", "build", "--release", "-p", "ferry-proxy"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "ferry-control", "-p", "ferry-testkit",
                    "--bins"], cwd=ROOT, check=True)


def ensure_tools():
    need = []
    for tool, pkg in (("wrk", "wrk"), ("h2load", "nghttp2-client"), ("nginx", "nginx-light"),
                      ("haproxy", "haproxy"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            need.append(pkg)
    if not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        need.append("libnginx-mod-stream")
    if need:
        log(f"installing {' '.join(need)}")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                               *need], check=True, env=env)


class Plan:
    """Which cells a group runs: `variants` over `runs` rounds; max throughput (`with_max`)
    and the fixed rate, `rate_seconds` per variant a round in `rate_slices` turns, recorded
    under the shape `rate_key`."""

    def __init__(self, variants, runs, with_max, rate_key, rate_seconds, rate_slices):
        self.variants, self.runs, self.with_max = variants, runs, with_max
        self.rate_key, self.rate_seconds, self.rate_slices = rate_key, rate_seconds, rate_slices


def grid_plan(args):
    return Plan(args.variants, args.runs, True, "rate", args.rate_seconds, args.rate_slices)


# The added-p99 goal's own run: HTTP/1.1 at the fixed rate, direct, ferry and nginx only,
# `--p99-rounds` rounds of one P99_SLICE_SECONDS turn each.
P99_VARIANTS = ("direct", "ferry", "nginx")
P99_SLICE_SECONDS = 2


def p99_plan(args):
    return Plan(list(P99_VARIANTS), args.p99_rounds, False, "p99", P99_SLICE_SECONDS, 1)


def measure_group(proto, plan, args, work, backend_ports, results, memory=None):
    """The cells of one protocol, middles started afresh. With `memory`, their RSS is recorded
    (idle, and peak: this protocol's, as the middles are restarted for each)."""
    backend_port = backend_ports["tcp" if proto == "tcp" else ("http1" if proto == "http1" else "h2c")]
    middles = {}
    try:
        for v in plan.variants:
            if proto == "tcp" and v == "ferry-authz-route":
                # An inbound route is for HTTP: a server with one refuses opaque TCP.
                continue
            middles[v] = start_middle(v, proto, backend_port, work, args)
        time.sleep(0.3)
        for v, m in middles.items():
            if m.procs and memory is not None:
                pids = pids_of(m.procs)
                memory[(proto, v)] = {"idle_kb": status_kb(pids, "VmRSS"),
                                      "max_single_idle_kb": max(status_kb([p], "VmRSS") for p in pids)}
        # Warm every path (connections, pools, page faults) before measuring.
        for v, m in middles.items():
            if not args.quick:
                load(proto, "max", m.port, 1, None, work)
        variants = list(middles)

        def cell(v, shape, seconds):
            m = middles[v]
            pids = pids_of(m.procs)
            cpu0 = cpu_seconds(pids) if pids else 0.0
            res = load(proto, shape, m.port, seconds, args.rate, work)
            if pids:
                res["cpu_s"] = cpu_seconds(pids) - cpu0
                if any(p.poll() is not None for p in m.procs):
                    raise RuntimeError(f"{v} died during {proto}/{shape}")
            return res

        def record(v, shape, run, res):
            if "cpu_s" in res:
                res["cpu_s_per_10k"] = res.pop("cpu_s") / max(res["requests"], 1) * 1e4
            results.setdefault((proto, shape, v), []).append(res)
            log(f"{proto:5} {shape:4} {v:10} run {run + 1}: {res['rps']:>9.0f} rps "
                f"p50 {res['p50_ms']:.3f} p99 {res['p99_ms']:.3f} "
                f"p99/s {fmt(res.get('p99_1s_ms'), '.3f')} ms "
                f"cpu/10k {res.get('cpu_s_per_10k', 0):.3f}s errors {res['errors']}")

        slice_seconds = plan.rate_seconds // plan.rate_slices
        for run in range(plan.runs):
            # ABAB...: each round walks the variants in a rotated order, so drift in the
            # machine's speed spreads over all variants instead of favouring one.
            k = run % len(variants)
            order = variants[k:] + variants[:k]
            if plan.with_max:
                for v in order:
                    record(v, "max", run, cell(v, "max", args.seconds))
            # The fixed rate's tail rests on rare slow requests that come when the host
            # stalls, so the variants take turns in short slices: a stall then lands on any
            # variant alike, where in whole-round cells it lands on whichever one ran then.
            slices = {v: [] for v in order}
            for _ in range(plan.rate_slices):
                for v in order:
                    slices[v].append(cell(v, "rate", slice_seconds))
            for v in order:
                record(v, plan.rate_key, run, merge_slices(slices[v]))
        for v, m in middles.items():
            if m.procs and memory is not None:
                pids = pids_of(m.procs)
                memory[(proto, v)].update(
                    peak_kb=status_kb(pids, "VmHWM"),
                    after_kb=status_kb(pids, "VmRSS"),
                    max_single_peak_kb=max(status_kb([p], "VmHWM") for p in pids))
    finally:
        for m in middles.values():
            stop(m.procs + m.aux)


def merge_slices(parts):
    """One run of a fixed-rate cell from its slices: requests pooled, slices kept apart."""
    hist = hist_merge(p["hist"] for p in parts)
    requests = sum(p["requests"] for p in parts)
    res = {"requests": requests, "rps": sum(p["rps"] for p in parts) / len(parts),
           "p50_ms": hist_percentile(hist, 0.50) / 1000, "p99_ms": hist_percentile(hist, 0.99) / 1000,
           "max_ms": max(p["max_ms"] for p in parts), "errors": sum(p["errors"] for p in parts),
           "hist": hist, "slices": [p["hist"] for p in parts],
           "p99_seconds_ms": [ms for p in parts for ms in p["p99_seconds_ms"]]}
    res["p99_1s_ms"] = typical_second(res["p99_seconds_ms"])
    if all("cpu_s" in p for p in parts):
        res["cpu_s"] = sum(p["cpu_s"] for p in parts)
    return res


def typical_second(p99s):
    """The p99 of a typical second, as ferry-bench-load defines it: the upper median of the
    seconds' p99s; None for no seconds."""
    return sorted(p99s)[len(p99s) // 2] if p99s else None


def soak(args, work, backend_ports):
    """One ferry hop at the fixed rate for `args.soak` seconds, RSS sampled every 5 s."""
    middle = start_middle("ferry", "http1", backend_ports["http1"], work, args)
    pids = pids_of(middle.procs)
    samples = [(0, status_kb(pids, "VmRSS"))]
    gen_cmd = own_load_cmd("http1", middle.port, args.soak, args.rate)
    cmd = ["taskset", "-c", LOAD_CPU, *map(str, gen_cmd)]
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           start_new_session=True)
    PROCS.append(gen)
    try:
        start = time.monotonic()
        while gen.poll() is None and time.monotonic() - start < args.soak + 30:
            time.sleep(5)
            samples.append((round(time.monotonic() - start), status_kb(pids, "VmRSS")))
        out, _ = gen.communicate(timeout=30)
        r = own_load_summary(out)
        done = (f"{r['requests']} requests, {r['errors']} errors, p50 {r['p50_us']} µs, "
                f"p99 {r['p99_us']} µs.")
        log(f"soak: {done}")
        samples.append((round(time.monotonic() - start), status_kb(pids, "VmRSS")))
        return {"samples": samples, "peak_kb": status_kb(pids, "VmHWM"), "requests": done}
    finally:
        stop([gen, *middle.procs, *middle.aux])


# ---------------------------------------------------------------- the report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}"


# Issue #9's goals. Absolute figures were set on a reference machine where nginx as a
# reverse proxy did REF_NGINX_RPS; the two-proxy throughput bar is scaled by this run's nginx.
REF_NGINX_RPS = 66_000
GOAL_2HOP_RPS = 27_000
GOAL_2HOP_ADD_P50_MS = 0.4
GOAL_CPU_S_PER_10K = 0.15
GOAL_IDLE_KB = 8 * 1024
GOAL_LOAD_KB = 15 * 1024
GOAL_SOAK_GROWTH_KB = 256


def soak_growth(samples):
    """Growth of RSS: the last third of the run against the first third, after warm-up."""
    third = max(1, len(samples) // 3)
    early = max(kb for _, kb in samples[1:third + 1]) if len(samples) > 1 else samples[0][1]
    late = max(kb for _, kb in samples[-third:])
    return early, late


FIGURES = ("rps", "p50_ms", "p99_ms", "p99_1s_ms", "max_ms", "cpu_s_per_10k")


def figures(rs):
    """A cell's figures over its runs: medians, except that fixed-rate latencies pool all
    runs' requests (100,000 at the defaults rather than a median of five p99s that each rest
    on 200), the typical second all runs' seconds, and the maximum is the largest."""
    x = {k: med([r.get(k) for r in rs]) for k in FIGURES}
    if rs and all("hist" in r for r in rs):
        pooled = hist_merge(r["hist"] for r in rs)
        x["p50_ms"], x["p99_ms"] = (hist_percentile(pooled, p) / 1000 for p in (0.50, 0.99))
        x["p99_1s_ms"] = typical_second([ms for r in rs for ms in r["p99_seconds_ms"]])
        x["max_ms"] = max(r["max_ms"] for r in rs)
    x["errors"] = sum(r["errors"] for r in rs)
    return x


BOOTSTRAP_RESAMPLES = 1000


def p99_difference_interval(a_runs, b_runs, level=0.90):
    """How sure the sign of p99(a) - p99(b) is: a bootstrap over the paired slices (slice i of
    a ran next to slice i of b). Returns the `level` interval in ms, or None without slices."""
    pairs = list(zip((h for r in a_runs for h in r.get("slices", [])),
                     (h for r in b_runs for h in r.get("slices", []))))
    if len(pairs) < 2:
        return None
    rng = random.Random(9)  # a fixed seed: the same run's report reads the same twice
    diffs = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        pick = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        a, b = (hist_percentile(hist_merge(p[i] for p in pick), 0.99) for i in (0, 1))
        diffs.append((a - b) / 1000)
    diffs.sort()
    tail = (1 - level) / 2
    return percentile(diffs, tail), percentile(diffs, 1 - tail)


def goals(results, figs, memory, soak_result):
    """The goals of issue #9 judged on this run's figures (`figs`, each cell's `figures`):
    one table row per goal."""
    def m(proto, shape, v, key):
        x = figs.get((proto, shape, v))
        return x[key] if x else None

    rows = []

    def row(goal, measured, ok):
        rows.append(f"| {goal} | {measured} | {'met' if ok else '**missed**'} |")

    f1, n1 = m("http1", "max", "ferry", "rps"), m("http1", "max", "nginx", "rps")
    if f1 and n1:
        row("HTTP/1.1, one hop: throughput ≥ nginx's", f"{f1:,.0f} vs {n1:,.0f} RPS ({f1 / n1:.2f}×)",
            f1 >= n1)
    c1 = m("http1", "max", "ferry", "cpu_s_per_10k")
    if c1 is not None:
        row("HTTP/1.1, one hop: CPU ≤ 15 µs per request", f"{c1 * 100:.1f} µs", c1 <= GOAL_CPU_S_PER_10K)
    # Judged on the goal's own run when there is one: more requests, finer turns.
    shape = "p99" if ("http1", "p99", "ferry") in results else "rate"
    d99, f99, n99 = (m("http1", shape, v, "p99_ms") for v in P99_VARIANTS)
    s99 = [m("http1", shape, v, "p99_1s_ms") for v in P99_VARIANTS]
    if None not in (d99, f99, n99):
        typical = (f"; p99 of a typical second {s99[1] - s99[0]:+.3f} vs {s99[2] - s99[0]:+.3f}"
                   if None not in s99 else "")
        ci = p99_difference_interval(results[("http1", shape, "ferry")],
                                     results[("http1", shape, "nginx")])
        sure = (f" (ferry − nginx {f99 - n99:+.3f} ms, 90 % bootstrap interval "
                f"{ci[0]:+.3f} … {ci[1]:+.3f})" if ci else "")
        where = ", the goal's own run" if shape == "p99" else ""
        row(f"HTTP/1.1, one hop: added p99 at the fixed rate ≤ nginx's{where}",
            f"{f99 - d99:+.3f} vs {n99 - d99:+.3f} ms{sure}{typical}", f99 - d99 <= n99 - d99)
    m2 = m("http1", "max", "ferry-2hop", "rps")
    if m2 and n1:
        bar = GOAL_2HOP_RPS * n1 / REF_NGINX_RPS
        row(f"two proxies with mTLS: ≥ 2× a Linkerd hop pair ({GOAL_2HOP_RPS:,} RPS where nginx did "
            f"{REF_NGINX_RPS:,}; {bar:,.0f} at this run's nginx)", f"{m2:,.0f} RPS", m2 >= bar)
    d50, m50, n50 = (m("http1", "rate", v, "p50_ms") for v in ("direct", "ferry-2hop", "nginx"))
    if None not in (d50, m50):
        nginx_hop = f"; one nginx hop adds {n50 - d50:+.3f} ms here" if n50 is not None else ""
        row(f"two proxies with mTLS: added p50 at the fixed rate ≤ {GOAL_2HOP_ADD_P50_MS} ms",
            f"{m50 - d50:+.3f} ms{nginx_hop}", m50 - d50 <= GOAL_2HOP_ADD_P50_MS)
    idle = memory.get(("http1", "ferry-2hop"), {}).get("max_single_idle_kb")
    if idle:
        row("RSS idle ≤ 8 MB, identity on (largest of the two mesh proxies)", f"{idle / 1024:.1f} MB",
            idle <= GOAL_IDLE_KB)
    loaded = [mem.get(k, 0) for (_, v), mem in memory.items() if v in ("ferry", "ferry-2hop")
              for k in (("max_single_peak_kb",) if v == "ferry-2hop" else ("peak_kb",))]
    if loaded:
        row("RSS under load ≤ 15 MB (any proxy, any protocol)", f"{max(loaded) / 1024:.1f} MB",
            max(loaded) <= GOAL_LOAD_KB)
    if soak_result:
        early, late = soak_growth(soak_result["samples"])
        row("no RSS growth over the soak", f"{late - early:+d} KB", late - early <= GOAL_SOAK_GROWTH_KB)
    for proto in ("http1", "h2c", "grpc"):
        r, b = m(proto, "max", "ferry-route", "rps"), m(proto, "max", "ferry-svc", "rps")
        if r and b:
            row(f"{proto}, a route with a header match, two weighted backends, timeouts and a "
                "retry budget: ≥ 95 % of the same service's throughput without routes (#21)",
                f"{r:,.0f} vs {b:,.0f} RPS ({r / b:.1%})", r >= 0.95 * b)
    for proto in ("http1", "h2c", "grpc"):
        base = m(proto, "max", "ferry", "rps")
        for variant, what in (("ferry-authz", "decided per connection"),
                              ("ferry-authz-route", "an inbound route: decided per request")):
            r = m(proto, "max", variant, "rps")
            if r and base:
                row(f"{proto}, an authorization policy in force ({what}): within 3 % of the "
                    "one-hop throughput without (#23)",
                    f"{r:,.0f} vs {base:,.0f} RPS ({r / base:.1%})", r >= 0.97 * base)
    h2 = m("h2c", "max", "ferry", "rps")
    if h2 and f1:
        row("h2c throughput ≥ 80 % of HTTP/1.1's", f"{h2:,.0f} vs {f1:,.0f} RPS ({h2 / f1:.0%})",
            h2 >= 0.8 * f1)
    if not rows:
        return []
    return ["## Goals of issue #9, judged on this run", "", "| goal | measured | |", "|---|---|---|",
            *rows, ""]


def report(args, results, memory, started, soak_result=None, bulk_cells=()):
    lines = [
        f"# Ferry benchmark — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.runs} run(s) per cell, medians; max throughput: {CONNECTIONS} connections for "
        f"{args.seconds}s; fixed rate: {args.rate} RPS over {RATE_CONNECTIONS} connections for "
        f"{args.rate_seconds}s per run, in {args.rate_slices} slice(s) taking turns with the other "
        f"variants, latency percentiles of all runs' requests pooled. Middle hop pinned to CPU {MIDDLE_CPU}, backend and generator "
        f"to CPU {LOAD_CPU}. `ferry-2hop` is "
        + ("mTLS between the two proxies" if MESH_TLS else "plaintext (MESH_TLS = False)")
        + f"; its CPU and RSS are both proxies' sums. {args.cpu_idle_note}. Commit " + os.popen(f"git -C {ROOT} describe --always --dirty").read().strip()
        + "; " + os.popen("uptime").read().strip(),
        "",
    ]
    lines += bulk_report(bulk_cells, results)
    figs = {cell: figures(rs) for cell, rs in results.items() if cell[1] != "bulk"}
    lines += goals(results, figs, memory, soak_result)
    for proto in args.protocols:
        for shape in ("max", "rate", "p99"):
            if (proto, shape, "direct") not in results and not any(
                    (proto, shape, v) in results for v in args.variants):
                continue
            title = {"max": "max throughput", "rate": f"fixed {args.rate} RPS",
                     "p99": f"fixed {args.rate} RPS, the added-p99 goal's own run: "
                            f"{args.p99_rounds} turns of {P99_SLICE_SECONDS} s per variant"}[shape]
            m = {}
            for v in args.variants:
                if (proto, shape, v) not in figs:
                    continue
                mem = memory.get((proto, v), {})
                m[v] = dict(figs[(proto, shape, v)], rss=mem.get("peak_kb", 0) / 1024 if mem else None)
            # The p99 of a typical second only where the generator is ferry-bench-load.
            typical = any(x["p99_1s_ms"] is not None for x in m.values())
            lines += [f"## {proto} — {title}", "",
                      "| variant | RPS | ×direct | ×nginx | p50 ms | p99 ms | "
                      + ("p99/s ms | " if typical else "") + "max ms | +p50 ms | +p99 ms | "
                      + ("+p99/s ms | " if typical else "")
                      + "CPU s/10k req | ×nginx | peak RSS MB | ×nginx | errors |",
                      "|---|" + "---:|" * (15 if typical else 13)]
            d, n = m.get("direct", {}), m.get("nginx", {})

            def added(x, key):
                return None if x[key] is None or d.get(key) is None else x[key] - d[key]

            for v, x in m.items():
                add50, add99, add99s = (added(x, k) for k in ("p50_ms", "p99_ms", "p99_1s_ms"))
                lines.append(
                    f"| {v} | {fmt(x['rps'], ',.0f')} | {ratio(x['rps'], d.get('rps'))} | "
                    f"{ratio(x['rps'], n.get('rps'))} | {fmt(x['p50_ms'], '.3f')} | "
                    f"{fmt(x['p99_ms'], '.3f')} | "
                    + (f"{fmt(x['p99_1s_ms'], '.3f')} | " if typical else "")
                    + f"{fmt(x['max_ms'], '.2f')} | "
                    f"{fmt(add50, '+.3f')} | {fmt(add99, '+.3f')} | "
                    + (f"{fmt(add99s, '+.3f')} | " if typical else "")
                    + f"{fmt(x['cpu_s_per_10k'], '.3f')} | {ratio(x['cpu_s_per_10k'], n.get('cpu_s_per_10k'))} | "
                    f"{fmt(x['rss'], '.1f')} | {ratio(x['rss'], n.get('rss'))} | {x['errors']} |")
            lines.append("")
    if memory:
        lines += ["## Memory (KB): idle after start, peak (VmHWM) and after load, per protocol",
                  "", "| protocol | variant | idle RSS | peak RSS | RSS after | "
                  "largest single process peak |", "|---|---|---:|---:|---:|---:|"]
    for (proto, v), mem in memory.items():
        lines.append(f"| {proto} | {v} | {mem.get('idle_kb', 0)} | {mem.get('peak_kb', 0)} | "
                     f"{mem.get('after_kb', 0)} | {mem.get('max_single_peak_kb', 0)} |")
    if soak_result:
        samples = soak_result["samples"]
        early, late = soak_growth(samples)
        lines += ["", f"## Soak: one ferry hop, HTTP/1.1 at {args.rate} RPS for {args.soak}s", "",
                  f"RSS (KB) every 5 s: {', '.join(str(kb) for _, kb in samples)}", "",
                  f"Peak {soak_result['peak_kb']} KB; max of the first third {early} KB, of the "
                  f"last third {late} KB (growth {late - early:+d} KB). {soak_result['requests']}"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short run of every cell (< 1 min)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3, help="max-throughput cell length")
    # 10 s at 2,000 RPS is 20,000 requests a run, 100,000 over the default 5 runs pooled: a
    # p99 that rests on 1,000 slow requests. Slow requests come in clusters (the host, for
    # every variant alike), so the variants take turns in 2 s slices to share them out.
    ap.add_argument("--rate-seconds", type=float, default=10,
                    help="fixed-rate time per variant and run")
    ap.add_argument("--rate-slices", type=int, default=5,
                    help="the fixed-rate time in this many turns per variant, alternating")
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--p99-rounds", type=int, default=60,
                    help=f"rounds of the added-p99 goal's own run (HTTP/1.1, {P99_SLICE_SECONDS} s "
                    "per variant a round; 0: none)")
    ap.add_argument("--only", default=",".join(PROTOCOLS), help="protocols: " + ",".join(PROTOCOLS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cells", default="grid,bulk",
                    help="what to run: grid (the --only protocols' cells, the p99 run, the soak), "
                    "bulk (every bulk cell), or bulk cells by name: " + ",".join(BULK_CELLS))
    ap.add_argument("--soak", type=int, default=0, metavar="SECONDS",
                    help="also run one ferry hop at --rate this long, sampling RSS (e.g. 120)")
    ap.add_argument("--proxy", help="the ferry-proxy binary to measure (default: the one built)")
    ap.add_argument("--alt-proxy", help="another ferry-proxy binary, measured as variant "
                    "`ferry-alt` (one hop) in the same run: before/after comparisons; "
                    "`--variants ferry-2hop,ferry-2hop-alt` also runs the mTLS pair with it")
    ap.add_argument("--alt-control", help="the ferry-control binary that certifies the "
                    "`ferry-2hop-alt` pair (default: the one built)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--let-cpus-idle", action="store_true",
                    help="do not hold the CPUs out of idle states (measures the host's wake-ups too)")
    ap.add_argument("--share-middle-cpu", action="store_true",
                    help="leave other tasks free to run on the middle hop's CPU")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    if args.quick:
        args.runs, args.seconds, args.rate_seconds, args.rate_slices = 1, 1, 1, 1
        args.p99_rounds = min(args.p99_rounds, 2)
    cells = [c for c in args.cells.split(",") if c]
    unknown = set(cells) - {"grid", "bulk", *BULK_CELLS}
    if unknown:
        ap.error(f"unknown cells {sorted(unknown)}: grid, bulk, " + ", ".join(BULK_CELLS))
    args.bulk_cells = [c for c in BULK_CELLS if "bulk" in cells or c in cells]
    args.protocols = [p for p in args.only.split(",") if p] if "grid" in cells else []
    args.variants = [v for v in args.variants.split(",") if v]
    if args.alt_proxy and "ferry-alt" not in args.variants:
        args.variants.insert(args.variants.index("ferry") + 1 if "ferry" in args.variants else 1,
                             "ferry-alt")
    for s in (args.seconds, args.rate_seconds):
        if s != int(s):
            ap.error("durations are whole seconds")
    args.seconds, args.rate_seconds = int(args.seconds), int(args.rate_seconds)
    if args.rate_slices < 1 or args.rate_seconds % args.rate_slices:
        ap.error("--rate-seconds must be a whole multiple of --rate-slices")
    if os.cpu_count() < 2:
        ap.error("needs two CPUs (middle hop on one, load on the other)")

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ensure_tools()
    if not args.no_build:
        build()
    args.cpu_idle_note = ("CPUs allowed to idle (--let-cpus-idle)" if args.let_cpus_idle
                          else hold_cpus_awake())
    atexit.register(restore_affinity)
    args.cpu_idle_note += "; " + ("CPU shared with other tasks (--share-middle-cpu)"
                                  if args.share_middle_cpu else clear_middle_cpu())
    log(args.cpu_idle_note)
    started = datetime.datetime.now(datetime.timezone.utc)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    # gRPC unary request: a length-prefixed 2-byte protobuf message.
    (work / "grpc-request.bin").write_bytes(bytes([0, 0, 0, 0, 2, 0x08, 0x01]))
    log(f"work dir {work}; load average {os.getloadavg()}")

    ports = {"http1": free_port(), "h2c": free_port(), "tcp": free_port(),
             "tcp-source": free_port()}
    backend = spawn([RELEASE / "ferry-bench-backend", "--http1", f"127.0.0.1:{ports['http1']}",
                     "--h2c", f"127.0.0.1:{ports['h2c']}", "--echo", f"127.0.0.1:{ports['tcp']}",
                     "--source", f"127.0.0.1:{ports['tcp-source']}"],
                    LOAD_CPU, work / "backend.log")
    for p in ports.values():
        wait_port(p, backend, "backend")

    results, memory = {}, {}
    deadline = time.monotonic() + (120 if args.quick else 3600)
    for proto in args.protocols:
        if time.monotonic() > deadline:
            log(f"time budget spent; skipping {proto}")
            continue
        measure_group(proto, grid_plan(args), args, work, ports, results, memory)
    if args.p99_rounds and "http1" in args.protocols and set(P99_VARIANTS) <= set(args.variants):
        measure_group("http1", p99_plan(args), args, work, ports, results)
    soak_result = soak(args, work, ports) if args.soak and "grid" in cells else None
    if args.bulk_cells:
        origin, origin_ports = start_bulk_origin(work)
        try:
            for cell in args.bulk_cells:
                measure_bulk(cell, args, work, {**origin_ports, "tcp-source": ports["tcp-source"]},
                             results)
        finally:
            stop([origin])
    stop([backend])

    text = report(args, results, memory, started, soak_result, args.bulk_cells)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{started:%Y%m%dT%H%M}{'-quick' if args.quick else ''}"
    (out / f"{name}.md").write_text(text)
    # Histograms stay out of the JSON: the runs' figures (and each second's p99) are there,
    # the requests are not.
    raw = {f"{k[0]}/{k[1]}/{k[2]}": [{f: x for f, x in r.items() if f not in ("hist", "slices")}
                                     for r in v] for k, v in results.items()}
    raw["memory"] = {f"{k[0]}/{k[1]}": v for k, v in memory.items()}
    (out / f"{name}.json").write_text(json.dumps(raw, indent=1))
    log(f"wrote {out / name}.md and .json")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
