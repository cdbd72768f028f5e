#!/usr/bin/env bash
# The whole test suite from a clean clone: installs the dependencies, builds kiln (and an
# ASan+UBSan build of the unit tests), starts libvirtd and virtlogd, runs every libFuzzer target
# for a bounded time (scripts/fuzz.sh), then runs every test.
#   sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/start-services.sh

jobs=$(nproc)
echo "== build (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_INTEGRATION=ON \
  -DKILN_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

echo "== build (ASan+UBSan unit tests)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON \
  -DKILN_INTEGRATION=OFF -DKILN_WERROR=ON >/dev/null
cmake --build build-asan -j"$jobs"

echo "== format check"
scripts/check-format.sh

echo "== unit tests under ASan+UBSan"
(cd build-asan && ctest -L unit --output-on-failure -j"$jobs")

echo "== fuzzing (every libFuzzer target, ${KILN_FUZZ_SECONDS:-20}s each)"
scripts/fuzz.sh

echo "== all tests (unit + integration against libvirtd, QEMU)"
(cd build && ctest --output-on-failure -j"$jobs")
