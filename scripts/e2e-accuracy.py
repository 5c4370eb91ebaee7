#!/usr/bin/env python3
"""Per-role accuracy of a procflow report against an e2e scenario's truth.json,
and of nethogs' trace output beside it when given.

  e2e-accuracy.py TRUTH_JSON CONNECTIONS_CSV [NETHOGS_TRACE]

For each known process, its flows are the rows with its protocol, family,
local address and one of its local ports whose time span overlaps its
lifetime widened by 0.5 s (docs/e2e.md). A row's bytes are correct when
its pid is the process' pid. nethogs counts per pid, not per flow: what it
gave a pid counts as correct up to that pid's frame bytes (an upper bound
of its accuracy). Prints one line per role, then the worst single process.
Python standard library only.
"""
import csv
import json
import sys
from datetime import datetime, timezone

SLACK = 500_000_000


def ns(text):
    """RFC 3339 UTC with up to nanoseconds (or plain ns) -> ns since the epoch."""
    if text.isdigit():
        return int(text)
    base, _, frac = text.rstrip("Z").partition(".")
    secs = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9])


def nethogs_totals(path):
    """nethogs -t -v 2 lines PROGRAM/PID/UID<TAB>SENT<TAB>RECEIVED, cumulative:
    a pid's total is the largest value it reached."""
    totals = {}
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3:
            continue
        name, _, _uid = parts[0].rpartition("/")
        _, _, pid = name.rpartition("/")
        try:
            pid, total = int(pid), float(parts[1]) + float(parts[2])
        except ValueError:
            continue
        if pid:
            totals[pid] = max(totals.get(pid, 0.0), total)
    return totals


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__.strip().split("\n\n")[1])
    truth = json.load(open(argv[1]))
    rows = list(csv.DictReader(open(argv[2])))
    theirs_by_pid = nethogs_totals(argv[3]) if len(argv) == 4 else None

    def matches(row, p):
        local_ip = truth["suspect"]["ipv6" if p["family"] == "ipv6" else "ipv4"]
        return (row["proto"] == p["proto"] and row["family"] == p["family"]
                and row["local_ip"] == local_ip and row["local_port"].isdigit()
                and int(row["local_port"]) in p["local_ports"]
                and ns(row["first_seen"]) <= p["end_ns"] + SLACK
                and ns(row["last_seen"]) >= p["start_ns"] - SLACK)

    roles = {}
    worst = None
    for p in truth["processes"]:
        mine = [r for r in rows if matches(r, p)]
        frame = sum(int(r["bytes_in"]) + int(r["bytes_out"]) for r in mine)
        ours = sum(int(r["bytes_in"]) + int(r["bytes_out"]) for r in mine if r["pid"] == str(p["pid"]))
        wrong = sum(int(r["bytes_in"]) + int(r["bytes_out"]) for r in mine
                    if r["pid"] not in ("", str(p["pid"])))
        theirs = min(theirs_by_pid.get(p["pid"], 0.0), frame) if theirs_by_pid is not None else 0.0
        r = roles.setdefault(p["role"], [0, 0, 0, 0.0, 0, {}])
        r[0] += 1
        r[1] += frame
        r[2] += ours
        r[3] += theirs
        r[4] += wrong
        for row in mine:
            r[5][row["method"]] = r[5].get(row["method"], 0) + 1
        share = ours / frame if frame else 0.0
        if worst is None or share < worst[0]:
            worst = (share, p["name"], p["pid"])

    def pct(a, b):
        return 100.0 * a / b if b else 0.0

    head = "%-16s %5s %12s %10s %10s %11s" % ("role", "procs", "frame bytes", "procflow %", "wrong pid", "nethogs %")
    print(head + "  procflow methods")
    tot = [0, 0, 0, 0.0, 0]
    for role, (n, frame, ours, theirs, wrong, methods) in roles.items():
        m = " ".join("%s×%d" % kv for kv in sorted(methods.items()))
        print("%-16s %5d %12d %9.2f%% %10d %10s  %s" % (
            role, n, frame, pct(ours, frame), wrong,
            "%.2f%%" % pct(theirs, frame) if theirs_by_pid is not None else "-", m))
        tot = [tot[0] + n, tot[1] + frame, tot[2] + ours, tot[3] + theirs, tot[4] + wrong]
    print("%-16s %5d %12d %9.2f%% %10d %10s" % (
        "all", tot[0], tot[1], pct(tot[2], tot[1]), tot[4],
        "%.2f%%" % pct(tot[3], tot[1]) if theirs_by_pid is not None else "-"))
    if worst:
        print("worst process: %s (pid %d) %.2f%%" % (worst[1], worst[2], 100.0 * worst[0]))


if __name__ == "__main__":
    main(sys.argv)
