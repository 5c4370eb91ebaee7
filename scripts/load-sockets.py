#!/usr/bin/env python3
"""Loopback socket load for measuring procflow-snap (never leaves 127.0.0.1).

  hold  --procs N --conns K [--seconds S]
        one echo server, N client processes holding K TCP connections each;
        every second each client sends one byte on one connection and, with
        --churn P, closes and reopens P of its connections.
  short --count M --rate R --life L --pidfile F
        forks M processes, R per second, each opening one TCP connection to a
        local listener and exiting after L seconds; their pids go to F.
"""
import argparse, os, selectors, signal, socket, sys, time


def serve(listener, stop_after):
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    end = time.time() + stop_after
    while time.time() < end:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            if s is listener:
                try:
                    c, _ = listener.accept()
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
                except BlockingIOError:
                    pass
            else:
                try:
                    d = s.recv(4096)
                except OSError:
                    d = b""
                if d:
                    try:
                        s.send(d)
                    except OSError:
                        pass
                else:
                    sel.unregister(s)
                    s.close()


def client(addr, conns, churn, seconds):
    socks = [socket.create_connection(addr) for _ in range(conns)]
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        time.sleep(1)
        s = socks[i % conns]
        try:
            s.send(b"x")
            s.recv(1)
        except OSError:
            pass
        for _ in range(churn):
            j = i % conns
            socks[j].close()
            socks[j] = socket.create_connection(addr)
            i += 1
        i += 1
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["hold", "short"])
    ap.add_argument("--procs", type=int, default=300)
    ap.add_argument("--conns", type=int, default=20)
    ap.add_argument("--churn", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--rate", type=float, default=10)
    ap.add_argument("--life", type=float, default=0.5)
    ap.add_argument("--pidfile")
    ap.add_argument("--ready", help="file to create once the load is in place")
    a = ap.parse_args()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    addr = listener.getsockname()

    if a.mode == "hold":
        server = os.fork()
        if server == 0:
            serve(listener, a.seconds + 30)
            os._exit(0)
        kids = []
        for _ in range(a.procs):
            pid = os.fork()
            if pid == 0:
                listener.close()
                client(addr, a.conns, a.churn, a.seconds)
            kids.append(pid)
        time.sleep(2 + a.procs * a.conns / 5000)
        if a.ready:
            open(a.ready, "w").close()
        for k in kids:
            os.waitpid(k, 0)
        os.kill(server, signal.SIGTERM)
        os.waitpid(server, 0)
        return

    # short: the parent accepts, children connect and live `life` seconds.
    pids = []
    listener.setblocking(False)
    accepted = []
    t0 = time.time()
    for n in range(a.count):
        while time.time() < t0 + n / a.rate:
            try:
                accepted.append(listener.accept()[0])
            except BlockingIOError:
                time.sleep(0.002)
        pid = os.fork()
        if pid == 0:
            born = time.time()
            s = socket.create_connection(addr)
            time.sleep(max(0.0, a.life - (time.time() - born)))
            s.close()
            os._exit(0)
        pids.append(pid)
        # reap finished children as we go
        while True:
            try:
                r, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if r == 0:
                break
    for _ in range(int(a.life * 100) + 50):
        try:
            accepted.append(listener.accept()[0])
        except BlockingIOError:
            time.sleep(0.01)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write("\n".join(map(str, pids)) + "\n")


if __name__ == "__main__":
    main()
