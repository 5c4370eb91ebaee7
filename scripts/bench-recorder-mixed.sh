#!/usr/bin/env bash
# Mixed loopback load for procflow-snap, with the per-call evidence counted
# by the eBPF program (defaults), sampled by the perf tracepoints
# (`--sources tracepoints-perf-use`) and off (`--sources
# tracepoints-no-use`), one after the other: 100 processes x 20 connections each reopening one per second (100
# new connections/s) and sending a byte a second, 20 000 sends/s of 64 bytes
# on 20 sockets, one bulk stream, and 40 short python3 clients (one
# connection, 5 000 bytes, exit). Prints the recorder's CPU (% of one core),
# MB/min written, the sockuse.jsonl and tasks.jsonl lines and bytes, the
# samples lost, and the workload's rates and CPU per unit of work.
#
# usage: scripts/bench-recorder-mixed.sh   (root; env BIN, LOADBIN, DURATION=20,
#        MODES="defaults tracepoints-perf-use tracepoints-no-use")
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
BIN=${BIN:-target/release/procflow-snap}
LOADBIN=${LOADBIN:-target/release/examples/load_traffic}
[ -x "$BIN" ] || cargo build --release -p procflow-snap
[ -x "$LOADBIN" ] || cargo build --release -p procflow-snap --example load_traffic
W=$(mktemp -d /tmp/procflow-mixed.XXXXXX)
LP=
SP=
cleanup() {
  [ -z "$LP" ] || kill -TERM -- "-$LP" 2>/dev/null || true
  [ -z "$SP" ] || kill "$SP" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
setsid python3 scripts/load-sockets.py hold --procs 100 --conns 20 --churn 1 \
  --seconds $((2 * DURATION + 120)) --ready "$W/ready" &
LP=$!
while [ ! -e "$W/ready" ]; do sleep 0.2; done
PORT=$((20000 + $$ % 20000))
"$LOADBIN" sink "127.0.0.1:$PORT" $((4 * DURATION + 200)) &
SP=$!
sleep 0.3
lines() { # MEMBER: "lines bytes" of that member over the bundle's archives
  for t in "$W"/b/snapshots-*.tar; do tar -xOf "$t" --wildcards "*/$1" 2>/dev/null || true; done | wc -lc
}
for mode in ${MODES:-defaults tracepoints-perf-use tracepoints-no-use}; do
  args=()
  [ "$mode" = defaults ] || args=(--sources "$mode")
  rm -rf "$W/b"
  /usr/bin/time -f "%e %U %S %M" -o "$W/t" "$BIN" record --out "$W/b" \
    --duration "$((DURATION + 4))s" "${args[@]}" 2>/dev/null &
  R=$!
  sleep 2
  "$LOADBIN" sends 20000 20 "$DURATION" >"$W/s" &
  P1=$!
  "$LOADBIN" bulk "127.0.0.1:$PORT" 1 "$DURATION" >"$W/k" &
  P2=$!
  for _ in $(seq 1 40); do
    python3 -c "import socket;s=socket.create_connection(('127.0.0.1',$PORT));s.sendall(b'x'*5000);s.close()" 2>/dev/null || true
    sleep 0.3
  done
  wait "$R"
  wait "$P1" "$P2"
  read -r el us sy _ <"$W/t"
  lost=$(python3 -c "import json,sys
m = json.load(open(sys.argv[1]))
print(sum(e['count'] for e in m['errors'] if e['what'] == 'events' and 'samples dropped' in e['error']))" "$W/b/manifest.json")
  bytes=$(du -sb "$W/b" | cut -f1)
  printf '%s: recorder %s, %s; sockuse lines/bytes %s; tasks lines/bytes %s; %s samples lost; %s; bulk %s\n' \
    "$mode" "$(awk -v e="$el" -v u="$us" -v s="$sy" 'BEGIN { printf "%.2f %% of a core", (u+s)*100/e }')" \
    "$(awk -v b="$bytes" -v e="$el" 'BEGIN { printf "%.2f MB/min", b*60/e/1e6 }')" \
    "$(lines sockuse.jsonl | xargs)" "$(lines tasks.jsonl | xargs)" "$lost" "$(cat "$W/s")" "$(cat "$W/k")"
done
