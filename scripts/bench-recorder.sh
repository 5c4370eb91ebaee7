#!/usr/bin/env bash
# Overhead of procflow-snap on a busy host, next to nethogs on the same load,
# in one run. Two loads (loopback only, scripts/load-sockets.py):
#
#   steady: STEADY_PROCS processes each holding STEADY_CONNS TCP connections
#           to one local echo server (default 200 x 20 = 4000 established
#           sockets held by the 200 processes, 8000 rows with the server's
#           ends), each sending one byte per second;
#   churn:  CHURN_PROCS x CHURN_CONNS connections, each process closing and
#           reopening CHURN of them per second (default 150 x 2 = 300 new
#           connections per second).
#
# For each load, one after the other, DURATION seconds each:
#   procflow-snap record --out DIR [EXTRA]           (defaults: event sources)
#   procflow-snap record --out DIR --sources poll    (the fallback)
#   nethogs -a -t -d 1 lo                            (-a: loopback allowed)
# CPU is user+system from /usr/bin/time (the recorder's final hashing and
# manifest included), as % of one core; MB/min is the bundle's size; lost
# is the samples the kernel dropped (ring full), from manifest.errors.
#
# Then three traffic loads (snapshot-tool/examples/load_traffic.rs), each
# run alone and then under `procflow-snap record` at its defaults, to
# measure both the recorder's CPU and the traced workload's slowdown (the
# kernel-side cost of the tracepoints is charged to the senders):
#
#   sends:     100 000 sends/s of 64 bytes across 50 loopback TCP sockets;
#   sends-max: the same sockets, as fast as they go (sends/s with and
#              without the recorder);
#   bulk:      four TCP streams into a namespace over a veth pair (offloads
#              off), as fast as they go (MB/s with and without).
#
# usage: scripts/bench-recorder.sh [extra procflow-snap record options]
#        (passed to every recording, traffic loads included; e.g.
#        `--sources tracepoints-perf-use` for the perf path of the per-call
#        evidence instead of the eBPF program)
# env:   BIN (default: static release build), DURATION=30,
#        STEADY_PROCS=200 STEADY_CONNS=20 CHURN_PROCS=150 CHURN_CONNS=20 CHURN=2,
#        NETHOGS=0 to skip nethogs, POLL=0 to skip the --sources poll runs,
#        SOCKET_LOADS=0 / TRAFFIC=0 to skip the socket / traffic loads,
#        SOCKET_LOADS="steady" (or "churn") for one of the two,
#        REPEAT=N to record each socket load N times in a row
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30}
STEADY_PROCS=${STEADY_PROCS:-200}
STEADY_CONNS=${STEADY_CONNS:-20}
CHURN_PROCS=${CHURN_PROCS:-150}
CHURN_CONNS=${CHURN_CONNS:-20}
CHURN=${CHURN:-2}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/procflow-snap}
if [ ! -x "$BIN" ]; then
  RUSTFLAGS='-C target-feature=+crt-static -C strip=symbols' \
    cargo build --release -p procflow-snap --target x86_64-unknown-linux-gnu
fi
WORK=$(mktemp -d /tmp/procflow-bench.XXXXXX)
LOAD=
stop_load() {
  # The load runs in its own session: end its whole process group.
  if [ -n "$LOAD" ]; then
    kill -TERM -- "-$LOAD" 2>/dev/null || true
    wait "$LOAD" 2>/dev/null || true
    LOAD=
  fi
}
cleanup() {
  stop_load
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

# recorder NAME [options]: one recording of DURATION seconds.
recorder() {
  local name=$1
  shift
  rm -rf "$WORK/bundle"
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/rec.time" \
    "$BIN" record --out "$WORK/bundle" --duration "${DURATION}s" "$@" 2>"$WORK/rec.err" || {
    cat "$WORK/rec.err"; exit 1; }
  local el us sy rss
  read -r el us sy rss < <(tail -n 1 "$WORK/rec.time")
  report "$name" "$el" "$us" "$sy" "$rss"
}

