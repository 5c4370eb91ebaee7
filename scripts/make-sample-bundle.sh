#!/usr/bin/env bash
# Regenerates testdata/sample-bundle/ and testdata/sample-bundle.truth.json:
# one --small run of the end-to-end scenario, recorded by procflow-snap.
#
# The scenario runs in a pid namespace of its own (unshare --pid
# --mount-proc) and its driver in an empty network namespace (--net), so the
# recorder sees only the scenario's processes and sockets: the bundle stays
# small and holds nothing about the machine that made it.
#
# Arguments are passed to the scenario (e.g. --prefix P for the namespace
# and interface names). Needs root, iproute2, tcpdump, util-linux unshare and
# a Rust toolchain.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
[ "$(id -u)" = 0 ] || { echo "make-sample-bundle: needs root" >&2; exit 2; }

(cd "$root" && cargo build --release --quiet -p procflow -p procflow-snap)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"

work="$(mktemp -d /tmp/procflow-sample.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# The recorder and the scenario are copied to the work directory so the
# recorded executables and command lines name no checkout or build directory.
cp "$target/release/procflow-snap" "$work/procflow-snap"
cp "$here/e2e-scenario.py" "$work/e2e-scenario.py"
# --recorder-nice 0: the recorder's own nice 19 starves it on a busy build
# machine (docs/e2e.md); the sample is about attribution, not priority.
unshare --pid --fork --mount-proc --net \
    python3 "$work/e2e-scenario.py" --small --out "$work/run" --snap "$work/procflow-snap" \
    --recorder-nice 0 "$@"

rm -rf "$root/testdata/sample-bundle"
cp -r "$work/run/bundle" "$root/testdata/sample-bundle"
python3 - "$work/run/truth.json" "$root/testdata/sample-bundle.truth.json" <<'PY'
import json, sys
truth = json.load(open(sys.argv[1]))
truth["bundle"] = "sample-bundle"
with open(sys.argv[2], "w") as f:
    json.dump(truth, f, indent=2)
    f.write("\n")
PY
# The committed copy must pass the same check as a live run.
"$target/release/procflow" analyze "$root/testdata/sample-bundle" --out "$work/report" >/dev/null
du -sh "$root/testdata/sample-bundle"
echo "make-sample-bundle: wrote testdata/sample-bundle and testdata/sample-bundle.truth.json"
