#!/usr/bin/env python3
"""A namespace lab for `procflow correlate` (tests/correlate_live.rs).

Two network namespaces joined by a veth pair: the "host" runs real
programs (python3 -m http.server, TCP clients over IPv4 and IPv6, a burst of
short connections, a connected UDP client) under a login uid of their own;
the "peer" runs the services they talk to, a curl client, and tcpdump (the
sensor's view). Debian's auditd records connect/accept/bind of that login
uid only; halfway through, a UAC-like collection of the host is taken
(`cat /proc/net/*`, `ss -anp`, `ls -la /proc/PID/fd`, comm/stat/status/
cmdline, `ps`, `ip addr`, a `uac.log`) and packed as UAC packs it.

Writes into --out: capture.pcap, uac.tar.gz, audit.log (the lab's events),
truth.json (pid of every host socket, and the tuples alive at the
collection). Root only. Everything is removed at the end: namespaces,
processes, the audit rule, and auditd itself when this script started it.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

ME = os.getpid()
TAG = f"pcl{ME % 100000}"
HNS, PNS = f"{TAG}h", f"{TAG}p"
HIF, PIF = f"{TAG}a", f"{TAG}b"
HOST4, PEER4 = "198.19.17.1", "198.19.17.2"
HOST6, PEER6 = "2001:db8:17::1", "2001:db8:17::2"
AUID = 40000 + ME % 20000
KEY = f"procflow-lab-{ME}"
RULE = ["-F", "arch=b64", "-S", "connect", "-S", "accept", "-S", "accept4",
        "-S", "bind", "-F", f"auid={AUID}", "-k", KEY]
AUDIT_LOG = "/var/log/audit/audit.log"


def run(*a, check=True, **kw):
    return subprocess.run(list(a), check=check, capture_output=True, text=True, **kw)


def in_ns(ns, *a):
    return ["ip", "netns", "exec", ns, *a]


def as_lab(ns, *a):
    """A command in `ns` under the lab's login uid (audited)."""
    return in_ns(ns, "sh", "-c", f'echo {AUID} > /proc/self/loginuid && exec "$@"', "sh", *a)


SINK = r"""
import socket, threading
def serve(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 9001)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=lambda c=c: [c.sendall(b"k" * 64) for _ in iter(lambda: c.recv(65536), b"")], daemon=True).start()
threading.Thread(target=serve, args=(socket.AF_INET6, "::"), daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9003))
while True:
    d, a = u.recvfrom(65536); u.sendto(d, a)
"""

LONG = r"""
import socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.connect((sys.argv[1], 9001))
print(s.getsockname()[1], flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    s.sendall(b"x" * 3000); s.recv(65536); time.sleep(0.2)
s.close()
"""

PULSE = r"""
import socket, sys, time
for i in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 9001))
    print(s.getsockname()[1], flush=True)
    s.sendall(b"p" * 6000); s.recv(65536); s.close()
    time.sleep(0.5)
"""

UDPQ = r"""
import socket, sys, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect((sys.argv[1], 9003))
print(u.getsockname()[1], flush=True)
end = time.time() + float(sys.argv[2])
while time.time() < end:
    u.send(b"q" * 200); u.recv(65536); time.sleep(0.5)
"""


def uac_log_line(t, msg, level="CMD"):
    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(t)) + f" {level} {msg}\n"


def collect(out, lab_pids):
    """A UAC-like live-response collection of the host namespace."""
    root = os.path.join(out, "uac")
    net = os.path.join(root, "live_response", "network")
    proc = os.path.join(root, "live_response", "process")
    os.makedirs(net)
    os.makedirs(os.path.join(proc, "proc"))
    log = [uac_log_line(time.time(), "Unix-like Artifacts Collector (lab)", "INF"),
           uac_log_line(time.time(), "System architecture: x86_64", "INF")]

    def save(path, cmd, log_cmd):
        log.append(uac_log_line(time.time(), log_cmd))
        r = subprocess.run(cmd, capture_output=True)
        with open(path, "wb") as f:
            f.write(r.stdout)

    for t in ["tcp", "tcp6", "udp", "udp6"]:
        save(os.path.join(net, f"proc_net_{t}.txt"), in_ns(HNS, "cat", f"/proc/net/{t}"), f"cat /proc/net/{t}")
    save(os.path.join(net, "ss_-anp.txt"), in_ns(HNS, "ss", "-anp"), "ss -anp")
    save(os.path.join(net, "ip_addr_show.txt"), in_ns(HNS, "ip", "addr", "show"), "ip addr show")
    save(os.path.join(proc, "ps_-axo_pid_user_lstart_args.txt"), ["ps", "-axo", "pid,user,lstart,args"], "ps -axo pid,user,lstart,args")
    host_ns = os.readlink(f"/proc/{lab_pids[0]}/ns/net")
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{d}/ns/net") == host_ns:
                    pids.append(d)
            except OSError:
                pass
    for pid in sorted(pids, key=int):
        pd = os.path.join(proc, "proc", pid)
        os.makedirs(pd, exist_ok=True)
        save(os.path.join(pd, "fd.txt"), ["ls", "-la", f"/proc/{pid}/fd"], f'ls -la /proc/"{pid}"/fd')
    for f in ["comm", "stat", "status", "cmdline"]:
        for pid in sorted(pids, key=int):
            pd = os.path.join(proc, "proc", pid)
            save(os.path.join(pd, f"{f}.txt"), ["cat", f"/proc/{pid}/{f}"], f"cat /proc/{pid}/{f}")
    with open(os.path.join(root, "uac.log"), "w") as f:
        f.writelines(log)
    with tarfile.open(os.path.join(out, "uac.tar.gz"), "w:gz") as tar:
        tar.add(root, arcname=".")
    # Tuples with an owner at the collection instant (ss users:).
    alive = []
    with open(os.path.join(net, "ss_-anp.txt")) as f:
        for line in f:
            p = line.split()
            if len(p) >= 7 and p[0] in ("tcp", "udp") and "pid=" in line and p[1] != "LISTEN":
                alive.append([p[0], p[4], p[5]])
    return alive


