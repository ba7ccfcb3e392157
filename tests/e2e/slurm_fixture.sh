#!/usr/bin/env bash
# ctest fixture of the SLURM tests: `up` starts the local single-node cluster
# (slurm/local-cluster.sh, installing the Debian packages if they are missing), `down`
# stops what `up` started. MOR_NO_SLURM=1 makes both (and every SLURM test) say so and exit 77,
# which ctest reports as Skipped; without it a cluster that cannot start is a FAILED test.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${MOR_NO_SLURM:-0}" = 1 ]; then
  echo "SLURM tests disabled by MOR_NO_SLURM"
  exit 77
fi
case "${1:-}" in
  up)
    if ! "$src/slurm/local-cluster.sh" up; then
      echo "FAIL: the local SLURM cluster did not start (see above; logs under ${MOR_SLURM_DIR:-/tmp/mor-slurm})." >&2
      echo "FAIL: the SLURM tests (e2e_slurm_*) cannot run without it. Fix the cause, or set MOR_NO_SLURM=1 to skip them on purpose." >&2
      exit 1
    fi ;;
  down) "$src/slurm/local-cluster.sh" down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
