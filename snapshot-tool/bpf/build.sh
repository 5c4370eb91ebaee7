#!/usr/bin/env bash
# Builds sockuse.bpf.o from sockuse.bpf.c. The object is committed: the
# recorder embeds it, so building the recorder never needs clang.
#
# usage: snapshot-tool/bpf/build.sh [OUT]   (default: sockuse.bpf.o here)
# env:   CLANG (default clang), STRIP (default llvm-strip)
#
# Compiled from this directory with a relative source path and the DWARF
# stripped (BTF kept), so the object does not depend on where the tree is.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-sockuse.bpf.o}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
"${CLANG:-clang}" -O2 -g -target bpf -mcpu=v3 -fdebug-prefix-map="$PWD"=. \
  -c sockuse.bpf.c -o "$OUT"
"${STRIP:-llvm-strip}" -g "$OUT"
