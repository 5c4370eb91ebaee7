#!/usr/bin/env bash
# Runs the end-to-end scenario with nethogs beside procflow-snap in the suspect
# namespace and prints, per role, the share of that role's bytes each tool
# gave to the right pid.
#
#   scripts/compare-nethogs.sh [--small] [--keep] [WORKDIR]
#
# Needs root, iproute2, tcpdump, nethogs and a Rust toolchain (builds the
# release binaries first). See docs/e2e.md for how the shares are computed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
small=()
keep=0
work=""
while [ $# -gt 0 ]; do
    case "$1" in
        --small) small=(--small) ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
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

(cd "$root" && cargo build --release --quiet -p procflow -p procflow-snap)
target="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/release"

# nethogs: trace mode (-t), UDP too (-C), one refresh a second (-d 1),
# cumulative bytes (-v 2 = "total B"); line-buffered so nothing is lost on
# SIGINT.
python3 "$here/e2e-scenario.py" --out "$work/scenario" --snap "$bin/procflow-snap" "${small[@]}" \
    --recorder-nice 0 \
    --monitor "stdbuf -oL nethogs -t -C -v 2 -d 1 {iface}"
"$bin/procflow" analyze "$work/scenario/bundle" --out "$work/report" >/dev/null

python3 - "$work/scenario/truth.json" "$work/report/connections.csv" "$work/scenario/monitor.out" <<'EOF'
import csv, json, sys
from datetime import datetime, timezone

truth_path, conns_path, nethogs_path = sys.argv[1:4]
truth = json.load(open(truth_path))
SLACK = 500_000_000

def ns(text):
    """RFC 3339 UTC with up to nanoseconds (or plain ns) -> ns since the epoch."""
    if text.isdigit():
        return int(text)
    base, _, frac = text.rstrip("Z").partition(".")
    secs = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9])

rows = list(csv.DictReader(open(conns_path)))

def matches(row, p):
    local_ip = truth["suspect"]["ipv6" if p["family"] == "ipv6" else "ipv4"]
    return (row["proto"] == p["proto"] and row["family"] == p["family"]
            and row["local_ip"] == local_ip and row["local_port"].isdigit()
            and int(row["local_port"]) in p["local_ports"]
            and ns(row["first_seen"]) <= p["end_ns"] + SLACK
            and ns(row["last_seen"]) >= p["start_ns"] - SLACK)

# nethogs trace lines: PROGRAM/PID/UID<TAB>SENT<TAB>RECEIVED, cumulative with
# -v 2; a process' total is the largest value it reached.
nethogs = {}
for line in open(nethogs_path):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 3:
        continue
    name, _, rest = parts[0].rpartition("/")
    name, _, pid = name.rpartition("/")
    try:
        pid, total = int(pid), float(parts[1]) + float(parts[2])
    except ValueError:
        continue
    if pid:
        nethogs[pid] = max(nethogs.get(pid, 0.0), total)

if not nethogs:
    sys.exit("compare-nethogs: no per-process line in %s; did nethogs run?" % nethogs_path)

roles = {}
for p in truth["processes"]:
    mine = [r for r in rows if matches(r, p)]
    frame = sum(int(r["bytes_in"]) + int(r["bytes_out"]) for r in mine)
    ours = sum(int(r["bytes_in"]) + int(r["bytes_out"]) for r in mine if r["pid"] == str(p["pid"]))
    # nethogs counts per pid, not per flow: what it gave the pid counts as
    # right up to the pid's real bytes (an upper bound of its accuracy).
    theirs = min(nethogs.get(p["pid"], 0.0), frame)
    r = roles.setdefault(p["role"], [0, 0, 0, 0.0])
    r[0] += 1; r[1] += frame; r[2] += ours; r[3] += theirs

pct = lambda a, b: 100.0 * a / b if b else 0.0
print("%-16s %5s %14s %11s %11s" % ("role", "procs", "frame bytes", "procflow %", "nethogs %"))
tot = [0, 0, 0, 0.0]
for role, (n, frame, ours, theirs) in roles.items():
    print("%-16s %5d %14d %10.2f%% %10.2f%%" % (role, n, frame, pct(ours, frame), pct(theirs, frame)))
    tot = [tot[0] + n, tot[1] + frame, tot[2] + ours, tot[3] + theirs]
print("%-16s %5d %14d %10.2f%% %10.2f%%" % ("all", tot[0], tot[1], pct(tot[2], tot[1]), pct(tot[3], tot[1])))
EOF
