#!/usr/bin/env bash
# A one-machine walk-through of ferry-proxy: app ← proxy B ← proxy A ← curl, then the app
# dies and the proxy says so. Everything binds 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/release/ferry-proxy
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed for the demo app" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_http() { # url: waits up to 10 s
  for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "app on 127.0.0.1:18080 (python3 -m http.server)"
python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 & app=$!; pids+=("$app")
wait_http http://127.0.0.1:18080/

step "proxy B: inbound 127.0.0.1:14143 -> app; admin 127.0.0.1:14191"
"$bin" --inbound-listen 127.0.0.1:14143 --inbound-forward 127.0.0.1:18080 \
  --outbound-listen 127.0.0.1:14140 --admin-listen 127.0.0.1:14191 --log warn & pids+=($!)
step "proxy A: upstream 127.0.0.1:17001 -> B; admin 127.0.0.1:24191"
"$bin" --upstream 127.0.0.1:17001=127.0.0.1:14143 --inbound-listen 127.0.0.1:24143 \
  --outbound-listen 127.0.0.1:24140 --admin-listen 127.0.0.1:24191 --log warn & pids+=($!)
wait_http http://127.0.0.1:14191/ready
wait_http http://127.0.0.1:24191/ready

step "curl http://127.0.0.1:17001/  (client -> A -> B -> app)"
for _ in 1 2 3; do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:17001/; done

step "A's metrics (outbound) and B's metrics (inbound)"
curl -s http://127.0.0.1:24191/metrics | grep -E '^(request_total|response_total)'
curl -s http://127.0.0.1:14191/metrics | grep -E '^(request_total|response_total)'

step "the app dies: the proxy answers, and says it was the proxy"
kill "$app"; wait "$app" 2>/dev/null || true
curl -s -D - -o /dev/null http://127.0.0.1:17001/ | grep -iE '^(HTTP|l5d-proxy-error|ferry-proxy-error)'
curl -s http://127.0.0.1:14191/metrics | grep -E '^inbound_http_errors_total'
echo
echo "Both proxies are still running; /state shows what they know:"
curl -s http://127.0.0.1:24191/state | head -12

# Part two: a service with two instances, found through the control plane.
control=./target/release/ferry-control
[ -x "$control" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d); trap 'cleanup; rm -rf "$work"' EXIT
for i in a b; do mkdir -p "$work/$i"; echo "echo-$i" > "$work/$i/index.html"; done

step "two instances of service echo: echo-a on 18081, echo-b on 18082, each behind a proxy"
python3 -m http.server 18081 --bind 127.0.0.1 --directory "$work/a" >/dev/null 2>&1 & pids+=($!)
python3 -m http.server 18082 --bind 127.0.0.1 --directory "$work/b" >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:18081/; wait_http http://127.0.0.1:18082/
"$bin" --inbound-listen 127.0.0.1:14151 --inbound-forward 127.0.0.1:18081 --outbound-listen 127.0.0.1:14150 \
  --admin-listen 127.0.0.1:14152 --log warn & pids+=($!)
"$bin" --inbound-listen 127.0.0.1:14161 --inbound-forward 127.0.0.1:18082 --outbound-listen 127.0.0.1:14160 \
  --admin-listen 127.0.0.1:14162 --log warn & pids+=($!)

workloads() { # instance lines for the workloads file
  printf 'workloads:\n  - name: echo\n    serviceAccount: echo\n    instances:\n'
  for line in "$@"; do printf '      - %s\n' "$line"; done
  printf 'services:\n  - { name: echo, port: 8080, workloads: [echo] }\n'
}
workloads "{ name: echo-a, addr: 127.0.0.1:14151 }" "{ name: echo-b, addr: 127.0.0.1:14161 }" > "$work/workloads.yaml"

step "ferry-control on 127.0.0.1:18086 (gRPC) and :18084 (API), serving $work/workloads.yaml"
"$control" --workloads-file "$work/workloads.yaml" --grpc-listen 127.0.0.1:18086 --api-listen 127.0.0.1:18084 --trace-listen off --log warn & cp=$!; pids+=("$cp")
wait_http http://127.0.0.1:18084/api/v1/health
step "a client proxy: upstream 127.0.0.1:17002 -> echo.default:8080, resolved by the control plane"
"$bin" --upstream 127.0.0.1:17002=echo.default:8080 --destination-addr 127.0.0.1:18086 --inbound-listen 127.0.0.1:24153 \
  --outbound-listen 127.0.0.1:24150 --admin-listen 127.0.0.1:24152 --log warn & pids+=($!)
wait_http http://127.0.0.1:24152/ready
./target/release/ferry diagnostics endpoints echo.default:8080 --api-addr http://127.0.0.1:18084

tally() { for _ in $(seq "$1"); do curl -s http://127.0.0.1:17002/; done | sort | uniq -c; }
step "40 requests, balanced over both instances"
tally 40
step "echo-b leaves the workloads file: traffic moves to echo-a"
workloads "{ name: echo-a, addr: 127.0.0.1:14151 }" > "$work/workloads.yaml"
sleep 1; tally 20
step "the control plane dies: the proxy keeps routing with what it knew"
kill "$cp"; wait "$cp" 2>/dev/null || true
tally 20
curl -s http://127.0.0.1:24152/state | python3 -c 'import json,sys; d=json.load(sys.stdin)["destinations"][0]; print(d["name"], "stream connected:", d["stream"]["connected"], "endpoints:", [e["labels"]["pod"] for e in d["endpoints"]])'
