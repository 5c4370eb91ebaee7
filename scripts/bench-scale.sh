#!/usr/bin/env bash
# analyze at scale: the sample bundle plus a synthetic capture of N
# distinct UDP flows (default 1000000: one datagram each, from the bundle's
# host to N different remote address:port pairs, inside its recording
# time). Prints wall time, peak RSS (/usr/bin/time -v) and the size of
# every report file.
# Usage: [KEEP=DIR] scripts/bench-scale.sh [FLOWS] [extra analyze options...]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
shift || true
cargo build --release --bin procflow >/dev/null 2>&1
bin="${CARGO_TARGET_DIR:-target}/release/procflow"
# KEEP=DIR keeps the capture and the reports there.
if [ -n "${KEEP:-}" ]; then
    tmp=$KEEP
    mkdir -p "$tmp"
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
fi
t0=$(python3 -c 'import json,datetime,sys; m=json.load(open("testdata/sample-bundle/manifest.json")); s=m["started"]; s=s.get("utc", s) if isinstance(s, dict) else s; print(int(datetime.datetime.fromisoformat(s[:19]).replace(tzinfo=datetime.timezone.utc).timestamp()) + 1)')
python3 - "$n" "$tmp/udp.pcap" "$t0" <<'PY'
import struct, sys
n, path, t0 = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) * 10**9
span = 6_000_000_000
eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
src = bytes([10, 203, 0, 1])
with open(path, "wb", buffering=1 << 20) as f:
    f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
    for i in range(n):
        t = t0 + span * i // n
        dst = bytes([198, 18 + (i >> 24) % 2, (i >> 16) & 255, (i >> 8) & 255])
        udp = struct.pack("!HHHH", 30000 + (i & 255), 53 + (i & 255), 8 + 32, 0) + b"x" * 32
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, src, dst)
        pkt = eth + ip + udp
        f.write(struct.pack("<IIII", t // 10**9, t % 10**9, len(pkt), len(pkt)))
        f.write(pkt)
PY
echo "capture: $(stat -c %s "$tmp/udp.pcap") bytes, $n UDP flows"
/usr/bin/time -v "$bin" analyze testdata/sample-bundle --pcap "$tmp/udp.pcap" --out "$tmp/r" --quiet "$@" \
    >/dev/null 2>"$tmp/time.log" || true
grep -E "Elapsed \(wall|Maximum resident" "$tmp/time.log" | sed 's/^\s*/  /'
flows=$(($(wc -l < "$tmp/r/connections.csv") - 1))
echo "flows in connections.csv: $flows"
ls -l "$tmp/r" | awk 'NR>1 {printf "  %-18s %12d bytes\n", $9, $5}'
# How the page responds at that size (headless Chromium through the
# DevTools protocol; needs chromium and Node 20+).
if command -v chromium >/dev/null && command -v node >/dev/null; then
    node --experimental-websocket scripts/report-interactivity.mjs "$tmp/r/report.html" 3
else
    echo "report.html interactivity: SKIPPED (needs chromium and node)"
fi
