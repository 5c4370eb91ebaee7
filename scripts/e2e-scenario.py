#!/usr/bin/env python3
"""End-to-end scenario: known processes make known traffic while procflow-snap records.

Creates two network namespaces joined by a veth pair, runs `procflow-snap
record` on the suspect side, starts client and server programs with distinct
roles (long upload, long download, local server, connected and unconnected
UDP, IPv6, short-lived processes, one local port reused by two processes,
sequential short TCP connections and fresh-socket UDP queries from one
process, a UDP 4-tuple reused by two processes 5 s apart),
stops the recorder with SIGINT and writes the ground truth (pid, local ports,
protocol, time window and application-level bytes of every process) to
truth.json. See docs/e2e.md.

Needs root, iproute2 (`ip netns`) and tcpdump. Only traffic between the two
namespaces it creates; both are removed on exit, also on failure.

Usage:
  e2e-scenario.py --out WORKDIR [--snap PATH] [--small] [--interval DUR]
                  [--monitor CMD] [--recorder-arg ARG]... [--prefix P]
                  [--tcpdump-only]

WORKDIR must not exist or be empty; it receives `bundle/` (the recorder's
output), `truth.json`, `logs/` and the copy of this script the agents run.

The same file is the agent program: `e2e-scenario.py agent ROLE ARGS...`
(run inside a namespace by the scenario itself).

Python standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

SUS_IP4 = "10.203.0.1"
PEER_IP4 = "10.203.0.2"
SUS_IP6 = "fd00:203::1"
PEER_IP6 = "fd00:203::2"
# Peer-side services.
TCP_PORT = 5001  # request/response TCP service, IPv4 and IPv6
UDP_PORT = 5003  # UDP echo
# Suspect-side service (the "local server" role).
SERVER_PORT = 6000
# Fixed client port the two "same-port" processes bind one after the other.
SAME_PORT = 20000
# Fixed UDP client ports the two "udp-reuse" processes of each family bind
# one after the other (the same 4-tuple to the echo).
REUSE_UDP_PORT = {"ipv4": 20053, "ipv6": 20054}
# Seconds between the starts of the two users of a reused UDP 4-tuple.
REUSE_UDP_APART = 5.0

# Request header of the TCP service: bytes the client will send, bytes the
# server must answer with, and the server's send rate (bytes/s, 0 = no limit).
HEADER = struct.Struct("!QQQ")
CHUNK = 65536


# --------------------------------------------------------------------------
# Agent side: the programs that make the traffic.
# --------------------------------------------------------------------------


def emit(obj):
    print(json.dumps(obj), flush=True)


def paced_send(sock, total, rate, pattern=b"x"):
    """Sends `total` bytes at most `rate` bytes/s (0: unlimited); returns bytes sent."""
    buf = pattern * CHUNK
    sent = 0
    start = time.monotonic()
    while sent < total:
        n = min(CHUNK, total - sent)
        sock.sendall(buf[:n])
        sent += n
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return sent


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("peer closed after %d of %d bytes" % (len(data), n))
        data += part
    return data


def serve_one(conn):
    """The TCP service: read a header and the payload, answer, close first.

    The server closes first so that TIME_WAIT lands on the server side and the
    client's port can be reused at once by the next process.
    Returns (bytes received, bytes sent) at the application level.
    """
    with conn:
        hdr = recv_exact(conn, HEADER.size)
        upload, reply, rate = HEADER.unpack(hdr)
        got = 0
        while got < upload:
            part = conn.recv(min(CHUNK * 4, upload - got))
            if not part:
                break
            got += len(part)
        conn.sendall(struct.pack("!Q", got))
        sent = 8 + paced_send(conn, reply, rate, b"y")
        conn.shutdown(socket.SHUT_WR)
        # Drain until the client closes too, so its FIN is not answered by RST.
        conn.settimeout(10)
        try:
            while conn.recv(CHUNK):
                pass
        except OSError:
            pass
        return HEADER.size + got, sent


def tcp_listener(family, addr, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(64)
    return s


def agent_peer_services(_args):
    """Peer namespace: the TCP service on IPv4 and IPv6 and the UDP echo."""
    listeners = [
        tcp_listener(socket.AF_INET, "0.0.0.0", TCP_PORT),
        tcp_listener(socket.AF_INET6, "::", TCP_PORT),
    ]

    def accept_loop(ls):
        while True:
            conn, _ = ls.accept()
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    for ls in listeners:
        threading.Thread(target=accept_loop, args=(ls,), daemon=True).start()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", UDP_PORT))
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    udp6.bind(("::", UDP_PORT))

    def echo(sock):
        while True:
            data, addr = sock.recvfrom(65535)
            sock.sendto(data, addr)

    threading.Thread(target=echo, args=(udp6,), daemon=True).start()
    emit({"event": "start", "pid": os.getpid()})
    echo(udp)


def agent_tcp_client(args):
    """Suspect side: one TCP request to the peer service."""
    host, port, upload, reply, rate = args.host, args.port, args.send, args.recv, args.rate
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    emit({"event": "start", "pid": os.getpid()})
    if args.delay:
        time.sleep(args.delay)
    s = socket.socket(family, socket.SOCK_STREAM)
    if args.bind_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", args.bind_port))
    s.connect((host, port))
    local_port = s.getsockname()[1]
    # The download is paced by the server, the upload by us.
    s.sendall(HEADER.pack(upload, reply, rate if reply else 0))
    sent = HEADER.size + paced_send(s, upload, rate if upload else 0)
    received = 0
    while True:
        part = s.recv(CHUNK * 4)
        if not part:
            break
        received += len(part)
    if args.hold:
        time.sleep(args.hold)
    s.close()
    emit(
        {
            "event": "done",
            "pid": os.getpid(),
            "proto": "tcp",
            "family": "ipv6" if family == socket.AF_INET6 else "ipv4",
            "local_ports": [local_port],
            "remote_port": port,
            "app_bytes_sent": sent,
            "app_bytes_received": received,
        }
    )


def agent_server(args):
    """Suspect side: accept `count` connections from the peer and serve them."""
    ls = tcp_listener(socket.AF_INET, "0.0.0.0", args.port)
    emit({"event": "start", "pid": os.getpid()})
    totals = [0, 0]
    lock = threading.Lock()
    threads = []

    def handle(conn):
        r, s = serve_one(conn)
        with lock:
            totals[0] += r
            totals[1] += s

    ls.settimeout(30)
    for _ in range(args.count):
        conn, _ = ls.accept()
        conn.settimeout(None)
        t = threading.Thread(target=handle, args=(conn,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    ls.close()
    emit(
        {
            "event": "done",
            "pid": os.getpid(),
            "proto": "tcp",
            "family": "ipv4",
            "local_ports": [args.port],
            "remote_port": None,
            "app_bytes_sent": totals[1],
            "app_bytes_received": totals[0],
        }
    )


def agent_peer_clients(args):
    """Peer side: connect `count` times to the suspect's server, one by one."""
    emit({"event": "start", "pid": os.getpid()})
    for i in range(args.count):
        if i:
            time.sleep(args.gap)
        s = socket.create_connection((args.host, args.port), timeout=30)
        s.sendall(HEADER.pack(args.send, args.recv, 0))
        paced_send(s, args.send, 0)
        while s.recv(CHUNK * 4):
            pass
        s.close()
    emit({"event": "done", "pid": os.getpid()})


