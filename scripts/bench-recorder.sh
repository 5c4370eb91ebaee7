#!/usr/bin/env bash
# Overhead of procflow-snap on a busy host, next to nethogs on the same load.
#
# Load (loopback only): PROCS processes each holding CONNS TCP connections to
# one local echo server (so 2 x PROCS x CONNS socket rows), each sending one
# byte per second, CHURN connections closed and reopened per process per
# second. Then, one after the other, for DURATION seconds each:
#   procflow-snap record --out DIR [EXTRA]      CPU s/min, bytes written/min
#   nethogs -a -t -d 1 lo (-a: loopback allowed)  CPU s/min
# CPU is user+system from /usr/bin/time (the recorder's final hashing and
# manifest included).
#
# usage: scripts/bench-recorder.sh [extra procflow-snap record options]
# env:   BIN (default: static release build), PROCS=300 CONNS=20 CHURN=0 DURATION=60,
#        NETHOGS=0 to skip the nethogs run
set -euo pipefail
cd "$(dirname "$0")/.."
PROCS=${PROCS:-300}
CONNS=${CONNS:-20}
CHURN=${CHURN:-0}
DURATION=${DURATION:-60}
BIN=${BIN:-target/x86_64-unknown-linux-gnu/release/procflow-snap}
if [ ! -x "$BIN" ]; then
  RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
    cargo build --release -p procflow-snap --target x86_64-unknown-linux-gnu
fi
WORK=$(mktemp -d /tmp/procflow-bench.XXXXXX)
LOAD=
cleanup() {
  # The load runs in its own session: end its whole process group.
  [ -n "$LOAD" ] && kill -TERM -- "-$LOAD" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

setsid python3 scripts/load-sockets.py hold --procs "$PROCS" --conns "$CONNS" --churn "$CHURN" \
  --seconds $((2 * DURATION + 60)) --ready "$WORK/ready" &
LOAD=$!
while [ ! -e "$WORK/ready" ]; do sleep 0.2; done
nproc_total=$(ls -d /proc/[0-9]* | wc -l)
tcp_rows=$(($(wc -l </proc/net/tcp) - 1))
echo "load: $PROCS x $CONNS connections (churn $CHURN/s/process); $nproc_total processes, $tcp_rows rows in /proc/net/tcp"

/usr/bin/time -f "%e %U %S %M" -o "$WORK/rec.time" \
  "$BIN" record --out "$WORK/bundle" --duration "${DURATION}s" "$@" 2>"$WORK/rec.err" || {
  cat "$WORK/rec.err"; exit 1; }
read -r el us sy rss < <(tail -n 1 "$WORK/rec.time")
bytes=$(du -sb "$WORK/bundle" | cut -f1)
snaps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['snapshots'])" "$WORK/bundle/manifest.json")
awk -v e="$el" -v u="$us" -v s="$sy" -v b="$bytes" -v n="$snaps" -v r="$rss" 'BEGIN {
  printf "procflow-snap: %.2f CPU s/min (user %.2f + sys %.2f over %.1f s), %.2f MB written/min, %d snapshots, max RSS %d KB\n",
    (u+s)*60/e, u, s, e, b*60/e/1e6, n, r }'

if [ "${NETHOGS:-1}" = 0 ]; then
  echo "nethogs: not run (NETHOGS=0)"
elif command -v nethogs >/dev/null; then
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/nh.time" \
    timeout -s INT "$DURATION" nethogs -a -t -d 1 lo >/dev/null 2>"$WORK/nh.err" || true
  # time(1) adds a "Command exited with non-zero status" line: timeout
  # ends nethogs with SIGINT and exits 124.
  read -r el us sy rss < <(tail -n 1 "$WORK/nh.time")
  awk -v e="$el" -v u="$us" -v s="$sy" -v r="$rss" 'BEGIN {
    printf "nethogs -a -t -d 1 lo: %.2f CPU s/min (user %.2f + sys %.2f over %.1f s), max RSS %d KB\n",
      (u+s)*60/e, u, s, e, r }'
else
  echo "nethogs: SKIPPED (not installed)"
fi
