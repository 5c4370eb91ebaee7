#!/usr/bin/env bash
# The recorder's own capture (AF_PACKET ring, pcapng) against tcpdump, side
# by side in one run on the same veth end and the same load: CPU time of
# the capture (the recorder's `capture` thread; tcpdump's process) and
# packets dropped by the kernel.
#
# Two loads, each from NS1 to NS2 over one veth pair (offloads off, so
# frames are wire-sized): bulk TCP at about 1 Gbit/s (iperf3 -b 1G) and
# small UDP datagrams at about 200k packets/s (iperf3 -u -l 64 -b 102M).
# tcpdump runs as the recorder ran it before it captured itself:
# `tcpdump -i IF -n -s 0 -U --time-stamp-precision=nano -w FILE`.
#
# Needs root, iproute2, ethtool, tcpdump, iperf3. Namespace and veth names
# carry PREFIX (default `pfcap`) and the script's pid.
#
# The captures are written under WORK_DIR (default /tmp; /dev/shm takes the
# disk out of the measurement).
#
# The small UDP load comes from SENDERS iperf3 processes at once (default 2;
# each asks for 102 Mbit/s of 64-byte datagrams), since one iperf3 process
# is one thread and reaches about 130k packets/s on a 2-vCPU VM.
#
# Usage: [PREFIX=pfcap] [SECONDS_PER_LOAD=10] [WORK_DIR=/tmp] [SENDERS=2] scripts/bench-capture.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-pfcap}
SECS=${SECONDS_PER_LOAD:-10}
TARGET=${CARGO_TARGET_DIR:-target}
for tool in ip ethtool tcpdump iperf3; do
    command -v "$tool" >/dev/null || { echo "bench-capture: $tool is required" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "bench-capture: needs root (network namespaces)" >&2; exit 2; }
cargo build --release --quiet -p procflow-snap
SNAP=$TARGET/release/procflow-snap

NS1=$PREFIX-a-$$
NS2=$PREFIX-b-$$
VA=${PREFIX:0:4}a$$
VB=${PREFIX:0:4}b$$
WORK=$(mktemp -d "${WORK_DIR:-/tmp}/bench-capture.XXXXXX")
PIDS=()
# shellcheck source=scripts/bench-traffic.sh
. scripts/bench-traffic.sh
cleanup() {
    bench_cleanup
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

bench_netns_up 10.215.0.1 10.215.0.2
# One iperf3 server per sender: an iperf3 process is one thread, which
# caps the packet rate of one sender (SENDERS for the small UDP load).
SENDERS=${SENDERS:-2}
for k in $(seq 1 "$SENDERS"); do
    ip netns exec "$NS2" iperf3 -s -p $((5200 + k)) >/dev/null 2>&1 &
    PIDS+=("$!")
done
sleep 0.5

# CPU ticks (utime + stime) of a process, or of one of its threads by name.
ticks() {
    awk '{print $14 + $15}' "$1"
}
thread_stat() {
    local pid=$1 name=$2 t
    for t in /proc/"$pid"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = "$name" ]; then
            echo "$t/stat"
            return
        fi
    done
}

run_load() {
    local label=$1
    shift
    local out=$WORK/$label
    mkdir -p "$out"
    ip netns exec "$NS1" "$SNAP" record --out "$out/bundle" --iface "$VA" >"$out/recorder.log" 2>&1 &
    local rec=$!
    ip netns exec "$NS1" tcpdump -i "$VA" -n -s 0 -U --time-stamp-precision=nano \
        -w "$out/tcpdump.pcap" 2>"$out/tcpdump.log" &
    local td=$!
    PIDS+=("$rec" "$td")
    for _ in $(seq 100); do
        grep -q "capture on " "$out/recorder.log" 2>/dev/null \
            && grep -q "listening on" "$out/tcpdump.log" 2>/dev/null && break
        sleep 0.1
    done
    sleep 0.5
    local cap_stat rec_pid
    rec_pid=$(pgrep -P "$rec" -x procflow-snap || echo "$rec")
    cap_stat=$(thread_stat "$rec_pid" capture)
    [ -n "$cap_stat" ] || { echo "bench-capture: no capture thread in $rec_pid" >&2; cat "$out/recorder.log" >&2; exit 1; }
    local td_pid
    td_pid=$(pgrep -P "$td" -x tcpdump || echo "$td")
    local c0 t0 r0
    c0=$(ticks "$cap_stat"); t0=$(ticks /proc/"$td_pid"/stat); r0=$(ticks /proc/"$rec_pid"/stat)
    local senders=1
    if [ "$label" != "${label#small}" ]; then senders=$SENDERS; fi
    local k clients=()
    for k in $(seq 1 "$senders"); do
        ip netns exec "$NS1" iperf3 -c 10.215.0.2 -p $((5200 + k)) -t "$SECS" "$@" >"$out/iperf3-$k.txt" &
        clients+=("$!")
    done
    wait "${clients[@]}"
    cat "$out"/iperf3-*.txt >"$out/iperf3.txt"
    local c1 t1 r1
    c1=$(ticks "$cap_stat"); t1=$(ticks /proc/"$td_pid"/stat); r1=$(ticks /proc/"$rec_pid"/stat)
    sleep 1.5
    kill -INT "$rec" "$td"
    wait "$rec" || true
    wait "$td" || true
    local hz
    hz=$(getconf CLK_TCK)
    python3 - "$label" "$out" "$hz" "$c0" "$c1" "$t0" "$t1" "$r0" "$r1" "$SECS" <<'PY'
import json, re, sys, glob
label, out, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
c0, c1, t0, t1, r0, r1 = map(int, sys.argv[4:10])
secs = float(sys.argv[10])
m = json.load(open(out + "/bundle/manifest.json"))
n = m["capture"]["native"]
log = open(out + "/tcpdump.log").read()
def num(what):
    r = re.findall(r"(\d+) packets? " + what, log)
    return int(r[-1]) if r else -1
sent = open(out + "/iperf3.txt").read().strip().splitlines()
print(f"{label}: {secs:.0f} s of load")
print(f"  recorder capture thread: {100 * (c1 - c0) / hz / secs:5.1f} % of a core, "
      f"{n['packets_written']} packets written, {n['kernel_drops']} dropped by kernel "
      f"(recorder process in all: {100 * (r1 - r0) / hz / secs:.1f} %)")
print(f"  tcpdump:                 {100 * (t1 - t0) / hz / secs:5.1f} % of a core, "
      f"{num('captured')} packets captured, {num('dropped by kernel')} dropped by kernel")
print("  iperf3: " + " | ".join(l.strip() for l in sent if "sender" in l or "receiver" in l))
PY
}

echo "bench-capture: kernel $(uname -r), $(nproc) CPU(s), load average $(cut -d" " -f1-3 /proc/loadavg); recorder $("$SNAP" --version)"
run_load "bulk TCP ~1 Gbit/s" -b 1G -l 128K
run_load "small UDP ~200k packets/s" -u -l 64 -b 102M