def agent_udp(args):
    """Suspect side: UDP to the peer echo, connected or with sendto/recvfrom."""
    emit({"event": "start", "pid": os.getpid()})
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    if args.bind_port:
        # The same local port as another process before: the same 4-tuple.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", args.bind_port))
    dest = (args.host, args.port)
    if args.connected:
        s.connect(dest)
    payload = b"u" * args.size
    sent = received = lost = 0
    start = time.monotonic()
    for i in range(args.count):
        if args.connected:
            s.send(payload)
        else:
            s.sendto(payload, dest)
        sent += len(payload)
        try:
            if args.connected:
                data = s.recv(65535)
            else:
                data, _ = s.recvfrom(65535)
            received += len(data)
        except socket.timeout:
            lost += 1
        ahead = (i + 1) * args.every - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    local_port = s.getsockname()[1]
    s.close()
    emit(
        {
            "event": "done",
            "pid": os.getpid(),
            "proto": "udp",
            "family": "ipv6" if family == socket.AF_INET6 else "ipv4",
            "local_ports": [local_port],
            "remote_port": args.port,
            "app_bytes_sent": sent,
            "app_bytes_received": received,
            "lost": lost,
        }
    )


def agent_tcp_seq(args):
    """Suspect side: one long-lived process, `count` short TCP requests one
    after the other, each connection open about `hold` seconds (an HTTP
    client, a beacon)."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    emit({"event": "start", "pid": os.getpid()})
    ports, sent, received = [], 0, 0
    for _ in range(args.count):
        t = time.monotonic()
        s = socket.socket(family, socket.SOCK_STREAM)
        s.connect((args.host, args.port))
        ports.append(s.getsockname()[1])
        s.sendall(HEADER.pack(args.send, args.recv, 0))
        s.sendall(b"q" * args.send)
        sent += HEADER.size + args.send
        need, got = 8 + args.recv, 0
        while got < need:
            part = s.recv(CHUNK)
            if not part:
                break
            got += len(part)
        received += got
        rest = args.hold - (time.monotonic() - t)
        if rest > 0:
            time.sleep(rest)
        s.close()
    emit(
        {
            "event": "done",
            "pid": os.getpid(),
            "proto": "tcp",
            "family": "ipv6" if family == socket.AF_INET6 else "ipv4",
            "local_ports": ports,
            "remote_port": args.port,
            "app_bytes_sent": sent,
            "app_bytes_received": received,
        }
    )


def agent_udp_fresh(args):
    """Suspect side: one long-lived process sending resolver-style queries,
    each from a fresh UDP socket that lives a few ms (sendto, one reply,
    close)."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    emit({"event": "start", "pid": os.getpid()})
    dest = (args.host, args.port)
    payload = b"d" * args.size
    ports, sent, received, lost = [], 0, 0, 0
    start = time.monotonic()
    for i in range(args.count):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        s.sendto(payload, dest)
        sent += len(payload)
        ports.append(s.getsockname()[1])
        try:
            data, _ = s.recvfrom(65535)
            received += len(data)
        except socket.timeout:
            lost += 1
        s.close()
        ahead = (i + 1) * args.every - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    emit(
        {
            "event": "done",
            "pid": os.getpid(),
            "proto": "udp",
            "family": "ipv6" if family == socket.AF_INET6 else "ipv4",
            "local_ports": ports,
            "remote_port": args.port,
            "app_bytes_sent": sent,
            "app_bytes_received": received,
            "lost": lost,
        }
    )


