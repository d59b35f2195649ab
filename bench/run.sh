#!/usr/bin/env bash
# Benchmarks sc_backup against cp, basic_archive, pg_basebackup and pgBackRest on this
# machine, in one run, and prints the comparison table (also written to
# target/bench/results.md and results.json). Separate from the tests; run as root.
#   bash bench/run.sh                 # the full run (about 20 minutes on 2 cores)
#   bash bench/run.sh --quick         # small sizes, a few minutes: checks the harness
#   bash bench/run.sh --help          # every size and phase flag
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh
# The performance anchor, only needed here.
if ! command -v pgbackrest >/dev/null; then
  echo "bench: installing pgbackrest"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbackrest >/dev/null
fi
echo "bench: building release binaries and installing the release extension"
bash scripts/install-extension.sh --release
cargo build --quiet --release -p sc-backup-bench
# Results go to target/bench unless --out says otherwise.
SC_BACKUP_BIN="$PWD/target/release/sc-backup" exec target/release/sc-backup-bench "$@"
