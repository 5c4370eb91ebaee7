# Sourced by the benchmark scripts: a network namespace joined to this one
# by a veth pair with offloads off (wire-sized frames), /30 addressed.
#
# veth_lab NS VH VN NET: namespace NS, host end VH (NET.1), namespace end
# VN (NET.2); NET is the first three octets. veth_lab_del NS VH removes them.
veth_lab() {
  local ns=$1 vh=$2 vn=$3 net=$4
  ip netns add "$ns"
  ip link add "$vh" type veth peer name "$vn"
  ip link set "$vn" netns "$ns"
  ip addr add "$net.1/30" dev "$vh"
  ip -n "$ns" addr add "$net.2/30" dev "$vn"
  ip link set "$vh" up
  ip -n "$ns" link set "$vn" up
  ip -n "$ns" link set lo up
  ethtool -K "$vh" tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$ns" ethtool -K "$vn" tso off gso off gro off >/dev/null 2>&1 || true
}

veth_lab_del() {
  ip netns del "$1" 2>/dev/null || true
  ip link del "$2" 2>/dev/null || true
}
