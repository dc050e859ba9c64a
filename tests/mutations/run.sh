#!/usr/bin/env bash
# Proves that each invariant of the simulator catches a bug injected on
# purpose. Each patch here breaks one rule of the core; the simulator (and
# the scripted process tests) must then fail, naming the invariant in the
# patch's first line comment below. The patches are never applied to the
# shipped tree: each runs in a throwaway git worktree of HEAD.
#
#   tests/mutations/run.sh            all patches
#   tests/mutations/run.sh 3-...      one
#   SIM_SEEDS=4000 tests/mutations/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seeds=${SIM_SEEDS:-2000}
export CARGO_TARGET_DIR=$root/target/mutants
declare -A expect=(
  [1-term-reused]="invariant 1"
  [2-no-freshness-rule]="invariant 2"
  [3-config-written-without-cas]="invariant 3"
  [4-import-after-cp]="invariant 4"
  [5-second-import-in-flight]="invariant 5"
  [6-worker-never-reloads]="newest is"
)
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=($(ls tests/mutations/*.patch | xargs -n1 basename | sed 's/\.patch$//'))
tree=$(mktemp -d)
git worktree add --quiet --detach "$tree" HEAD || exit 2
trap 'git worktree remove --force "$tree"' EXIT
status=0
for name in "${patches[@]}"; do
  want=${expect[$name]:-invariant}
  (cd "$tree" && git checkout --quiet -- . && git apply "$root/tests/mutations/$name.patch") || { echo "$name: does not apply"; status=1; continue; }
  start=$(date +%s)
  out=$(cd "$tree" && SIM_SEEDS=$seeds cargo test --quiet --no-fail-fast -p fallback-config --test simulation --test process 2>&1)
  took=$(( $(date +%s) - start ))
  if grep -q "$want" <<<"$out"; then
    seed=$(grep -o 'seed [0-9]* failed' <<<"$out" | head -1)
    echo "$name: caught ($want${seed:+, $seed}) in ${took}s"
  else
    echo "$name: NOT caught (expected \"$want\")"; status=1
    tail -20 <<<"$out"
  fi
done
exit $status
