#!/usr/bin/env bash
# Runs the end-to-end scenario with nethogs beside procflow-snap in the suspect
# namespace and prints, per role, the share of that role's bytes each tool
# gave to the right pid (scripts/e2e-accuracy.py).
#
#   scripts/compare-nethogs.sh [--small] [--keep] [--poll] [--prefix P] [WORKDIR]
#
# --poll records with the recorder's periodic reads alone (--sources poll).
# Needs root, iproute2, tcpdump, nethogs and a Rust toolchain (builds the
# release binaries first, unless PROCFLOW_BIN_DIR names a directory holding
# procflow and procflow-snap). See docs/e2e.md for how the shares are computed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
small=()
keep=0
work=""
rec=()
prefix=pf
while [ $# -gt 0 ]; do
    case "$1" in
        --small) small=(--small) ;;
        --keep) keep=1 ;;
        --poll) rec=(--recorder-arg=--sources --recorder-arg=poll) ;;
        --prefix) shift; prefix="$1" ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "compare-nethogs: unknown option $1" >&2; exit 2 ;;
        *) work="$1" ;;
    esac
    shift
done

for tool in nethogs tcpdump ip python3 cargo; do
    command -v "$tool" >/dev/null || { echo "compare-nethogs: needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "compare-nethogs: needs root (network namespaces)" >&2; exit 2; }

if [ -z "$work" ]; then
    work="$(mktemp -d /tmp/procflow-vs-nethogs.XXXXXX)"
    [ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
fi

if [ -n "${PROCFLOW_BIN_DIR:-}" ]; then
    bin="$PROCFLOW_BIN_DIR"
else
    (cd "$root" && cargo build --release --quiet -p procflow -p procflow-snap)
    target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target/release"
fi

# nethogs: trace mode (-t), UDP too (-C), one refresh a second (-d 1),
# cumulative bytes (-v 2 = "total B"); line-buffered so nothing is lost on
# SIGINT.
python3 "$here/e2e-scenario.py" --out "$work/scenario" --snap "$bin/procflow-snap" "${small[@]}" \
    --recorder-nice 0 --prefix "$prefix" "${rec[@]}" \
    --monitor "stdbuf -oL nethogs -t -C -v 2 -d 1 {iface}"
# Exit status 3 is a result with evidence warnings (capture drops...),
# printed on stderr: the comparison still stands.
rc=0
"$bin/procflow" analyze "$work/scenario/bundle" --out "$work/report" --quiet >/dev/null || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 3 ] || exit "$rc"

python3 "$here/e2e-accuracy.py" "$work/scenario/truth.json" "$work/report/connections.csv" \
    "$work/scenario/monitor.out"
