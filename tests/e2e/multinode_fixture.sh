#!/usr/bin/env bash
# ctest fixture of the multi-node tests: `up` starts the 3-node cluster of
# `slurm/local-cluster.sh up --nodes 3` (network namespaces, a bridge, one slurmd per node; beside
# the single-node cluster of the `slurm` fixture, with its own directory and port), `down` removes
# what `up` created. Where network namespaces cannot be made (not root, no CAP_SYS_ADMIN or
# CAP_NET_ADMIN) both say why and exit 77, which ctest reports as Skipped, as do the tests
# themselves; MOR_NO_SLURM=1 skips them on purpose.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${MOR_NO_SLURM:-0}" = 1 ]; then
  echo "SLURM tests disabled by MOR_NO_SLURM"
  exit 77
fi
if ! reason=$("$src/slurm/local-cluster.sh" probe --nodes 3); then echo "SKIP: $reason"; exit 77; fi
case "${1:-}" in
  up)
    if ! "$src/slurm/local-cluster.sh" up --nodes 3; then
      echo "FAIL: the 3-node SLURM cluster did not start (see above; logs under ${MOR_SLURM_NODES_DIR:-/tmp/mor-slurm-nodes})." >&2
      echo "FAIL: the multi-node tests (e2e_multinode_*) cannot run without it. Set MOR_NO_SLURM=1 to skip them on purpose." >&2
      exit 1
    fi ;;
  down) "$src/slurm/local-cluster.sh" down --nodes 3 ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
