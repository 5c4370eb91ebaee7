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
# With PIN=1 (the default on a host of two or more CPUs) the load runs on
# the last CPU and the recorder on the first, so that the recorder's own
# work does not take the load's CPU: what remains on the load's CPU is the
# per-call cost charged to it.
#
# LOAD=bulk measures four bulk TCP streams instead (`load_traffic bulk`,
# 128 KiB writes as fast as they go) into a sink in a network namespace
# over a veth pair with offloads off: MB/s and the sender's CPU per KB.
#
# usage: scripts/bench-use-cost.sh   (root; env BIN, LOADBIN, ROUNDS=5,
#        SECONDS_PER=5, PIN=1, LOAD=sends|bulk, MODES="none
#        tracepoints-no-use tracepoints-perf-use defaults")
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/procflow-snap}
LOADBIN=${LOADBIN:-target/release/examples/load_traffic}
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER:-5}
[ -x "$BIN" ] || cargo build --release -p procflow-snap
[ -x "$LOADBIN" ] || cargo build --release -p procflow-snap --example load_traffic
W=$(mktemp -d /tmp/procflow-usecost.XXXXXX)
LOAD=${LOAD:-sends}
NS=pfcost$$
VH=pfc$$h
VN=pfc$$n
SINK=
cleanup() {
  [ -z "$SINK" ] || kill "$SINK" 2>/dev/null || true
  [ "$LOAD" != bulk ] || veth_lab_del "$NS" "$VH"
  rm -rf "$W"
}
trap cleanup EXIT
case "$LOAD" in
  sends) LOADCMD=("$LOADBIN" sends 0 50 "$SECS") ;;
  bulk)
    NET=10.232.$(($$ % 250))
    . scripts/veth-lab.sh
    veth_lab "$NS" "$VH" "$VN" "$NET"
    ip netns exec "$NS" "$LOADBIN" sink "$NET.2:5201" 100000 >/dev/null &
    SINK=$!
    sleep 0.5
    LOADCMD=("$LOADBIN" bulk "$NET.2:5201" 4 "$SECS")
    ;;
  *) echo "LOAD is sends or bulk" >&2; exit 2 ;;
esac
MODES=${MODES:-"none tracepoints-no-use tracepoints-perf-use defaults"}
NCPU=$(nproc)
PIN=${PIN:-1}
LOADPIN=()
RECPIN=()
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ]; then
  LOADPIN=(taskset -c "$((NCPU - 1))")
  RECPIN=(taskset -c 0)
  echo "load pinned to CPU $((NCPU - 1)), recorder to CPU 0"
fi
read -r -a MODE_LIST <<<"$MODES"
NMODES=${#MODE_LIST[@]}
for r in $(seq 1 "$ROUNDS"); do
  # Each round starts with the next mode: the machine drifts, and a mode
  # always run right after another would carry that drift.
  for k in $(seq 0 $((NMODES - 1))); do
    mode=${MODE_LIST[$(((k + r) % NMODES))]}
    R=
    if [ "$mode" != none ]; then
      args=()
      [ "$mode" = defaults ] || args=(--sources "$mode")
      rm -rf "$W/b"
      /usr/bin/time -f "%e %U %S" -o "$W/t" "${RECPIN[@]}" "$BIN" record --out "$W/b" \
        --duration "$((SECS + 3))s" "${args[@]}" 2>/dev/null &
      R=$!
      sleep 1.5
    fi
    # "sends/s N, CPU ns/send M"
    line=$("${LOADPIN[@]}" "${LOADCMD[@]}" | tail -n 1)
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
    echo "$mode $line $rec $r" | tr -d ',' | awk '{ print $1, $3, $6, $7, $8 }' >>"$W/res"
    echo "round $r $mode: $line; recorder CPU % / samples lost: $rec"
  done
done
echo "mode: median CPU ns per message (per KB for bulk) [quartiles], median messages/s (MB/s for bulk), recorder CPU % of a core (median)"
for mode in $MODES; do
  awk -v m="$mode" 'BEGIN { n = 0 } $1 == m { ns[n] = $3; rate[n] = $2; rc[n] = $4 + 0; n++ }
    function med(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return a[int(n / 2)] }
    END { printf "  %-22s %8.0f ns [%.0f-%.0f]  %8.0f /s  %s\n", m, med(ns, n), ns[int(n / 4)], ns[int(3 * n / 4)], med(rate, n), (m == "none" ? "-" : sprintf("%.2f %%", med(rc, n))) }' "$W/res"
done
# Each round against the round's own run without a recorder (the machine
# drifts between rounds; a pair of neighbours drifts less): the median of
# those changes, and their quartiles.
case " $MODES " in *" none "*)
  echo "paired with each round's run without a recorder: median change in CPU per message (per KB) [quartiles], in messages/s (MB/s)"
  for mode in $MODES; do
    [ "$mode" = none ] && continue
    awk -v m="$mode" '$1 == "none" { base_ns[$5] = $3; base_rate[$5] = $2 }
      $1 == m { mine_ns[$5] = $3; mine_rate[$5] = $2 }
      function sortv(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } }
      END { n = 0; for (r in mine_ns) if (r in base_ns && base_ns[r] > 0 && base_rate[r] > 0) { c[n] = (mine_ns[r] / base_ns[r] - 1) * 100; d[n] = (mine_rate[r] / base_rate[r] - 1) * 100; n++ }
        if (n == 0) exit; sortv(c, n); sortv(d, n)
        printf "  %-22s %+6.1f %% [%+.1f %+.1f]  %+6.1f %%\n", m, c[int(n / 2)], c[int(n / 4)], c[int(3 * n / 4)], d[int(n / 2)] }' "$W/res"
  done ;;
esac
