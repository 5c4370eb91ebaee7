#!/usr/bin/env bash
# What archiving the conntrack table costs procflow-snap: the same recorder,
# on the same load, with CONNS tracked connections and with none.
#
# Lab (namespaces pnbh$$, pnbc$$, pnbp$$): a "container" 10.78.0.2 routed
# through a "host" namespace to a "peer" 198.19.0.2; CONNS idle TCP
# connections from the container to the peer. Then, for DURATION each, the
# recorder runs in the host namespace (it sees the CONNS sockets of the
# container in both runs):
#   1. with nftables masquerade on the host's uplink: CONNS conntrack entries;
#   2. NAT table deleted and conntrack flushed: the host namespace tracks
#      nothing (no hook needs it any more), 0 entries.
# REPEAT such pairs, each with a fresh load (closed with RST: no TIME_WAIT
# left over). CPU is user+system from /usr/bin/time (final hashing
# included), also per snapshot, since a shared machine stretches ticks.
# Last, the recorder's conntrack work alone (examples/conntrack_cost.rs:
# TICKS ticks of the same code) with CONNS entries and with none, and
# `conntrack -L` of the same CONNS entries as a peer for the dump: on a
# shared machine the whole-recorder runs vary more than the difference.
#
# usage: scripts/bench-conntrack.sh [extra procflow-snap record options]
# env:   BIN (default: release build), CONNS=4000, DURATION=20, REPEAT=3
# Needs root, iproute2, nft, conntrack, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-4000}
DURATION=${DURATION:-20}
REPEAT=${REPEAT:-3}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/procflow-snap}
[ -x "$BIN" ] || cargo build --release -p procflow-snap
BIN=$(realpath "$BIN")
cargo build --quiet --release -p procflow-snap --example conntrack_cost
COST=$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/conntrack_cost")
TICKS=${TICKS:-200}
ID=$$
H=pnbh$ID C=pnbc$ID P=pnbp$ID
WORK=$(mktemp -d /tmp/procflow-ctbench.XXXXXX)
LOAD=
SINK=
cleanup() {
  [ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null
  [ -n "$SINK" ] && kill "$SINK" 2>/dev/null
  wait 2>/dev/null || true
  for n in $H $C $P; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for n in $H $C $P; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip -n "$H" link add pnbv$ID type veth peer name eth0 netns "$C"
ip -n "$H" link add pnbu$ID type veth peer name eth0 netns "$P"
ip -n "$H" addr add 10.78.0.1/24 dev pnbv$ID
ip -n "$H" addr add 198.19.0.1/24 dev pnbu$ID
ip -n "$C" addr add 10.78.0.2/24 dev eth0
ip -n "$P" addr add 198.19.0.2/24 dev eth0
for n in "$H:pnbv$ID" "$H:pnbu$ID" "$C:eth0" "$P:eth0"; do ip -n "${n%%:*}" link set "${n#*:}" up; done
ip -n "$C" route add default via 10.78.0.1
ip netns exec "$H" sysctl -qw net.ipv4.ip_forward=1
nat_on() {
  ip netns exec "$H" nft -f - <<NFT
table ip pnbnat$ID {
  chain post { type nat hook postrouting priority 100; oifname "pnbu$ID" masquerade; }
}
NFT
}

# The load: the peer accepts and holds, the container opens CONNS connections.
cat >"$WORK/load.py" <<'PY'
import socket, sys, time
if sys.argv[1] == "sink":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 9001)); s.listen(4096); held = []
    while True:
        held.append(s.accept()[0])
else:
    held = [socket.create_connection(("198.19.0.2", 9001)) for _ in range(int(sys.argv[2]))]
    for s in held:  # closed with RST on exit: no TIME_WAIT rows left
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    open(sys.argv[3], "w").close()
    time.sleep(int(sys.argv[4]))
PY
ip netns exec "$P" python3 "$WORK/load.py" sink &
SINK=$!
sleep 0.5
load_start() {
  rm -f "$WORK/ready"
  ip netns exec "$C" python3 "$WORK/load.py" hold "$CONNS" "$WORK/ready" $((2 * DURATION + 60)) &
  LOAD=$!
  while [ ! -e "$WORK/ready" ]; do sleep 0.2; done
}

run() {
  local name=$1; shift
  local entries
  entries=$(ip netns exec "$H" conntrack -C)
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/$name.time" \
    ip netns exec "$H" "$BIN" record --out "$WORK/$name" --duration "${DURATION}s" "$@" 2>"$WORK/$name.err" || {
    cat "$WORK/$name.err"; exit 1; }
  read -r el us sy rss < <(tail -n 1 "$WORK/$name.time")
  local bytes ct
  bytes=$(du -sb "$WORK/$name" | cut -f1)
  ct=$(tar tvf "$WORK/$name/snapshots-000001.tar" | awk '/\/conntrack/ {n += $3} END {print n + 0}')
  snaps=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['snapshots'])" "$WORK/$name/manifest.json")
  awk -v n="$name" -v c="$entries" -v e="$el" -v u="$us" -v s="$sy" -v b="$bytes" -v t="$ct" -v k="$snaps" -v r="$rss" 'BEGIN {
    printf "%-16s %5d conntrack entries: %.2f CPU s/min (user %.2f + sys %.2f over %.1f s), %.1f CPU ms/snapshot, %.2f MB written/min (conntrack members %.2f MB), %d snapshots, max RSS %d KB\n",
      n, c, (u+s)*60/e, u, s, e, (u+s)*1000/k, b*60/e/1e6, t/1e6, k, r }' | tee -a "$WORK/results"
}

for i in $(seq "$REPEAT"); do
  nat_on
  load_start
  tcp_rows=$(($(ip netns exec "$C" cat /proc/net/tcp | wc -l) - 1))
  echo "pair $i: $CONNS idle connections container -> peer ($tcp_rows rows in the container's /proc/net/tcp)"
  rm -rf "$WORK/with-nat" "$WORK/without-nat"
  run with-nat "$@"
  ip netns exec "$H" nft delete table ip pnbnat$ID
  ip netns exec "$H" conntrack -F 2>/dev/null
  run without-nat "$@"
  if [ "$i" = "$REPEAT" ]; then
    nat_on
    kill "$LOAD"; wait "$LOAD" 2>/dev/null || true
    load_start
    n=$(ip netns exec "$H" conntrack -C)
    /usr/bin/time -f "%e %U %S" -o "$WORK/ct.time" ip netns exec "$H" sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do conntrack -L >/dev/null 2>&1; done'
    read -r el us sy < "$WORK/ct.time"
    awk -v n="$n" -v u="$us" -v s="$sy" 'BEGIN { printf "peer: conntrack -L of %d entries: %.1f CPU ms per dump (10 dumps)\n", n, (u+s)*100 }'
    echo "recorder's conntrack work alone, $n entries: $(ip netns exec "$H" "$COST" "$TICKS")"
    ip netns exec "$H" conntrack -F 2>/dev/null
    echo "recorder's conntrack work alone, $(ip netns exec "$H" conntrack -C) entries: $(ip netns exec "$H" "$COST" "$TICKS")"
  fi
  kill "$LOAD"; wait "$LOAD" 2>/dev/null || true
  LOAD=
done
awk '/CPU ms\/snapshot/ { for (i = 1; i <= NF; i++) if ($i == "ms/snapshot,") v[$1] = v[$1] " " $(i-2) }
  END { for (k in v) print "CPU ms/snapshot " k ":" v[k] }' "$WORK/results" | sort
grep -h "conntrack" "$WORK/with-nat.err" | head -1
