#!/usr/bin/env bash
# How many processes living 0.5 s does procflow-snap see, per --interval,
# from its periodic reads alone (--sources poll)?
# Forks COUNT short processes (RATE per second), each opening one loopback
# TCP connection and exiting after LIFE seconds, while the recorder runs;
# then counts the pids the bundle shows holding a socket whose row it also
# recorded. Prints: interval seen total percent cpu_seconds_per_minute.
#
# usage: scripts/measure-interval.sh [INTERVAL...]   (default 50ms 100ms 250ms 500ms 1s)
# env:   BIN (default target/release/procflow-snap), COUNT=200 RATE=10 LIFE=0.5
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/procflow-snap}
COUNT=${COUNT:-200}
RATE=${RATE:-10}
LIFE=${LIFE:-0.5}
[ -x "$BIN" ] || cargo build --release -p procflow-snap
WORK=$(mktemp -d /tmp/procflow-interval.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TCK=$(getconf CLK_TCK)
printf '%-8s %5s %5s %7s %10s\n' interval seen total percent cpu_s/min
for iv in "${@:-50ms 100ms 250ms 500ms 1s}"; do
  for i in $iv; do
    out="$WORK/bundle-$i"
    # Periodic reads alone: what the interval decides (with event sources
    # the owner of a short connection is recorded as it connects).
    "$BIN" record --out "$out" --interval "$i" --sources poll 2>"$WORK/err-$i" &
    rec=$!
    while [ ! -s "$out/snapshots-000001.tar" ]; do sleep 0.05; done
    t0=$(date +%s.%N)
    python3 scripts/load-sockets.py short --count "$COUNT" --rate "$RATE" --life "$LIFE" --pidfile "$WORK/pids-$i"
    sleep 0.5
    read -r ut st < <(awk '{print $14, $15}' "/proc/$rec/stat")
    t1=$(date +%s.%N)
    kill -INT "$rec"; wait "$rec"
    read -r seen total < <(python3 scripts/count-seen.py "$out" "$WORK/pids-$i")
    awk -v i="$i" -v s="$seen" -v t="$total" -v c="$((ut + st))" -v k="$TCK" -v a="$t0" -v b="$t1" \
      'BEGIN { printf "%-8s %5d %5d %6.1f%% %10.2f\n", i, s, t, 100*s/t, (c/k)/((b-a)/60) }'
  done
done
