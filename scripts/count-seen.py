#!/usr/bin/env python3
"""Counts how many of the pids in PIDFILE a procflow-snap bundle saw holding
a socket (a `PID START NETNS INODES` fd line with at least one inode whose
row is in a tcp table of the same snapshot or an earlier one).

usage: count-seen.py BUNDLE_DIR PIDFILE
"""
import os, re, sys, tarfile

bundle, pidfile = sys.argv[1], sys.argv[2]
want = {int(l) for l in open(pidfile) if l.strip()}
held = {}      # pid -> set of inodes ever held
seen_inodes = set()
for name in sorted(os.listdir(bundle)):
    if not re.fullmatch(r"snapshots-\d{6}\.tar", name):
        continue
    with tarfile.open(os.path.join(bundle, name)) as t:
        for m in t:
            data = t.extractfile(m).read().decode("utf-8", "replace")
            if re.search(r"/net/\d+/tcp6?(\.delta)?$", m.name):
                for line in data.splitlines():
                    line = line.lstrip("+")
                    f = line.split()
                    if len(f) > 9 and f[0].endswith(":"):
                        seen_inodes.add(int(f[9]))
            elif m.name.endswith("/fds"):
                for line in data.splitlines():
                    if line[:1] in "-!" or not line:
                        continue
                    f = line.split(" ")
                    if len(f) == 4 and f[3]:
                        held.setdefault(int(f[0]), set()).update(int(i) for i in f[3].split(","))
seen = sum(1 for p in want if held.get(p, set()) & seen_inodes)
print(f"{seen} {len(want)}")
