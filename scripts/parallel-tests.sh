#!/usr/bin/env bash
# Runs the integration tests (pg_test/) named on the command line, in that order, each in its
# own process, SC_BACKUP_TEST_JOBS at a time (default 3); with --all, every other test after
# them. Most tests spend their time waiting on PostgreSQL (a checkpoint, a scheduler tick, the
# next minute of a cron rule) rather than on a core, and `cargo test` runs test binaries one
# after another, so a binary with one or two tests left the machine mostly idle. Name the
# longest first: the run ends when the last one started does. Prints each test's outcome as it
# ends and the whole output of a failed one; exits non-zero if a test failed or a name matched
# no test. The environment (PG_CONFIG, SC_BACKUP_FAULT_TRIALS...) passes through to the tests.
#
#   PG_CONFIG=... bash scripts/parallel-tests.sh archived_segments_come_back_byte_identical_and_corruption_is_caught ...
#   PG_CONFIG=... SC_BACKUP_TEST_JOBS=2 bash scripts/parallel-tests.sh --all pitr_drill_on_s3
#   bash scripts/parallel-tests.sh --list --all     # the order they would run in
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
all=false list_only=false
while [[ ${1:-} == --* ]]; do
  case $1 in
    --all) all=true ;;
    --list) list_only=true ;; # print the tests in the order they would run, run nothing
    *) echo "parallel-tests: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
(($# > 0)) || $all || { echo "parallel-tests: name the tests to run, or --all" >&2; exit 2; }
jobs=${SC_BACKUP_TEST_JOBS:-3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Build once: the test binaries, and the CLI every test process would otherwise build itself.
if ! cargo test --locked -p sc-backup-pg-test --no-run --message-format=json-render-diagnostics \
  >"$work/build.json"; then
  echo "parallel-tests: the tests did not build" >&2
  exit 1
fi
cargo build --locked --quiet -p sc-backup-cli --bin sc-backup
export SC_BACKUP_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/sc-backup"
mapfile -t executables < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test
  and .executable != null) | .executable' "$work/build.json")

# "executable name" per wanted test. Tests are named as the binary lists them (`area::test`);
# on the command line the bare name is enough.
for executable in "${executables[@]}"; do
  "$executable" --list --format terse 2>/dev/null | sed -n 's/: test$//p' |
    while read -r name; do echo "$executable $name"; done
done >"$work/all"
missing=0
for name in "$@"; do
  if ! grep -Eq "[ :]$name\$" "$work/all"; then
    echo "parallel-tests: no test is named $name" >&2
    missing=1
  fi
  grep -E "[ :]$name\$" "$work/all" >>"$work/wanted" || true
done
((missing == 0)) || exit 1
if $all; then
  touch "$work/wanted"
  grep -vxF -f "$work/wanted" "$work/all" >"$work/others" || true
  cat "$work/others" >>"$work/wanted"
fi

if $list_only; then
  sed 's/^[^ ]* //' "$work/wanted"
  exit 0
fi

run_one() {
  local executable=$1 name=$2 started=$SECONDS outcome=ok
  local log="$WORK/$name.log"
  # As cargo test does: in the package's directory.
  if ! (cd pg_test && "$executable" --exact "$name" --test-threads=1) >"$log" 2>&1; then
    outcome=FAILED
    touch "$WORK/failed"
  elif ! grep -q "^test result: ok. 1 passed" "$log"; then
    # It did not run (marked #[ignore], say): not a pass.
    outcome="FAILED (did not run)"
    touch "$WORK/failed"
  fi
  {
    flock 9
    echo "test $name ... $outcome ($((SECONDS - started)) s)"
    if [[ $outcome == FAILED* ]]; then sed 's/^/    /' "$log"; fi
  } 9>"$WORK/print.lock"
}
export -f run_one
export WORK="$work"

started=$SECONDS
count=$(wc -l <"$work/wanted")
echo "running $count tests, $jobs at a time"
xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _ <"$work/wanted" || true
if [[ -e $work/failed ]]; then
  echo "test result: FAILED (see above), $((SECONDS - started)) s"
  exit 1
fi
echo "test result: ok. $count passed in $((SECONDS - started)) s"
