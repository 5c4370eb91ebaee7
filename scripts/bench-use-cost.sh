#!/usr/bin/env bash
# What the per-call evidence costs the traced workload: alternating rounds
# of `load_traffic sends 0 50 SECONDS` (64-byte messages on 50 loopback TCP
# sockets as fast as they go, both ends in one process, so each message is
# one send and about one read) with no recorder, with `procflow-snap record
# --sources tracepoints-no-use`, `--sources tracepoints-perf-use` (perf
# samples) and at the defaults (the eBPF program). Prints, per mode, the
# median workload CPU per message (user + system of the load process: the
# kernel-side cost of the tracepoints lands there) and messages/s, and the
# recorder's own CPU.
#
# usage: scripts/bench-use-cost.sh   (root; env BIN, LOADBIN, ROUNDS=5, SECONDS_PER=5)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/procflow-snap}
LOADBIN=${LOADBIN:-target/release/examples/load_traffic}
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER:-5}
[ -x "$BIN" ] || cargo build --release -p procflow-snap
[ -x "$LOADBIN" ] || cargo build --release -p procflow-snap --example load_traffic
W=$(mktemp -d /tmp/procflow-usecost.XXXXXX)
trap 'rm -rf "$W"' EXIT
MODES="none tracepoints-no-use tracepoints-perf-use defaults"
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    R=
    if [ "$mode" != none ]; then
      args=()
      [ "$mode" = defaults ] || args=(--sources "$mode")
      rm -rf "$W/b"
      /usr/bin/time -f "%e %U %S" -o "$W/t" "$BIN" record --out "$W/b" \
        --duration "$((SECS + 3))s" "${args[@]}" 2>/dev/null &
      R=$!
      sleep 1.5
    fi
    # "sends/s N, CPU ns/send M"
    line=$("$LOADBIN" sends 0 50 "$SECS" | tail -n 1)
    rec=-
    if [ -n "$R" ]; then
      wait "$R"
      read -r el us sy <"$W/t"
      rec=$(awk -v e="$el" -v u="$us" -v s="$sy" 'BEGIN { printf "%.2f", (u+s)*100/e }')
      lost=$(python3 -c "import json,sys
m = json.load(open(sys.argv[1]))
print(sum(e['count'] for e in m['errors'] if e['what'] == 'events' and 'samples dropped' in e['error']))" "$W/b/manifest.json")
      rec="$rec/$lost"
    fi
    echo "$mode $line $rec" | tr -d ',' | awk '{ print $1, $3, $6, $7 }' >>"$W/res"
    echo "round $r $mode: $line; recorder CPU % / samples lost: $rec"
  done
done
echo "mode: median CPU ns per message, median messages/s, recorder CPU % of a core (median)"
for mode in $MODES; do
  awk -v m="$mode" '$1 == m { ns[n] = $3; rate[n] = $2; rc[n] = $4 + 0; n++ }
    function med(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return a[int(n / 2)] }
    END { printf "  %-22s %8.0f ns  %8.0f /s  %s\n", m, med(ns, n), med(rate, n), (m == "none" ? "-" : sprintf("%.2f %%", med(rc, n))) }' "$W/res"
done
