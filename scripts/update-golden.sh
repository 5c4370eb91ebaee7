#!/usr/bin/env bash
# Regenerate testdata/golden/: the outputs of `procflow flows` on every
# capture of testdata/pcaps/ and of `procflow analyze` on the sample bundle.
# tests/golden.rs compares the current binary against these files, so a
# change of any output byte is a deliberate, reviewed change of this folder.
# Run from anywhere; paths inside the outputs are relative to the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin procflow
bin="${CARGO_TARGET_DIR:-target}/release/procflow"
out=testdata/golden
rm -rf "$out"
mkdir -p "$out/flows" "$out/analyze"
# Every run's exit status, checked by tests/golden.rs like the files.
codes="$out/exit-codes.tsv"
printf 'run\texit\n' > "$codes"
for f in testdata/pcaps/*.pcap testdata/pcaps/*.pcapng; do
    name=$(basename "$f")
    # Exit 1 (file unreadable) is an expected outcome for some fixtures.
    rc=0
    "$bin" flows "$f" --threads 2 --out "$out/flows/$name.csv" --json "$out/flows/$name.json" 2>/dev/null || rc=$?
    printf '%s\t%s\n' "$name" "$rc" >> "$codes"
done
tmp=$(mktemp -d)
rc=0
"$bin" analyze testdata/sample-bundle --out "$tmp/r" --threads 2 >/dev/null 2>&1 || rc=$?
printf 'analyze:sample-bundle\t%s\n' "$rc" >> "$codes"
cp "$tmp"/r/* "$out/analyze/"
rm -rf "$tmp"
echo "golden outputs written to $out"
