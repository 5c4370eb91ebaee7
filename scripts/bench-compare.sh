#!/usr/bin/env bash
# Two `procflow` binaries (say the release before a change and after it) on
# the same inputs in one run, interleaved: every round runs each binary once
# per case, alternating which goes first, so load from other work on the
# machine falls on both alike. Prints, per case, the medians of wall time and
# of CPU time (user + sys of the process, from wait4) and the ratios
# after / before. On a shared machine CPU time is the steadier figure.
#
# Cases: `flows` on bench-work/bench.pcap (recorded by bench-flows.sh),
# `analyze --no-hash` and `analyze` on bench-work/analyze-bundle (recorded by
# bench-analyze.sh); missing inputs are recorded first (root), with PREFIX
# naming the namespaces as in those scripts. CASES chooses a subset
# (default "flows analyze-no-hash analyze").
#
# Usage: [CASES=...] scripts/bench-compare.sh BEFORE_BIN AFTER_BIN [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/bench-compare.sh BEFORE_BIN AFTER_BIN [RUNS]" >&2; exit 2; }
BEFORE=$1 AFTER=$2 RUNS=${3:-15}
CASES=${CASES:-flows analyze-no-hash analyze}
WORK=bench-work
for b in "$BEFORE" "$AFTER"; do
    [ -x "$b" ] || { echo "bench-compare: $b is not an executable" >&2; exit 2; }
done
case " $CASES " in *" flows "*)
    [ -s "$WORK/bench.pcap" ] || RECORD_ONLY=1 scripts/bench-flows.sh ;;
esac
case " $CASES " in *" analyze"*)
    [ -s "$WORK/analyze-bundle/manifest.json" ] || RECORD_ONLY=1 scripts/bench-analyze.sh ;;
esac
python3 - "$BEFORE" "$AFTER" "$RUNS" "$WORK" $CASES <<'PY'
import os, statistics, subprocess, sys, time
before, after, runs, work, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
bundle = f"{work}/analyze-bundle"
caps = sorted(f"{bundle}/{n}" for n in os.listdir(bundle) if n.startswith("capture-")) if any(
    c.startswith("analyze") for c in cases) else []
def argv(case, binary, tag):
    out = f"{work}/compare-{tag}"
    if case == "flows":
        return [binary, "flows", f"{work}/bench.pcap", "--out", "/dev/null"]
    extra = ["--no-hash"] if case == "analyze-no-hash" else []
    return [binary, "analyze", bundle, "--out", out, "--force"] + extra
def run(cmd):
    """Wall seconds and user+sys CPU seconds of one run."""
    t0 = time.perf_counter()
    err = open(f"{work}/compare-stderr.txt", "wb")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):  # 3: an evidence warning, reports written
        sys.exit(f"bench-compare: {' '.join(cmd)} exited {code}:\n"
                 + open(f"{work}/compare-stderr.txt", errors="replace").read()[-2000:])
    return wall, ru.ru_utime + ru.ru_stime
for f in [f"{work}/bench.pcap"] * ("flows" in cases) + caps:
    with open(f, "rb") as fh:  # warm the page cache
        while fh.read(1 << 24):
            pass
bins = {"before": before, "after": after}
res = {(c, t): [] for c in cases for t in bins}
for c in cases:  # one warm-up run each
    for t in bins:
        run(argv(c, bins[t], t))
for i in range(runs):
    order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
    for c in cases:
        for t in order:
            res[(c, t)].append(run(argv(c, bins[t], t)))
print(f"before: {before}\nafter:  {after}\n{runs} interleaved runs each, medians")
print(f"{'case':<17}{'before wall':>12}{'after wall':>12}{'ratio':>8}{'before cpu':>12}{'after cpu':>12}{'ratio':>8}")
for c in cases:
    bw = statistics.median(w for w, _ in res[(c, "before")])
    aw = statistics.median(w for w, _ in res[(c, "after")])
    bc = statistics.median(u for _, u in res[(c, "before")])
    ac = statistics.median(u for _, u in res[(c, "after")])
    print(f"{c:<17}{bw:>11.3f}s{aw:>11.3f}s{aw / bw:>8.3f}{bc:>11.3f}s{ac:>11.3f}s{ac / bc:>8.3f}")
PY
