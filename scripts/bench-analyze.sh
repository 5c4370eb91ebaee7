#!/usr/bin/env bash
# Benchmark `procflow analyze` against `procflow flows` on the same capture:
# the price of the join (snapshot timeline, attribution, reports, SHA-256 of
# every input) on top of replay, and the same without hashing (--no-hash)
# to show the join's own cost.
#
# The bundle is recorded once by procflow-snap, in the first of two network
# namespaces created here (veth pair, offloads off so packets are
# wire-sized), from real traffic: bulk TCP (iperf3), thousands of short TCP
# connections and small UDP datagrams from many sockets (python3). It is
# cached in bench-work/analyze-bundle (gitignored); delete it to record a new
# one. Needs root, iproute2, ethtool, tcpdump, iperf3, python3, hyperfine and
# GNU time (/usr/bin/time).
#
# Usage: scripts/bench-analyze.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
WORK=bench-work
BUNDLE=$WORK/analyze-bundle
mkdir -p "$WORK"

for tool in ip ethtool tcpdump iperf3 python3 hyperfine; do
    command -v "$tool" >/dev/null || { echo "bench-analyze: $tool is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench-analyze: /usr/bin/time is required (apt-get install -y time)" >&2; exit 2; }

cargo build --release --quiet --workspace
BIN=target/release/procflow
SNAP=target/release/procflow-snap

NS1="pfbana-a-$$" NS2="pfbana-b-$$" VA="pfaa$$" VB="pfab$$"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    ip netns del "$NS1" 2>/dev/null || true
    ip netns del "$NS2" 2>/dev/null || true
}

record() {
    [ "$(id -u)" = 0 ] || { echo "bench-analyze: recording needs root (network namespaces)" >&2; exit 2; }
    local a=10.214.0.1 b=10.214.0.2
    trap cleanup EXIT INT TERM
    rm -rf "$BUNDLE.tmp"
    ip netns add "$NS1"
    ip netns add "$NS2"
    ip link add "$VA" type veth peer name "$VB"
    ip link set "$VA" netns "$NS1"
    ip link set "$VB" netns "$NS2"
    ip -n "$NS1" addr add "$a/24" dev "$VA"
    ip -n "$NS2" addr add "$b/24" dev "$VB"
    for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; done
    ip -n "$NS1" link set "$VA" up
    ip -n "$NS2" link set "$VB" up
    ip netns exec "$NS1" ethtool -K "$VA" tso off gso off gro off >/dev/null
    ip netns exec "$NS2" ethtool -K "$VB" tso off gso off gro off >/dev/null

    ip netns exec "$NS1" "$SNAP" record --out "$BUNDLE.tmp" --iface "$VA" >"$WORK/analyze-record.log" 2>&1 &
    local rec=$!
    PIDS+=("$rec")
    for _ in $(seq 50); do
        grep -q "listening on" "$BUNDLE.tmp/tcpdump.log" 2>/dev/null && break
        sleep 0.2
    done
    ip netns exec "$NS2" iperf3 -s -p 5201 >/dev/null 2>&1 &
    PIDS+=("$!")
    ip netns exec "$NS2" python3 - "$b" <<'PY' &
import socket, sys, threading
b = sys.argv[1]
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((b, 7000)); s.listen(512)
    while True:
        c, _ = s.accept()
        try:
            d = c.recv(4096)
            c.sendall(d * 4)
        finally:
            c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((b, 7001))
    while True:
        d, peer = u.recvfrom(2048)
        u.sendto(d[:32], peer)
threading.Thread(target=udp, daemon=True).start()
tcp()
PY
    PIDS+=("$!")
    sleep 1
    ip netns exec "$NS1" iperf3 -c "$b" -p 5201 -n 400M -l 128K -b 1G >/dev/null
    ip netns exec "$NS1" python3 - "$b" <<'PY'
import socket, sys, time
b = sys.argv[1]
for i in range(4000):
    c = socket.create_connection((b, 7000))
    c.sendall(b"GET /%d HTTP/1.0\r\n\r\n" % i)
    while c.recv(65536):
        pass
    c.close()
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2000)]
for s in socks:
    s.setblocking(False)
for rnd in range(40):
    for s in socks:
        s.sendto(b"x" * 64, (b, 7001))
    time.sleep(0.05)
    for s in socks:
        try:
            s.recv(2048)
        except OSError:
            pass
PY
    sleep 2
    kill -INT "$rec"
    wait "$rec" || { cat "$WORK/analyze-record.log" >&2; exit 1; }
    mv "$BUNDLE.tmp" "$BUNDLE"
    cleanup
    trap - EXIT INT TERM
}

if [ ! -s "$BUNDLE/manifest.json" ]; then
    echo "bench-analyze: recording $BUNDLE" >&2
    record
fi
CAPS=$(ls "$BUNDLE"/capture-*)
SIZE=$(cat $CAPS | wc -c)
echo "bundle: $BUNDLE, captures $SIZE bytes, archives $(cat "$BUNDLE"/snapshots-*.tar | wc -c) bytes"
"$BIN" analyze "$BUNDLE" --out "$WORK/analyze-report" --force

cat "$BUNDLE"/* >/dev/null
hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/hyperfine-analyze.json" \
    -n flows "$BIN flows $CAPS --out /dev/null" \
    -n analyze "$BIN analyze $BUNDLE --out $WORK/analyze-report --force" \
    -n analyze-no-hash "$BIN analyze $BUNDLE --out $WORK/analyze-report --force --no-hash" \
    -n sha256sum "sha256sum $BUNDLE/*"

rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident/ {print $2}'; }
RSS_FLOWS=$(rss "$BIN" flows $CAPS --out /dev/null)
RSS_ANALYZE=$(rss "$BIN" analyze "$BUNDLE" --out "$WORK/analyze-report" --force)

python3 - "$WORK/hyperfine-analyze.json" "$RSS_FLOWS" "$RSS_ANALYZE" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
f, a, n, h = r["flows"], r["analyze"], r["analyze-no-hash"], r["sha256sum"]
print(f"flows {f:.3f}s  analyze {a:.3f}s  analyze --no-hash {n:.3f}s  sha256sum of the bundle {h:.3f}s")
print(f"analyze / flows = {a / f:.2f}x; analyze --no-hash / flows = {n / f:.2f}x (the join itself)")
print(f"peak RSS: flows {sys.argv[2]} kB, analyze {sys.argv[3]} kB")
PY
