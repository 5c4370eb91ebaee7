#!/usr/bin/env bash
# report.html at scale: analyze the sample bundle plus a synthetic capture
# of N flows (default 100000, one SYN each, inside the bundle's recording
# time), then load report.html in headless Chromium. Prints the file sizes,
# the analyze time, and the page's own render time (performance.now() when
# its script finished) against an empty page loaded the same way.
# Usage: scripts/bench-report-html.sh [FLOWS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
cargo build --release --bin procflow >/dev/null 2>&1
bin="${CARGO_TARGET_DIR:-target}/release/procflow"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$n" "$tmp/synthetic.pcap" <<'PY'
import struct, sys
n, path = int(sys.argv[1]), sys.argv[2]
t0 = 1795884977_000_000_000          # 16:56:17Z, inside the sample recording
span = 6_000_000_000
with open(path, "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
    for i in range(n):
        t = t0 + span * i // n
        src = bytes([10, 203, 0, 1]); dst = bytes([198, 18 + (i >> 16) % 2, (i >> 8) & 255, i & 255])
        tcp = struct.pack("!HHIIBBHHH", 20000 + i % 40000, 443, i, 0, 5 << 4, 0x02, 64240, 0, 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0, 64, 6, 0, src, dst)
        eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
        pkt = eth + ip + tcp
        f.write(struct.pack("<IIII", t // 10**9, t % 10**9, len(pkt), len(pkt)))
        f.write(pkt)
PY
start=$(date +%s.%N)
"$bin" analyze testdata/sample-bundle --pcap "$tmp/synthetic.pcap" --out "$tmp/r" --quiet --no-hash 2>/dev/null || true
end=$(date +%s.%N)
flows=$(($(wc -l < "$tmp/r/connections.csv") - 1))
echo "flows: $flows; analyze (release, --no-hash): $(echo "$end - $start" | bc) s"
ls -l "$tmp/r" | awk 'NR>1 {printf "  %-18s %10d bytes\n", $9, $5}'
render() {
    local page=$1 profile
    profile=$(mktemp -d "$tmp/profile.XXXX")
    local t0 t1
    t0=$(date +%s.%N)
    timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --window-size=1300,1400 --dump-dom "file://$page" \
        > "$tmp/dom.html" 2>/dev/null
    t1=$(date +%s.%N)
    local ms
    ms=$(grep -o 'data-render-ms="[0-9]*"' "$tmp/dom.html" | grep -o '[0-9]*' || echo "-")
    echo "$(echo "$t1 - $t0" | bc) s wall (chromium start to DOM dump), script done at ${ms} ms"
}
echo '<!DOCTYPE html><html><body><script>document.body.setAttribute("data-render-ms", String(Math.round(performance.now())))</script></body></html>' > "$tmp/blank.html"
for i in 1 2 3; do
    echo "report.html ($flows flows), run $i: $(render "$tmp/r/report.html")"
    echo "empty page, run $i:               $(render "$tmp/blank.html")"
done