def agent_main(argv):
    p = argparse.ArgumentParser(prog="agent")
    sub = p.add_subparsers(dest="role", required=True)
    sub.add_parser("peer-services")
    c = sub.add_parser("tcp-client")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--send", type=int, default=0)
    c.add_argument("--recv", type=int, default=0)
    c.add_argument("--rate", type=int, default=0)
    c.add_argument("--bind-port", type=int, default=0)
    c.add_argument("--delay", type=float, default=0)
    c.add_argument("--hold", type=float, default=0)
    s = sub.add_parser("server")
    s.add_argument("port", type=int)
    s.add_argument("count", type=int)
    pc = sub.add_parser("peer-clients")
    pc.add_argument("host")
    pc.add_argument("port", type=int)
    pc.add_argument("count", type=int)
    pc.add_argument("--send", type=int, default=0)
    pc.add_argument("--recv", type=int, default=0)
    pc.add_argument("--gap", type=float, default=0.3)
    u = sub.add_parser("udp")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("--connected", action="store_true")
    u.add_argument("--count", type=int, default=100)
    u.add_argument("--size", type=int, default=1000)
    u.add_argument("--every", type=float, default=0.01)
    u.add_argument("--bind-port", type=int, default=0)
    ts = sub.add_parser("tcp-seq")
    ts.add_argument("host")
    ts.add_argument("port", type=int)
    ts.add_argument("--count", type=int, default=50)
    ts.add_argument("--send", type=int, default=2000)
    ts.add_argument("--recv", type=int, default=6000)
    ts.add_argument("--hold", type=float, default=0.1)
    uf = sub.add_parser("udp-fresh")
    uf.add_argument("host")
    uf.add_argument("port", type=int)
    uf.add_argument("--count", type=int, default=40)
    uf.add_argument("--size", type=int, default=60)
    uf.add_argument("--every", type=float, default=0.05)
    args = p.parse_args(argv)
    {
        "peer-services": agent_peer_services,
        "tcp-client": agent_tcp_client,
        "server": agent_server,
        "peer-clients": agent_peer_clients,
        "udp": agent_udp,
        "tcp-seq": agent_tcp_seq,
        "udp-fresh": agent_udp_fresh,
    }[args.role](args)


