#!/usr/bin/env bash
# Set-up + build for mor-dist on Debian 12: installs every Debian package the
# project needs (skipped when all are present), then configures and builds.
#   scripts/setup.sh                 # Release, -O3 -march=native
#   BUILD_DIR=build-dbg BUILD_TYPE=Debug scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config git
  libopenblas-openmp-dev            # OpenMP build: shares our OpenMP threads
  libdnnl-dev                       # oneDNN: JIT sgemm for the forward and input-gradient GEMMs
  libopenmpi-dev openmpi-bin        # MPI communicator, mpirun for multi-rank tests
  libhdf5-dev hdf5-tools            # serial HDF5 per rank (checkpoints), h5dump
  libxxhash-dev                     # checksums of checkpoint shard files
  libboost-program-options-dev      # CLI + INI configs
  libgtest-dev googletest           # unit tests
  libzstd-dev zlib1g-dev            # compressed JSONL input for `prepare`
  libicu-dev                        # Unicode classes (\p{L}, \p{N}, White_Space) for the tokenizer
  nlohmann-json3-dev                # tokenizer.json, prepare's manifest.json
  libsimdjson-dev                   # prepare's JSONL lines (io/data/prepare_jsonl.cpp)
  libssl-dev                        # SHA-256 (libcrypto) of the shards `prepare` writes
  nodejs $(command -v npm > /dev/null 2>&1 || echo npm)   # npm reference tokenizers for the parity tests (npm ships with NodeSource's nodejs)
  python3 python3-numpy python3-torch python3-h5py   # reference + parity tests
  python3-matplotlib                # scripts/plot_metrics.py (and its test)
  fortunes                          # real English text for the learning test
  clang libclang-rt-14-dev          # libFuzzer + sanitizer runtimes for the fuzz build (build-fuzz, docs/TESTING.md)
  libomp-dev                        # OpenMP for clang: the fuzz build configures the whole tree with it
  iproute2                          # ip, tc, ss: the multi-node cluster in network namespaces (tests label multinode)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-Release}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: built into $BUILD_DIR/ (binary: $BUILD_DIR/mor-dist)"
