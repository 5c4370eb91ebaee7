#!/usr/bin/env bash
# Benchmark `procflow flows` on a large real capture against tcpdump's
# read-only pass and tshark's conversation table, plus peak memory on the
# full capture and a half-size prefix.
#
# The capture is recorded once from real traffic between two network
# namespaces created here (veth pair, offloads off so packets are wire-sized):
# bulk TCP (iperf3), thousands of short TCP connections and small UDP
# datagrams (python3). It is cached in bench-work/ (gitignored); delete
# bench-work/bench.pcap to record a new one. Needs root, iproute2, ethtool,
# tcpdump, iperf3, python3, tshark, hyperfine and GNU time (/usr/bin/time).
#
# The binary is $CARGO_TARGET_DIR/release/procflow (default target/). The
# namespaces and veth ends are named after PREFIX (default `pf`), so two runs
# with different PREFIXes do not collide. RECORD_ONLY=1 records the capture
# (if absent) and stops.
#
# Usage: [PREFIX=pf] [RECORD_ONLY=1] scripts/bench-flows.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
TARGET=${CARGO_TARGET_DIR:-target}
PREFIX=${PREFIX:-pf}
WORK=bench-work
CAP=$WORK/bench.pcap
HALF=$WORK/bench-half.pcap
mkdir -p "$WORK"

for tool in ip ethtool tcpdump iperf3 python3 tshark hyperfine; do
    command -v "$tool" >/dev/null || { echo "bench-flows: $tool is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench-flows: /usr/bin/time is required (apt-get install -y time)" >&2; exit 2; }

# Globals, not locals: the EXIT trap runs after record() has returned or
# failed, and must still know what to remove.
NS1="${PREFIX}bench-a-$$" NS2="${PREFIX}bench-b-$$" VA="${PREFIX}ba$$" VB="${PREFIX}bb$$"
[ ${#VA} -le 15 ] || { echo "bench-flows: PREFIX too long for a veth name ($VA)" >&2; exit 2; }
PIDS=()
. scripts/bench-traffic.sh
cleanup() {
    bench_cleanup
    rm -f "$CAP.tmp"
}

record() {
    [ "$(id -u)" = 0 ] || { echo "bench-flows: recording needs root (network namespaces)" >&2; exit 2; }
    local a=10.213.0.1 b=10.213.0.2
    trap cleanup EXIT INT TERM
    bench_netns_up "$a" "$b"
    ip netns exec "$NS2" tcpdump -i "$VB" -s 0 -B 131072 -n -w "$CAP.tmp" 2>"$WORK/tcpdump.log" &
    local tcpdump_pid=$!
    PIDS+=("$tcpdump_pid")
    sleep 1.5
    bench_servers "$b"
    # Bulk TCP: ~600 MB in 1448-byte segments, paced so tcpdump keeps up.
    bench_traffic "$b" 600M 2G
    sleep 1
    kill -INT "$tcpdump_pid"
    wait "$tcpdump_pid" || true
    mv "$CAP.tmp" "$CAP"
    cat "$WORK/tcpdump.log" >&2
    cleanup
    trap - EXIT INT TERM
}

if [ ! -s "$CAP" ]; then
    echo "bench-flows: recording $CAP" >&2
    record
fi
[ "${RECORD_ONLY:-0}" = 1 ] && exit 0
PACKETS=$(tcpdump -r "$CAP" -n 2>/dev/null | wc -l)
SIZE=$(stat -c %s "$CAP")
echo "capture: $CAP, $SIZE bytes, $PACKETS packets"
if [ ! -s "$HALF" ]; then
    tcpdump -r "$CAP" -c $((PACKETS / 2)) -w "$HALF" 2>/dev/null
fi

cargo build --release --quiet
BIN=$TARGET/release/procflow
FLOWS=$("$BIN" flows "$CAP" 2>/dev/null | tail -n +2 | wc -l)
echo "flows: $FLOWS"

# Warm the page cache so every tool reads from memory.
cat "$CAP" "$HALF" >/dev/null
hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/hyperfine.json" \
    -n procflow "$BIN flows $CAP --out /dev/null" \
    -n procflow-1thread "$BIN flows $CAP --out /dev/null --threads 1" \
    -n tcpdump "tcpdump -r $CAP -w /dev/null"
# tshark with -n (no name look-ups: no DNS traffic) and without TCP
# reassembly: by default it reassembles the bulk stream, which on this
# capture costs over a minute per 50k packets; this is its fastest setting.
hyperfine --runs 2 --export-json "$WORK/hyperfine-tshark.json" \
    -n tshark "tshark -n -q -o tcp.desegment_tcp_streams:FALSE -r $CAP -z conv,tcp"

rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}'; }
RSS_FULL=$(rss "$BIN" flows "$CAP" --out /dev/null)
RSS_HALF=$(rss "$BIN" flows "$HALF" --out /dev/null)
RSS_TCPDUMP=$(rss tcpdump -r "$CAP" -w /dev/null)

python3 - "$WORK/hyperfine.json" "$WORK/hyperfine-tshark.json" "$RSS_FULL" "$RSS_HALF" "$RSS_TCPDUMP" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for f in sys.argv[1:3] for x in json.load(open(f))["results"]}
p, t, s = r["procflow"], r["tcpdump"], r["tshark"]
print(f"procflow {p:.3f}s  procflow --threads 1 {r['procflow-1thread']:.3f}s  tcpdump -r -w /dev/null {t:.3f}s  tshark conv,tcp {s:.3f}s")
print(f"procflow / tcpdump = {p / t:.2f}x (target <= 1.5)   tshark / procflow = {s / p:.1f}x (target >= 20)")
print(f"peak RSS: procflow full {sys.argv[3]} kB, half-size prefix {sys.argv[4]} kB; tcpdump {sys.argv[5]} kB")
PY