# --------------------------------------------------------------------------
# Scenario side: namespaces, recorder, the roles and the ground truth.
# --------------------------------------------------------------------------


class ScenarioError(Exception):
    pass


def log(msg):
    print("e2e-scenario: " + msg, file=sys.stderr, flush=True)


def run(cmd, check=True):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise ScenarioError(
            "command failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr.strip())
        )
    return r


def parse_duration(text):
    """`200ms`, `1s`, `1.5s` or plain seconds -> seconds."""
    t = text.strip()
    for suffix, scale in (("ms", 1e-3), ("s", 1.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * scale
    return float(t)


class Agent:
    """A process started in a namespace, its output lines collected by a thread."""

    def __init__(self, scenario, ns, name, argv):
        self.name = name
        log_path = os.path.join(scenario.logdir, name + ".stderr")
        self.stderr = open(log_path, "w")
        self.start_ns = time.time_ns()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, scenario.python, scenario.agent_path, "agent"] + argv,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.end_ns = None
        self.lines = []
        self.started = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        scenario.agents.append(self)

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            self.lines.append(obj)
            if obj.get("event") == "start":
                self.started.set()
        self.started.set()
        # stdout closes when the program exits: note the exit time here, not
        # when the scenario gets round to waiting for it.
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            return
        self.end_ns = time.time_ns()

    def wait_started(self, timeout=15):
        if not self.started.wait(timeout) or not self.lines:
            raise ScenarioError("%s did not start (see logs/%s.stderr)" % (self.name, self.name))
        reported = self.lines[0].get("pid")
        # `ip netns exec` execs the command, so the pid Popen knows is the
        # python process itself; check both ways while it is alive.
        if reported != self.proc.pid:
            raise ScenarioError(
                "%s: Popen pid %d but the program reports pid %s" % (self.name, self.proc.pid, reported)
            )
        try:
            with open("/proc/%d/comm" % self.proc.pid) as f:
                comm = f.read().strip()
        except OSError:
            comm = None  # already gone: short-lived agents may be
        if comm is not None and not comm.startswith("python"):
            raise ScenarioError("%s: /proc/%d/comm is %r, not python" % (self.name, self.proc.pid, comm))
        return self

    def wait(self, timeout=60):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ScenarioError("%s did not finish within %ds" % (self.name, timeout))
        self.reader.join(5)
        if self.end_ns is None:
            self.end_ns = time.time_ns()
        reported = self.lines[0].get("pid") if self.lines else None
        if reported != self.proc.pid:
            raise ScenarioError(
                "%s: Popen pid %d but the program reports pid %s" % (self.name, self.proc.pid, reported)
            )
        if rc != 0:
            raise ScenarioError("%s exited with %d (see logs/%s.stderr)" % (self.name, rc, self.name))
        done = [line for line in self.lines if line.get("event") == "done"]
        if not done:
            raise ScenarioError("%s printed no result" % self.name)
        return done[-1]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


class Scenario:
    def __init__(self, args):
        self.args = args
        self.workdir = os.path.abspath(args.out)
        self.bundle = os.path.join(self.workdir, "bundle")
        self.truth_path = os.path.abspath(args.truth or os.path.join(self.workdir, "truth.json"))
        self.logdir = os.path.join(self.workdir, "logs")
        self.agent_path = os.path.join(self.workdir, "pf-agent.py")
        self.python = sys.executable or "python3"
        pid = os.getpid()
        prefix = args.prefix
        self.ns_sus = "%s-sus-%d" % (prefix, pid)
        self.ns_peer = "%s-peer-%d" % (prefix, pid)
        self.veth_sus = "%ss%d" % (prefix, pid)
        self.veth_peer = "%sp%d" % (prefix, pid)
        self.agents = []
        self.recorder = None
        self.monitor = None
        self.netns_made = []

    # -- setup and teardown ------------------------------------------------

    def prepare_dirs(self):
        if os.path.exists(self.workdir) and os.listdir(self.workdir):
            raise ScenarioError("%s exists and is not empty" % self.workdir)
        os.makedirs(self.logdir, exist_ok=True)
        shutil.copyfile(os.path.abspath(__file__), self.agent_path)

    def setup_network(self):
        for ns in (self.ns_sus, self.ns_peer):
            run(["ip", "netns", "add", ns])
            self.netns_made.append(ns)
        run(
            ["ip", "link", "add", self.veth_sus, "netns", self.ns_sus, "type", "veth",
             "peer", "name", self.veth_peer, "netns", self.ns_peer]
        )
        have_ethtool = shutil.which("ethtool") is not None
        if not have_ethtool:
            log("WARNING: ethtool not found; segmentation offloads stay on, so the capture "
                "sees super-frames instead of wire frames")
        for ns, dev, ip4, ip6 in (
            (self.ns_sus, self.veth_sus, SUS_IP4, SUS_IP6),
            (self.ns_peer, self.veth_peer, PEER_IP4, PEER_IP6),
        ):
            ipns = ["ip", "netns", "exec", ns]
            run(ipns + ["ip", "link", "set", "lo", "up"])
            run(ipns + ["ip", "addr", "add", ip4 + "/24", "dev", dev])
            # nodad: the address is usable at once instead of after DAD.
            run(ipns + ["ip", "-6", "addr", "add", ip6 + "/64", "dev", dev, "nodad"])
            run(ipns + ["ip", "link", "set", dev, "up"])
            if have_ethtool:
                # Without this the capture holds TSO/GRO super-frames, which
                # no real wire carries and which nethogs and procflow count alike.
                r = run(ipns + ["ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"], check=False)
                if r.returncode != 0:
                    log("WARNING: ethtool -K %s failed: %s" % (dev, r.stderr.strip()))
        # The veth link comes up asynchronously: wait for carrier on both ends.
        deadline = time.monotonic() + 10
        for ns, dev in ((self.ns_sus, self.veth_sus), (self.ns_peer, self.veth_peer)):
            while "LOWER_UP" not in run(["ip", "netns", "exec", ns, "ip", "link", "show", dev]).stdout:
                if time.monotonic() > deadline:
                    raise ScenarioError("veth %s did not come up" % dev)
                time.sleep(0.05)

    def cleanup(self):
        for a in self.agents:
            a.kill()
        for p in (self.monitor, self.recorder):
            if p is not None and p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self.netns_made):
            # Deleting a namespace removes the veth end inside it, and with it
            # the other end.
            run(["ip", "netns", "del", ns], check=False)
        self.netns_made = []

    # -- recorder ----------------------------------------------------------

    def start_recorder(self):
        args = self.args
        if args.tcpdump_only:
            os.makedirs(self.bundle)
            cmd = ["tcpdump", "-i", self.veth_sus, "-n", "-U", "-w",
                   os.path.join(self.bundle, "capture-000001.pcap")]
            log_path = os.path.join(self.bundle, "tcpdump.log")
        else:
            cmd = [args.snap, "record", "--out", self.bundle, "--iface", self.veth_sus]
            if args.interval:
                cmd += ["--interval", args.interval]
            cmd += args.recorder_arg or []
            log_path = os.path.join(self.logdir, "recorder.stderr")
        self.recorder_log = open(log_path, "w")
        self.recorder = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_sus] + cmd,
            stdout=self.recorder_log,
            stderr=self.recorder_log,
        )
        # Traffic must not start before the capture runs: wait for the
        # recorder's "recording into ... capture on IFACE" line (its own
        # capture is running then), or for tcpdump's "listening on" line
        # (with --capture tcpdump the recorder keeps tcpdump's stderr in the
        # bundle).
        tlog = os.path.join(self.bundle, "tcpdump.log")
        deadline = time.monotonic() + 15
        while True:
            if self.recorder.poll() is not None:
                raise ScenarioError("recorder exited early with %d (see %s)" % (self.recorder.returncode, log_path))
            ready = False
            for path, needle in ((tlog, "listening on"), (log_path, "capture on ")):
                try:
                    with open(path) as f:
                        ready = ready or needle in f.read()
                except OSError:
                    pass
            if ready:
                break
            if time.monotonic() > deadline:
                raise ScenarioError("the capture did not start within 15 s (%s, %s)" % (tlog, log_path))
            time.sleep(0.05)
        if args.recorder_nice is not None:
            self.renice_recorder(args.recorder_nice)
        # One recorder tick so the first snapshot predates the traffic.
        time.sleep(max(0.3, self.interval_s))

    def renice_recorder(self, nice):
        """Sets the nice value of the recorder and its tcpdump, every thread."""
        pids = [self.recorder.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.recorder.pid, self.recorder.pid)) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
        for pid in pids:
            try:
                tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
            except OSError:
                continue
            for tid in tids:
                try:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
                except OSError as e:
                    log("WARNING: cannot renice %d: %s" % (tid, e))

    def start_monitor(self):
        cmd = self.args.monitor.replace("{iface}", self.veth_sus)
        out = open(os.path.join(self.workdir, "monitor.out"), "w")
        err = open(os.path.join(self.logdir, "monitor.stderr"), "w")
        self.monitor = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_sus, "sh", "-c", "exec " + cmd], stdout=out, stderr=err
        )
        time.sleep(1.0)
        if self.monitor.poll() is not None:
            raise ScenarioError("monitor command exited early with %d: %s" % (self.monitor.returncode, cmd))

    def stop_recorder(self):
        if self.monitor is not None:
            self.monitor.send_signal(signal.SIGINT)
        self.recorder.send_signal(signal.SIGINT)
        try:
            rc = self.recorder.wait(30)
        except subprocess.TimeoutExpired:
            raise ScenarioError("recorder did not stop within 30 s of SIGINT")
        if self.monitor is not None:
            try:
                self.monitor.wait(10)
            except subprocess.TimeoutExpired:
                self.monitor.kill()
        # tcpdump exits 0 on SIGINT only when it ran in the foreground of a
        # shell; as a direct child it may report the signal.
        if rc != 0 and not (self.args.tcpdump_only and rc in (-2, 130)):
            raise ScenarioError("recorder exited with %d after SIGINT" % rc)

    # -- the roles ---------------------------------------------------------

    def sizes(self):
        if self.args.small:
            return dict(bulk=200_000, rate=100_000, server_conns=3, server_send=40_000,
                        server_recv=20_000, udp_count=40, udp_size=200, v6_send=100_000,
                        v6_recv=30_000, short_n=10, short_send=6_000, short_recv=2_000,
                        same_send=30_000, same_rate=30_000, seq_n=50, seq_send=200,
                        seq_recv=600, fresh_n=40)
        return dict(bulk=24_000_000, rate=6_000_000, server_conns=5, server_send=1_000_000,
                    server_recv=500_000, udp_count=200, udp_size=1000, v6_send=4_000_000,
                    v6_recv=1_000_000, short_n=10, short_send=64_000, short_recv=16_000,
                    same_send=500_000, same_rate=500_000, seq_n=50, seq_send=2000,
                    seq_recv=6000, fresh_n=40)

    def reuse_argv(self, host, family):
        return ["udp", host, str(UDP_PORT), "--bind-port", str(REUSE_UDP_PORT[family]),
                "--count", "10", "--size", "100", "--every", "0.05"]

    def run_roles(self):
        z = self.sizes()
        sus, peer = self.ns_sus, self.ns_peer
        results = []  # (role, name, agent)

        peer_services = Agent(self, peer, "peer-services", ["peer-services"]).wait_started()
        # The peer services are long-lived helpers, not part of the truth.
        self.agents.remove(peer_services)
        self.helpers = [peer_services]

        if self.args.monitor:
            self.start_monitor()
        self.start_recorder()
        t0 = time.monotonic()

        def client(role, name, host, extra):
            a = Agent(self, sus, name, ["tcp-client", host, str(TCP_PORT)] + extra)
            results.append((role, name, a))
            return a

        up = client("upload", "upload", PEER_IP4, ["--send", str(z["bulk"]), "--rate", str(z["rate"])])
        down = client("download", "download", PEER_IP4, ["--recv", str(z["bulk"]), "--rate", str(z["rate"])])
        server = Agent(self, sus, "server", ["server", str(SERVER_PORT), str(z["server_conns"])])
        results.append(("server", "server", server))
        server.wait_started()
        peer_clients = Agent(
            self, peer, "peer-clients",
            ["peer-clients", SUS_IP4, str(SERVER_PORT), str(z["server_conns"]),
             "--send", str(z["server_send"]), "--recv", str(z["server_recv"]), "--gap", "0.4"],
        )
        self.agents.remove(peer_clients)
        self.helpers.append(peer_clients)
        udp_every = 2.0 / z["udp_count"]
        for role, flag in (("udp-connected", ["--connected"]), ("udp-unconnected", [])):
            a = Agent(self, sus, role, ["udp", PEER_IP4, str(UDP_PORT), "--count", str(z["udp_count"]),
                                        "--size", str(z["udp_size"]), "--every", str(udp_every)] + flag)
            results.append((role, role, a))
        client("ipv6", "ipv6", PEER_IP6,
               ["--send", str(z["v6_send"]), "--recv", str(z["v6_recv"]), "--rate", str(z["v6_send"] // 2)])
        # The same UDP 4-tuple used by two processes, REUSE_UDP_APART apart:
        # the first users now, the second ones below.
        reuse_first = []
        for family, host in (("ipv4", PEER_IP4), ("ipv6", PEER_IP6)):
            name = "udp-reuse-%s-1" % family
            a = Agent(self, sus, name, self.reuse_argv(host, family))
            results.append(("udp-reuse", name, a))
            reuse_first.append((family, host, a))
        same_a = client("same-port", "same-port-1", PEER_IP4,
                        ["--send", str(z["same_send"]), "--rate", str(z["same_rate"]),
                         "--bind-port", str(SAME_PORT), "--recv", "1000"])

        # Short-lived processes: each lives well under a second (a short
        # pause, one paced request, a short hold), started 0.3 s apart.
        short = []
        for i in range(z["short_n"]):
            time.sleep(0.3)
            rate = z["short_send"] * 4  # a quarter of a second of sending
            short.append(client("short-lived", "short-%02d" % (i + 1), PEER_IP4,
                                ["--send", str(z["short_send"]), "--recv", str(z["short_recv"]),
                                 "--rate", str(rate), "--delay", "0.1", "--hold", "0.1"]))

        # One long-lived process, many short connections / fresh sockets;
        # IPv4 and IPv6. Started once the short-lived processes are, so
        # that their hundreds of sockets do not slow the snapshots those
        # need (with periodic reads alone, a slow snapshot misses them).
        time.sleep(0.6)
        for fam, host in (("v4", PEER_IP4), ("v6", PEER_IP6)):
            a = Agent(self, sus, "tcp-seq-" + fam,
                      ["tcp-seq", host, str(TCP_PORT), "--count", str(z["seq_n"]), "--hold", "0.1",
                       "--send", str(z["seq_send"]), "--recv", str(z["seq_recv"])])
            results.append(("tcp-seq", "tcp-seq-" + fam, a))
            a = Agent(self, sus, "udp-fresh-" + fam,
                      ["udp-fresh", host, str(UDP_PORT), "--count", str(z["fresh_n"]), "--every", "0.05"])
            results.append(("udp-fresh", "udp-fresh-" + fam, a))

        for _, _, a in results:
            if a is not same_a and a not in short:
                a.wait_started()
        # Ground truth as the kernel sees it mid-scenario, for debugging.
        with open(os.path.join(self.logdir, "ss-suspect.txt"), "w") as f:
            f.write(run(["ip", "netns", "exec", sus, "ss", "-tunap"], check=False).stdout)
        # The second users of the reused UDP tuples, once the first have
        # exited, REUSE_UDP_APART after the first started.
        for family, host, first in reuse_first:
            first.wait()
            time.sleep(max(0.0, REUSE_UDP_APART - (time.time_ns() - first.start_ns) / 1e9))
            name = "udp-reuse-%s-2" % family
            a = Agent(self, sus, name, self.reuse_argv(host, family))
            results.append(("udp-reuse", name, a))
            a.wait_started()
        same_a.wait_started()
        same_a_result = same_a.wait()
        # The second user of the port starts only after the first has exited.
        time.sleep(2.0)
        client("same-port", "same-port-2", PEER_IP4,
               ["--send", str(z["same_send"]), "--rate", str(z["same_rate"]),
                "--bind-port", str(SAME_PORT), "--recv", "1000"]).wait_started()

        processes = []
        for role, name, a in results:
            res = same_a_result if a is same_a else a.wait()
            if a in short:
                life = (a.end_ns - a.start_ns) / 1e9
                if life >= 1.0:
                    log("WARNING: %s lived %.2f s (machine busy?)" % (name, life))
            processes.append(
                {
                    "role": role,
                    "name": name,
                    "pid": a.proc.pid,
                    "proto": res["proto"],
                    "family": res["family"],
                    "local_ports": res["local_ports"],
                    "remote_port": res["remote_port"],
                    "direction": "in" if role == "server" else "out",
                    "app_bytes_sent": res["app_bytes_sent"],
                    "app_bytes_received": res["app_bytes_received"],
                    "start_ns": a.start_ns,
                    "end_ns": a.end_ns,
                }
            )
        for h in self.helpers[1:]:
            h.wait()
        self.helpers[0].kill()
        # Let the recorder see every socket gone before it stops, a monitor
        # refreshing once a second print its last totals, and the capture
        # get its last packets: libpcap's TPACKET_V3 ring hands a block to
        # tcpdump only when it fills or its timeout (tcpdump: 1 s) expires,
        # and tcpdump stopped by SIGINT writes none of what is still in the
        # kernel ("packets received by filter" exceeds "captured").
        time.sleep(max(1.5, 2 * self.interval_s))
        log("traffic done in %.1f s" % (time.monotonic() - t0))
        return processes

    def execute(self):
        self.interval_s = parse_duration(self.args.interval) if self.args.interval else 0.25
        self.prepare_dirs()
        try:
            self.setup_network()
            processes = self.run_roles()
            self.stop_recorder()
            pids = [p["pid"] for p in processes if p["role"] == "same-port"]
            if len(set(pids)) != len(pids):
                raise ScenarioError("the two same-port processes got the same pid")
            truth = {
                "scenario": "procflow end-to-end",
                "small": bool(self.args.small),
                "suspect": {"netns": self.ns_sus, "iface": self.veth_sus, "ipv4": SUS_IP4, "ipv6": SUS_IP6},
                "peer": {"netns": self.ns_peer, "ipv4": PEER_IP4, "ipv6": PEER_IP6},
                "bundle": os.path.relpath(self.bundle, os.path.dirname(self.truth_path)),
                "processes": processes,
            }
            tmp = self.truth_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(truth, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.truth_path)
            for h in getattr(self, "helpers", []):
                h.kill()
        finally:
            for h in getattr(self, "helpers", []):
                h.kill()
            self.cleanup()


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        agent_main(sys.argv[2:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="work directory (new or empty)")
    p.add_argument("--snap", default="procflow-snap", help="procflow-snap binary")
    p.add_argument("--truth", help="where to write truth.json (default WORKDIR/truth.json)")
    p.add_argument("--small", action="store_true", help="small transfers (for the sample bundle)")
    p.add_argument("--interval", help="recorder snapshot interval, e.g. 200ms")
    p.add_argument("--recorder-nice", type=int,
                   help="set the recorder's nice value once it runs (it lowers its own priority to 19)")
    p.add_argument("--monitor", help="extra command run in the suspect namespace beside the recorder; "
                   "{iface} is replaced by the suspect interface; stdout goes to WORKDIR/monitor.out")
    p.add_argument("--recorder-arg", action="append", metavar="ARG",
                   help="one more argument for `procflow-snap record` (repeatable), e.g. "
                   "--recorder-arg=--sources --recorder-arg=poll")
    p.add_argument("--prefix", default="pf",
                   help="prefix of the namespace and veth names (default pf; at most 4 characters)")
    p.add_argument("--tcpdump-only", action="store_true",
                   help="run plain tcpdump instead of procflow-snap (to debug the scenario itself)")
    args = p.parse_args()
    if not (1 <= len(args.prefix) <= 4 and args.prefix.isalnum()):
        log("--prefix must be 1 to 4 letters or digits (interface names are at most 15 bytes)")
        return 2
    if os.geteuid() != 0:
        log("needs root (network namespaces)")
        return 2
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            log("needs %s" % tool)
            return 2

    scenario = Scenario(args)

    def on_signal(signum, _frame):
        raise ScenarioError("interrupted by signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start = time.monotonic()
    try:
        scenario.execute()
    except ScenarioError as e:
        log("FAILED: %s" % e)
        return 1
    log("done in %.1f s; bundle %s, truth %s" % (time.monotonic() - start, scenario.bundle, scenario.truth_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
