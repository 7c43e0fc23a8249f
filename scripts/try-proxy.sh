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
curl -s http://127.0.0.1:24191/state | head -20
