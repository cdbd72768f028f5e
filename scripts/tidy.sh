#!/usr/bin/env bash
# Runs clang-tidy (the checks in .clang-tidy) over kiln's sources, using a build directory's
# compile_commands.json. Fails on any finding.
#
#   scripts/tidy.sh BUILD_DIR --all          every .cc file (about 15 s of CPU each: ~25 min on
#                                           2 cores; run it before moving .ci/tidy-base)
#   scripts/tidy.sh BUILD_DIR --changed      the .cc files changed since the commit in
#                                           .ci/tidy-base (and those beside a changed header),
#                                           what CI runs
#   scripts/tidy.sh BUILD_DIR FILE...        these files
#
# Environment: KILN_TIDY_JOBS  parallel clang-tidy processes (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

(($# >= 2)) || { sed -n '2,12p' "$0" >&2; exit 2; }
build=$1
shift
[[ -f $build/compile_commands.json ]] ||
  { echo "tidy: no $build/compile_commands.json (configure $build first)" >&2; exit 1; }

# The libFuzzer harnesses are compiled by clang with flags a GCC database does not carry.
sources() { grep '\.cc$' | grep -v '/fuzz/' | while read -r f; do [[ -f $f ]] && echo "$f"; done; }

case $1 in
  --all) mapfile -t files < <(git ls-files '*.cc' | sources) ;;
  --changed)
    base=$(cat .ci/tidy-base)
    git cat-file -e "$base^{commit}" 2>/dev/null ||
      { echo "tidy: .ci/tidy-base names '$base', not a commit of this clone" >&2; exit 1; }
    changed=$(git diff --name-only "$base" -- '*.cc' '*.h')
    # A changed header is checked through the .cc file beside it.
    mapfile -t files < <({ echo "$changed"; sed -n 's/\.h$/.cc/p' <<<"$changed"; } | sort -u |
      sources)
    echo "tidy: ${#files[@]} files changed since $(git log -1 --format='%h (%cs)' "$base")"
    ;;
  *) files=("$@") ;;
esac
((${#files[@]} > 0)) || { echo "tidy: nothing to check"; exit 0; }

jobs=${KILN_TIDY_JOBS:-$(nproc)}
start=$(date +%s)
log="$build/tidy.log"
# One clang-tidy per file (the first compile command for it: some files are compiled twice, for
# kilnd-failpoints). WarningsAsErrors in .clang-tidy makes a finding a non-zero exit.
status=0
printf '%s\n' "${files[@]}" |
  xargs -P "$jobs" -n 1 clang-tidy --quiet -p "$build" >"$log" 2>&1 || status=$?
grep -E '^[^ ]+:[0-9]+:[0-9]+: (error|warning):' "$log" | sort -u || true
echo "tidy: ${#files[@]} files in $(($(date +%s) - start)) s"
if ((status != 0)); then
  echo "tidy: findings above (full log: $log)" >&2
  exit 1
fi