# report NAME ELAPSED USER SYS RSS: one line about the bundle in $WORK/bundle.
report() {
  local name=$1 el=$2 us=$3 sy=$4 rss=$5
  local bytes snaps events lost uses
  bytes=$(du -sb "$WORK/bundle" | cut -f1)
  snaps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['snapshots'])" "$WORK/bundle/manifest.json")
  events=0
  for t in "$WORK"/bundle/snapshots-*.tar; do
    n=$(tar -xOf "$t" --wildcards '*/events.jsonl' 2>/dev/null | wc -l || true)
    events=$((events + n))
  done
  lost=$(python3 -c "import json,sys
m = json.load(open(sys.argv[1]))
print(sum(e['count'] for e in m['errors'] if e['what'] == 'events' and 'samples dropped' in e['error']))" "$WORK/bundle/manifest.json")
  uses=0
  for t in "$WORK"/bundle/snapshots-*.tar; do
    n=$(tar -xOf "$t" --wildcards '*/sockuse.jsonl' 2>/dev/null | wc -l || true)
    uses=$((uses + n))
  done
  awk -v name="$name" -v e="$el" -v u="$us" -v s="$sy" -v b="$bytes" -v n="$snaps" -v r="$rss" -v ev="$events" -v l="$lost" -v su="$uses" 'BEGIN {
    printf "  %-34s %6.2f %% of a core (user %.2f + sys %.2f s over %.1f s), %6.2f MB/min written, %d snapshots, %d events, %d sockuse lines, %d samples lost, max RSS %d KB\n",
      name, (u+s)*100/e, u, s, e, b*60/e/1e6, n, ev, su, l, r }'
  echo "$name $(awk -v e="$el" -v u="$us" -v s="$sy" 'BEGIN { printf "%.4f", (u+s)*100/e }')" >>"$WORK/cpu"
}

nethogs_run() {
  if [ "${NETHOGS:-1}" = 0 ]; then
    echo "  nethogs: not run (NETHOGS=0)"
    return
  fi
  if ! command -v nethogs >/dev/null; then
    echo "  nethogs: SKIPPED (not installed)"
    return
  fi
  local el us sy rss
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/nh.time" \
    timeout -s INT "$DURATION" nethogs -a -t -d 1 lo >/dev/null 2>"$WORK/nh.err" || true
  # time(1) adds a "Command exited with non-zero status" line: timeout
  # ends nethogs with SIGINT and exits 124.
  read -r el us sy rss < <(tail -n 1 "$WORK/nh.time")
  awk -v e="$el" -v u="$us" -v s="$sy" -v r="$rss" 'BEGIN {
    printf "  %-34s %6.2f %% of a core (user %.2f + sys %.2f s over %.1f s), max RSS %d KB\n",
      "nethogs -a -t -d 1 lo", (u+s)*100/e, u, s, e, r }'
  echo "nethogs $(awk -v e="$el" -v u="$us" -v s="$sy" 'BEGIN { printf "%.4f", (u+s)*100/e }')" >>"$WORK/cpu"
}

