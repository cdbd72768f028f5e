#!/usr/bin/env bash
# Builds kiln's libFuzzer targets (clang, ASan+UBSan) in build-fuzz and runs each for a bounded
# time, starting from its seed corpus. Fails when any target finds a crash, a leak, a sanitizer
# report, a timeout or runs out of memory; prints executions, exec/s and coverage per target.
#
#   scripts/fuzz.sh                 every target (any executable named *_fuzz), 20 s each
#   scripts/fuzz.sh config flavors  only these (by stem: kiln_<stem>_fuzz or <stem>_fuzz)
#
# Environment:
#   KILN_FUZZ_SECONDS     run time per target (default 20)
#   KILN_FUZZ_BUILD       build directory (default build-fuzz)
#   KILN_FUZZ_SKIP_BUILD  1: use the targets already built (several runs in parallel)
#   KILN_FUZZ_ARGS        extra libFuzzer flags, e.g. "-max_len=65536"
#
# A target <stem>_fuzz.cc lives in some <dir>/fuzz/; its seeds are <dir>/fuzz/<stem>_corpus/ and
# its dictionary <dir>/fuzz/<stem>.dict (both optional). What a run adds to the corpus stays in
# the build directory; a crash is written to <build>/fuzz-artifacts/<stem>-crash-* and can be
# replayed with `<build>/.../kiln_<stem>_fuzz <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${KILN_FUZZ_SECONDS:-20}
build=${KILN_FUZZ_BUILD:-build-fuzz}
extra=(${KILN_FUZZ_ARGS:-})

if [[ ${KILN_FUZZ_SKIP_BUILD:-0} != 1 ]]; then
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  echo "== configure $build (clang, KILN_FUZZ=ON)"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DKILN_FUZZ=ON \
    -DKILN_INTEGRATION=OFF -DKILN_WERROR=ON "${launcher[@]}" >/dev/null
fi

# Every target whose name ends in _fuzz, whichever module registered it.
mapfile -t all_targets < <(cmake --build "$build" --target help |
  sed -n 's/^\([A-Za-z0-9_]*_fuzz\): phony$/\1/p' | sort -u)
if [[ ${#all_targets[@]} -eq 0 ]]; then
  echo "no *_fuzz targets in $build" >&2
  exit 1
fi

stem_of() {
  local t=${1#kiln_}
  echo "${t%_fuzz}"
}

targets=()
if [[ $# -gt 0 ]]; then
  for want in "$@"; do
    found=""
    for t in "${all_targets[@]}"; do
      [[ $(stem_of "$t") == "$want" || $t == "$want" ]] && found=$t
    done
    [[ -n $found ]] || { echo "no fuzz target '$want' (have: ${all_targets[*]})" >&2; exit 1; }
    targets+=("$found")
  done
else
  targets=("${all_targets[@]}")
fi

if [[ ${KILN_FUZZ_SKIP_BUILD:-0} != 1 ]]; then
  echo "== build ${targets[*]}"
  cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
fi

mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
failed=()
summary=()
for target in "${targets[@]}"; do
  stem=$(stem_of "$target")
  binary=$(find "$build" -type f -executable -name "$target" | head -n1)
  source=$(find . -path ./build\* -prune -o -path "*/fuzz/${stem}_fuzz.cc" -print | head -n1)
  work="$build/fuzz-corpus/$stem"
  mkdir -p "$work"
  args=(-max_total_time="$seconds" -rss_limit_mb=1024 -timeout=5 -print_final_stats=1
    -artifact_prefix="$build/fuzz-artifacts/$stem-")
  dirs=("$work")
  if [[ -n $source ]]; then
    dir=$(dirname "$source")
    [[ -f $dir/$stem.dict ]] && args+=(-dict="$dir/$stem.dict")
    [[ -d $dir/${stem}_corpus ]] && dirs+=("$dir/${stem}_corpus")
  fi
  log="$build/fuzz-logs/$stem.log"
  echo "== fuzz $target for ${seconds}s (${dirs[*]})"
  status=0
  "$binary" "${args[@]}" "${extra[@]}" "${dirs[@]}" >"$log" 2>&1 || status=$?
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n1; }
  done_line=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$done_line")
  line=$(printf '%-28s execs %-10s exec/s %-7s cov %-6s ft %-6s corpus %-12s rss %sMB' \
    "$target" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "$(stat peak_rss_mb)")
  if [[ $status -ne 0 ]]; then
    echo "FAILED (exit $status): $target; the end of $log:"
    tail -n 60 "$log"
    failed+=("$target")
    line+="  FAILED"
  fi
  echo "$line"
  summary+=("$line")
done

echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found problems in: ${failed[*]} (inputs in $build/fuzz-artifacts/)" >&2
  exit 1
fi
