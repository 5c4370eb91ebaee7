#!/usr/bin/env python3
"""Load the reports of several `procflow analyze` runs (one bundle per host)
into DuckDB with proper types, and print the top processes across hosts.

Usage: scripts/fleet-duckdb.py [--db FILE] [--top N] REPORT_DIR...

Tables (recipe and columns: docs/fleet.md):
  hosts        one row per report: report (directory name), hostname,
               boot_id, recorder status, capture start/end
  connections  every connections.csv row, plus `report`
  processes    every processes.csv row, plus `report`
Timestamps are TIMESTAMP_NS (UTC, nanoseconds kept), ports and pids
integers, byte and packet counters BIGINT.
"""
import argparse
import json
import os
import sys

try:
    import duckdb
except ImportError:
    sys.exit("fleet-duckdb: the duckdb Python package is missing (pip install duckdb)")

TYPES = {
    "first_seen": "TIMESTAMP_NS", "last_seen": "TIMESTAMP_NS", "process_start": "TIMESTAMP_NS",
    "local_port": "INTEGER", "remote_port": "INTEGER", "pid": "INTEGER", "ppid": "INTEGER",
    "uid": "BIGINT", "socket_uid": "BIGINT", "netns": "UBIGINT", "inode": "UBIGINT",
    "packets_in": "BIGINT", "packets_out": "BIGINT", "bytes_in": "BIGINT", "bytes_out": "BIGINT",
    "ip_bytes_in": "BIGINT", "ip_bytes_out": "BIGINT", "connections": "BIGINT",
    "process_start_ticks": "UBIGINT", "time_gap_ms": "BIGINT", "duration_ms": "BIGINT",
    "icmp_type": "INTEGER", "icmp_code": "INTEGER", "flow_id": "UBIGINT", "parent_flow_id": "UBIGINT",
}
# Every other column is VARCHAR: no type detection, so a comm or a command
# line never becomes a number.

TOP = """
SELECT h.hostname, p.report, p.pid, p.process_start, p.comm, p.exe,
       p.bytes_out, p.bytes_in, p.bytes_out + p.bytes_in AS bytes, p.connections,
       p.first_seen, p.last_seen
FROM processes p JOIN hosts h USING (report)
WHERE p.pid IS NOT NULL
ORDER BY bytes DESC, h.hostname, p.report, p.pid, p.process_start
LIMIT ?
"""


def csv_source(paths, names, kind):
    """One SELECT per report (each file typed from its own header, so reports
    of different procflow versions load together), joined by column name."""
    parts = []
    for path, name in zip(paths, names):
        f = os.path.join(path, f"{kind}.csv")
        with open(f, encoding="utf-8") as h:
            header = h.readline().strip().split(",")
        spec = "{" + ", ".join(f"'{c}': '{TYPES.get(c, 'VARCHAR')}'" for c in header) + "}"
        quoted = f.replace("'", "''")
        rname = name.replace("'", "''")
        parts.append(f"SELECT '{rname}' AS report, * FROM read_csv('{quoted}', header = true, "
                     f"auto_detect = false, quote = '\"', escape = '\"', delim = ',', columns = {spec})")
    return " UNION ALL BY NAME ".join(parts)


def load(con, paths):
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    if len(set(names)) != len(names):
        sys.exit("fleet-duckdb: report directories must have distinct names (they name the host rows)")
    con.execute("CREATE TABLE hosts (report VARCHAR PRIMARY KEY, hostname VARCHAR, boot_id VARCHAR, "
                "recorder_status VARCHAR, capture_start TIMESTAMP_NS, capture_end TIMESTAMP_NS)")
    for p, name in zip(paths, names):
        with open(os.path.join(p, "summary.json"), encoding="utf-8") as f:
            s = json.load(f)
        cap = (s.get("time_ranges") or {}).get("capture") or {}
        con.execute("INSERT INTO hosts VALUES (?, ?, ?, ?, make_timestamp_ns(?), make_timestamp_ns(?))",
                    [name, s["host"]["hostname"], s["host"]["boot_id"], s["recording"]["status"],
                     cap.get("start_ns"), cap.get("end_ns")])
    con.execute("CREATE TABLE connections AS " + csv_source(paths, names, "connections"))
    con.execute("CREATE TABLE processes AS " + csv_source(paths, names, "processes"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=":memory:", help="DuckDB file to create (default: in memory)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("reports", nargs="+", metavar="REPORT_DIR")
    a = ap.parse_args()
    con = duckdb.connect(a.db)
    load(con, a.reports)
    rows = con.execute(TOP, [a.top]).fetchall()
    print("hostname\treport\tpid\tprocess_start\tcomm\texe\tbytes_out\tbytes_in\tbytes\tflows\tfirst_seen\tlast_seen")
    for r in rows:
        # Bundle text is hostile: control characters shown escaped.
        print("\t".join(str(v).encode("unicode_escape").decode("ascii") if isinstance(v, str) else str(v)
                        for v in r))


if __name__ == "__main__":
    main()