def audit_slice(offset):
    """The lab's events from the audit log: every record of a serial whose
    SYSCALL carries the lab's key."""
    with open(AUDIT_LOG, "rb") as f:
        f.seek(offset)
        lines = f.read().decode("utf-8", "replace").splitlines()
    serials = set()
    for l in lines:
        if l.startswith("type=SYSCALL") and f'key="{KEY}"' in l:
            serials.add(l.split("msg=audit(", 1)[1].split(")", 1)[0])
    return [l for l in lines if "msg=audit(" in l and l.split("msg=audit(", 1)[1].split(")", 1)[0] in serials]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    procs = []
    started_auditd = False
    was_enabled = None
    rule_added = False
    try:
        run("ip", "netns", "add", HNS)
        run("ip", "netns", "add", PNS)
        run("ip", "link", "add", HIF, "netns", HNS, "type", "veth", "peer", "name", PIF, "netns", PNS)
        for ns, dev, a4, a6 in [(HNS, HIF, HOST4, HOST6), (PNS, PIF, PEER4, PEER6)]:
            run(*in_ns(ns, "ip", "addr", "add", f"{a4}/24", "dev", dev))
            run(*in_ns(ns, "ip", "addr", "add", f"{a6}/64", "dev", dev, "nodad"))
            run(*in_ns(ns, "ip", "link", "set", dev, "up"))
            run(*in_ns(ns, "ip", "link", "set", "lo", "up"))
            run(*in_ns(ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"), check=False)
        # auditd: host-wide; started here only when not running.
        st = run("auditctl", "-s").stdout
        was_enabled = next((l.split()[1] for l in st.splitlines() if l.startswith("enabled")), "0")
        if not any(l.startswith("pid ") and l.split()[1] != "0" for l in st.splitlines()):
            run("auditd")
            started_auditd = True
            for _ in range(100):
                if any(l.startswith("pid ") and l.split()[1] != "0" for l in run("auditctl", "-s").stdout.splitlines()):
                    break
                time.sleep(0.05)
        run("auditctl", "-e", "1")
        offset = os.path.getsize(AUDIT_LOG) if os.path.exists(AUDIT_LOG) else 0
        run("auditctl", "-a", "always,exit", *RULE)
        rule_added = True
        # Peer: services and the sensor.
        procs.append(subprocess.Popen(in_ns(PNS, "python3", "-c", SINK)))
        cap = subprocess.Popen(in_ns(PNS, "tcpdump", "-i", PIF, "-n", "-s", "0", "-U", "-w", os.path.join(out, "capture.pcap")),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        # Host: real programs under the lab's login uid.
        www = os.path.join(out, "www")
        os.makedirs(www)
        with open(os.path.join(www, "file.bin"), "wb") as f:
            f.write(os.urandom(150_000))
        server = subprocess.Popen(as_lab(HNS, "python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", www),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        time.sleep(0.5)
        # name -> (program, peer, seconds); the peer is in the truth too:
        # an IPv4 and an IPv6 client may get the same local port.
        plan = {"long4": (LONG, PEER4, "9"), "long6": (LONG, PEER6, "8"),
                "pulse": (PULSE, PEER4, "14"), "udpq": (UDPQ, PEER4, "8")}
        clients = {name: subprocess.Popen(as_lab(HNS, "python3", "-c", prog, peer, secs), stdout=subprocess.PIPE, text=True)
                   for name, (prog, peer, secs) in plan.items()}
        procs.extend(clients.values())
        downloads = []
        for i in range(5):
            downloads.append(subprocess.run(in_ns(PNS, "curl", "-s", "-o", "/dev/null", "--limit-rate", "100k", f"http://{HOST4}:8080/file.bin"),
                                            capture_output=True).returncode)
            if i == 1:
                t0 = time.time()
                alive = collect(out, [server.pid])
                t1 = time.time()
        truth = {"server": server.pid, "server_port": 8080, "clients": [], "alive": alive,
                 "collection": [t0, t1], "downloads": downloads}
        for name, p in clients.items():
            ports = [int(x) for x in p.stdout.read().split()]
            p.wait(timeout=60)
            for port in ports:
                truth["clients"].append({"name": name, "pid": p.pid, "lport": port, "peer": plan[name][1],
                                         "proto": "udp" if name == "udpq" else "tcp"})
        time.sleep(1.0)
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=10)
        run("auditctl", "-d", "always,exit", *RULE, check=False)
        rule_added = False
        with open(os.path.join(out, "audit.log"), "w") as f:
            f.write("\n".join(audit_slice(offset)) + "\n")
        with open(os.path.join(out, "truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if rule_added:
            run("auditctl", "-d", "always,exit", *RULE, check=False)
        if started_auditd:
            st = run("auditctl", "-s", check=False).stdout
            pid = next((l.split()[1] for l in st.splitlines() if l.startswith("pid ")), "0")
            if pid != "0":
                os.kill(int(pid), signal.SIGTERM)
        if was_enabled == "0":
            run("auditctl", "-e", "0", check=False)
        run("ip", "netns", "del", HNS, check=False)
        run("ip", "netns", "del", PNS, check=False)


if __name__ == "__main__":
    sys.exit(main())