# scenario NAME PROCS CONNS CHURN [extra recorder options]
scenario() {
  local name=$1 procs=$2 conns=$3 churn=$4
  shift 4
  rm -f "$WORK/ready" "$WORK/cpu"
  # The connections of an earlier load linger in TIME_WAIT for 60 s: wait
  # until they are gone, so that every run reads the same tables.
  local tw_wait=0
  while [ "$(awk '$4 == "06"' /proc/net/tcp /proc/net/tcp6 | wc -l)" -gt 100 ] && [ $tw_wait -lt 75 ]; do
    sleep 1
    tw_wait=$((tw_wait + 1))
  done
  local runs=$((1 + ${REPEAT:-1}))
  [ "${POLL:-1}" = 0 ] || runs=$((runs + 1))
  setsid python3 scripts/load-sockets.py hold --procs "$procs" --conns "$conns" --churn "$churn" \
    --seconds $((runs * DURATION + 60)) --ready "$WORK/ready" &
  LOAD=$!
  while [ ! -e "$WORK/ready" ]; do sleep 0.2; done
  # The clients connect at their own pace on a busy host: wait until
  # (nearly) every connection is established, both ends.
  local want=$((2 * procs * conns * 99 / 100)) waited=0
  while [ "$(awk '$4 == "01"' /proc/net/tcp | wc -l)" -lt "$want" ] && [ $waited -lt 120 ]; do
    sleep 1
    waited=$((waited + 1))
  done
  local nproc_total tcp_rows
  nproc_total=$(ls -d /proc/[0-9]* | wc -l)
  tcp_rows=$(($(wc -l </proc/net/tcp) - 1))
  echo "$name: $procs processes x $conns connections, $((procs * churn)) new connections/s; $nproc_total processes, $tcp_rows rows in /proc/net/tcp at start"
  local i
  for i in $(seq 1 "${REPEAT:-1}"); do
    recorder "procflow-snap (defaults)" "$@"
  done
  [ "${POLL:-1}" = 0 ] || recorder "procflow-snap --sources poll" --sources poll "$@"
  nethogs_run
  awk '$1 == "nethogs" { nh = $2 } $1 == "procflow-snap" && !d { d = $NF } END {
    if (nh > 0) printf "  ratio procflow-snap (defaults) / nethogs CPU: %.2f\n", d / nh }' "$WORK/cpu"
  stop_load
}

echo "procflow-snap $("$BIN" --version | cut -d' ' -f2), kernel $(uname -r), $(nproc) CPU(s), ${DURATION} s per run"
SOCKET_LOADS=${SOCKET_LOADS:-steady churn}
if [ "$SOCKET_LOADS" != 0 ]; then
  case " $SOCKET_LOADS " in *" steady "*)
    scenario steady "$STEADY_PROCS" "$STEADY_CONNS" 0 "$@" ;;
  esac
  case " $SOCKET_LOADS " in *" churn "*)
    scenario churn "$CHURN_PROCS" "$CHURN_CONNS" "$CHURN" "$@" ;;
  esac
fi

[ "${TRAFFIC:-1}" != 0 ] || exit 0
LOADBIN=${LOADBIN:-${CARGO_TARGET_DIR:-target}/release/examples/load_traffic}
[ -x "$LOADBIN" ] || cargo build --release -p procflow-snap --example load_traffic
NS=pfbench$$
VH=pfb$$h
VN=pfb$$n
NET=10.231.$(($$ % 250))
. scripts/veth-lab.sh
trap 'veth_lab_del "$NS" "$VH"; cleanup' EXIT
veth_lab "$NS" "$VH" "$VN" "$NET"

REC_OPTS=("$@")
# traffic NAME LOAD...: the load alone, then under the recorder.
traffic() {
  local name=$1
  shift
  local alone with
  alone=$("$@" | tail -n 1)
  rm -rf "$WORK/bundle"
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/rec.time" \
    "$BIN" record --out "$WORK/bundle" --duration "$((DURATION + 4))s" "${REC_OPTS[@]}" 2>"$WORK/rec.err" &
  local rec=$!
  sleep 2
  with=$("$@" | tail -n 1)
  wait "$rec" || { cat "$WORK/rec.err"; exit 1; }
  local el us sy rss
  read -r el us sy rss < <(tail -n 1 "$WORK/rec.time")
  echo "$name: workload alone: $alone; under the recorder: $with (workload CPU per unit of work: $(awk -v a="${alone##* }" -v w="${with##* }" 'BEGIN { printf "%+.1f %%", (w-a)*100/a }'))"
  report "procflow-snap (defaults)" "$el" "$us" "$sy" "$rss"
}

traffic sends "$LOADBIN" sends 100000 50 "$DURATION"
traffic sends-max "$LOADBIN" sends 0 50 "$DURATION"
ip netns exec "$NS" "$LOADBIN" sink "$NET.2:5201" $((4 * DURATION + 60)) &
SINK=$!
sleep 0.5
traffic bulk "$LOADBIN" bulk "$NET.2:5201" 4 "$DURATION"
kill "$SINK" 2>/dev/null || true
