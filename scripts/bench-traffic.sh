# Sourced by bench-flows.sh and bench-analyze.sh: the two network namespaces
# their captures are recorded in, and the traffic between them, written once
# so both benchmarks measure the same kind of load.
#
# The caller sets NS1 NS2 (namespace names) and VA VB (veth ends), keeps the
# pids of what it starts in the array PIDS, and calls bench_cleanup from its
# EXIT trap. The callers derive the names from their PREFIX (default `pf`),
# so parallel runs choose different PREFIXes. NS1 is the client side (10.21x.0.1), NS2 the server side.

# Kills every process in PIDS and removes both namespaces.
bench_cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
    ip netns del "$NS1" 2>/dev/null || true
    ip netns del "$NS2" 2>/dev/null || true
}

# bench_netns_up A B: the namespace pair joined by a veth, A in NS1 and B in
# NS2 (/24), offloads off so the capture sees wire-sized frames.
bench_netns_up() {
    local a=$1 b=$2
    ip netns add "$NS1"
    ip netns add "$NS2"
    ip link add "$VA" type veth peer name "$VB"
    ip link set "$VA" netns "$NS1"
    ip link set "$VB" netns "$NS2"
    ip -n "$NS1" addr add "$a/24" dev "$VA"
    ip -n "$NS2" addr add "$b/24" dev "$VB"
    for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; done
    ip -n "$NS1" link set "$VA" up
    ip -n "$NS2" link set "$VB" up
    ip netns exec "$NS1" ethtool -K "$VA" tso off gso off gro off >/dev/null
    ip netns exec "$NS2" ethtool -K "$VB" tso off gso off gro off >/dev/null
}

# bench_servers B: in NS2, an iperf3 server on 5201, a TCP server on 7000
# answering each request with four times its bytes, and a UDP echo on 7001.
bench_servers() {
    local b=$1
    ip netns exec "$NS2" iperf3 -s -p 5201 >/dev/null 2>&1 &
    PIDS+=("$!")
    ip netns exec "$NS2" python3 - "$b" <<'PY' &
import socket, sys, threading
b = sys.argv[1]
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((b, 7000)); s.listen(512)
    while True:
        c, _ = s.accept()
        try:
            d = c.recv(4096)
            c.sendall(d * 4)
        finally:
            c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((b, 7001))
    while True:
        d, peer = u.recvfrom(2048)
        u.sendto(d[:32], peer)
threading.Thread(target=udp, daemon=True).start()
tcp()
PY
    PIDS+=("$!")
    sleep 1
}

# bench_traffic B BYTES RATE: from NS1, bulk TCP of BYTES (iperf3 -n, 128K
# writes, paced at RATE so the capture keeps up), then 4000 short TCP
# connections and 40 rounds of small UDP datagrams from 2000 sockets.
bench_traffic() {
    local b=$1 bytes=$2 rate=$3
    ip netns exec "$NS1" iperf3 -c "$b" -p 5201 -n "$bytes" -l 128K -b "$rate" >/dev/null
    ip netns exec "$NS1" python3 - "$b" <<'PY'
import socket, sys, time
b = sys.argv[1]
for i in range(4000):
    c = socket.create_connection((b, 7000))
    c.sendall(b"GET /%d HTTP/1.0\r\n\r\n" % i)
    while c.recv(65536):
        pass
    c.close()
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2000)]
for s in socks:
    s.setblocking(False)
for rnd in range(40):
    for s in socks:
        s.sendto(b"x" * 64, (b, 7001))
    # Replies lost to a full receive queue are fine: never wait on one.
    time.sleep(0.05)
    for s in socks:
        try:
            s.recv(2048)
        except OSError:
            pass
PY
}
