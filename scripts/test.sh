#!/usr/bin/env bash
# The whole test suite from a clean clone: installs the dependencies, builds kiln (with
# Debian's packaging flags), an ASan+UBSan build of the unit tests and a ThreadSanitizer build
# of the unit tests and kilnd, checks formatting and clang-tidy, starts libvirtd and virtlogd,
# runs every libFuzzer target for a bounded time (scripts/fuzz.sh), then every test, then the
# threaded integration tests again against the ThreadSanitizer kilnd.
#   sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/start-services.sh

jobs=$(nproc)
# The build the integration tests and benchmarks run is the one a Debian package would make:
# dpkg-buildflags' optimisation and hardening (fortify, stack protector, relro/now) and no
# CMake build type of its own, so a packager's build is known to compile cleanly and work.
echo "== build (Debian's packaging flags, dpkg-buildflags hardening=+all)"
eval "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
CXXFLAGS="$CXXFLAGS $CPPFLAGS" cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DKILN_INTEGRATION=ON -DKILN_WERROR=ON >/dev/null
unset CFLAGS CXXFLAGS CPPFLAGS LDFLAGS
cmake --build build -j"$jobs"

echo "== build (ASan+UBSan unit tests)"
# Line tables only (-g1) in the sanitizer builds: their reports keep file:line, and the builds
# spend less time writing debug information nobody reads.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-g1 \
  -DKILN_SANITIZE=ON -DKILN_INTEGRATION=OFF -DKILN_WERROR=ON >/dev/null
cmake --build build-asan -j"$jobs"

echo "== build (ThreadSanitizer: unit tests and kilnd)"
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" -DKILN_TSAN=ON -DKILN_INTEGRATION=OFF \
  -DKILN_WERROR=ON >/dev/null
cmake --build build-tsan -j"$jobs"

echo "== format check"
scripts/check-format.sh

echo "== clang-tidy (.clang-tidy's checks, the files changed since .ci/tidy-base)"
scripts/tidy.sh build --changed

echo "== unit tests under ASan+UBSan"
(cd build-asan && ctest -L unit --output-on-failure -j"$jobs")

# halt_on_error: a race fails the test that found it. The reports of kilnd processes (below)
# also go to files, which must not exist at the end.
tsan_options="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
echo "== unit tests under ThreadSanitizer"
(cd build-tsan && TSAN_OPTIONS="$tsan_options" ctest -L unit --output-on-failure -j"$jobs")

echo "== fuzzing (every libFuzzer target, ${KILN_FUZZ_SECONDS:-20}s each)"
scripts/fuzz.sh

echo "== all tests (unit + integration against libvirtd, QEMU)"
(cd build && ctest --output-on-failure -j"$jobs")

# The tests that drive kilnd's threads hardest (API workers, lifecycle jobs, the reconcile,
# libvirt's events, SIGHUP reloads, TLS), against the ThreadSanitizer build of kilnd.
echo "== integration tests against a ThreadSanitizer kilnd"
rm -f build-tsan/tsan-kilnd.*
(cd build && KILN_TEST_KILND="$PWD/../build-tsan/agent/kilnd" \
  TSAN_OPTIONS="$tsan_options log_path=$PWD/../build-tsan/tsan-kilnd" \
  ctest --output-on-failure -R "$(cat ../tests/tsan-integration.txt | paste -sd'|')")
if compgen -G "build-tsan/tsan-kilnd.*" >/dev/null; then
  echo "ThreadSanitizer reported races in kilnd:" >&2
  cat build-tsan/tsan-kilnd.* >&2
  exit 1
fi
