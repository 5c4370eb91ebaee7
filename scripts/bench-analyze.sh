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
# The binaries are in $CARGO_TARGET_DIR/release (default target/); SNAP
# chooses another recorder (e.g. an older release's, for a bundle every
# version can read whole). The namespaces and veth ends are named after
# PREFIX (default `pf`), so two runs with different PREFIXes do not collide.
# RECORD_ONLY=1 records the bundle (if absent) and stops.
#
# Usage: [PREFIX=pf] [SNAP=path] [RECORD_ONLY=1] scripts/bench-analyze.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
TARGET=${CARGO_TARGET_DIR:-target}
PREFIX=${PREFIX:-pf}
WORK=bench-work
BUNDLE=$WORK/analyze-bundle
mkdir -p "$WORK"

for tool in ip ethtool tcpdump iperf3 python3 hyperfine; do
    command -v "$tool" >/dev/null || { echo "bench-analyze: $tool is required" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench-analyze: /usr/bin/time is required (apt-get install -y time)" >&2; exit 2; }

# A given SNAP needs no build for RECORD_ONLY.
if [ -z "${SNAP:-}" ] || [ "${RECORD_ONLY:-0}" != 1 ]; then
    cargo build --release --quiet --workspace
fi
BIN=$TARGET/release/procflow
SNAP=${SNAP:-$TARGET/release/procflow-snap}

NS1="${PREFIX}bana-a-$$" NS2="${PREFIX}bana-b-$$" VA="${PREFIX}aa$$" VB="${PREFIX}ab$$"
[ ${#VA} -le 15 ] || { echo "bench-analyze: PREFIX too long for a veth name ($VA)" >&2; exit 2; }
PIDS=()
. scripts/bench-traffic.sh
cleanup() { bench_cleanup; }

record() {
    [ "$(id -u)" = 0 ] || { echo "bench-analyze: recording needs root (network namespaces)" >&2; exit 2; }
    local a=10.214.0.1 b=10.214.0.2
    trap cleanup EXIT INT TERM
    rm -rf "$BUNDLE.tmp"
    bench_netns_up "$a" "$b"
    ip netns exec "$NS1" "$SNAP" record --out "$BUNDLE.tmp" --iface "$VA" >"$WORK/analyze-record.log" 2>&1 &
    local rec=$!
    PIDS+=("$rec")
    for _ in $(seq 50); do
        grep -q "capture on " "$WORK/analyze-record.log" 2>/dev/null && break
        grep -q "listening on" "$BUNDLE.tmp/tcpdump.log" 2>/dev/null && break
        sleep 0.2
    done
    bench_servers "$b"
    bench_traffic "$b" 400M 1G
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
[ "${RECORD_ONLY:-0}" = 1 ] && exit 0
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
