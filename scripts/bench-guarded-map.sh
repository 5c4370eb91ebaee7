#!/usr/bin/env bash
# Replay speed of two `procflow` binaries side by side, with tcpdump's
# read pass as the peer: for changes to how capture files are read (the
# SIGBUS-guarded map of src/capture/guard.rs was measured with it).
#
# The capture is the compatibility sample bundle's, its records repeated 1000 times with
# timestamps shifted (about 1 GB, 1.4 M packets), written to bench-work/.
# Needs python3, hyperfine and tcpdump.
#
# Usage: scripts/bench-guarded-map.sh BEFORE_BIN AFTER_BIN [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 RUNS=${3:-7}
WORK=bench-work
CAP=$WORK/repeated-sample.pcap
mkdir -p "$WORK"
if [ ! -s "$CAP" ]; then
    python3 - "$CAP" <<'PY'
import struct, sys
src = open('testdata/compat/sample-bundle-v1-poll/capture-20261128T165616Z.pcap', 'rb').read()
hdr, body = src[:24], src[24:]
recs, i = [], 0
while i + 16 <= len(body):
    ts, frac, cap, orig = struct.unpack('<IIII', body[i:i + 16])
    recs.append((ts, frac, body[i + 16:i + 16 + cap], orig))
    i += 16 + cap
with open(sys.argv[1], 'wb') as f:
    f.write(hdr)
    for r in range(1000):
        f.write(b''.join(struct.pack('<IIII', ts + r * 20, frac, len(d), orig) + d
                         for ts, frac, d, orig in recs))
PY
fi
cat "$CAP" >/dev/null
hyperfine -N --warmup 1 --runs "$RUNS" \
    -n before "$BEFORE flows $CAP" \
    -n after "$AFTER flows $CAP" \
    -n tcpdump "tcpdump -r $CAP -w /dev/null"
