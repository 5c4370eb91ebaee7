#!/usr/bin/env bash
# Benchmark `procflow correlate` on the shared UAC + auditd dataset
# (../shared/testdata/foreign/uac-auditd-1: 5.5 MB capture, UAC archive,
# audit log) against `procflow analyze` of a bundle with the same capture
# size: the sample bundle (testdata/sample-bundle) plus, with --pcap, the
# first packets of the dataset's capture, cut at a record boundary so that
# the two captures together hold as many bytes as the dataset's. Runs are
# alternated and the medians of wall-clock time and peak RSS compared.
#
# Usage: scripts/bench-correlate.sh [RUNS]   (default 11; needs python3 and
# GNU time at /usr/bin/time)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-11}
D=${DATASET:-../shared/testdata/foreign/uac-auditd-1}
BIN=${CARGO_TARGET_DIR:-target}/release/procflow
[ -x /usr/bin/time ] || { echo "bench-correlate: /usr/bin/time is required" >&2; exit 2; }
cargo build --release --quiet --bin procflow
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BUNDLE_CAP=$(stat -c %s testdata/sample-bundle/capture-*.pcap)
WANT=$(( $(stat -c %s "$D/capture.pcap") - BUNDLE_CAP ))
python3 - "$D/capture.pcap" "$WORK/slice.pcap" "$WANT" <<'PY'
import struct, sys
src, dst, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = open(src, "rb").read()
end = 24
while end + 16 <= len(b):
    n = struct.unpack_from("<I", b, end + 8)[0]
    if end + 16 + n > want:
        break
    end += 16 + n
open(dst, "wb").write(b[:end])
PY
echo "dataset capture: $(stat -c %s "$D/capture.pcap") B; bundle capture + slice: $((BUNDLE_CAP + $(stat -c %s "$WORK/slice.pcap"))) B"
for i in $(seq "$RUNS"); do
    /usr/bin/time -f "correlate %e %M" -a -o "$WORK/times" "$BIN" correlate --capture "$D/capture.pcap" \
        --evidence "$D/uac" --evidence "$D/audit.log" --out "$WORK/c" --force --quiet 2>/dev/null || true
    /usr/bin/time -f "analyze %e %M" -a -o "$WORK/times" "$BIN" analyze testdata/sample-bundle \
        --pcap "$WORK/slice.pcap" --out "$WORK/a" --force --quiet 2>/dev/null || true
done
python3 - "$WORK/times" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) == 3 and p[0] in ("correlate", "analyze"):
        t.setdefault(p[0], []).append((float(p[1]), int(p[2])))
for k, v in t.items():
    print(f"{k:9s} median {statistics.median(x[0] for x in v):.3f} s, peak RSS median {statistics.median(x[1] for x in v)} KB ({len(v)} runs)")
c = statistics.median(x[0] for x in t["correlate"]); a = statistics.median(x[0] for x in t["analyze"])
print(f"correlate / analyze: {c / a:.2f}x")
PY
