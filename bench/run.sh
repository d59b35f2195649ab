#!/usr/bin/env bash
# Benchmarks sc_backup against cp, basic_archive, pg_basebackup and pgBackRest on this
# machine, in one run, and prints the comparison table (also written to
# target/bench/results.md and results.json). Separate from the tests; run as root.
#   bash bench/run.sh                 # the full run on PostgreSQL 15
#   bash bench/run.sh --quick         # small sizes, a few minutes: checks the harness
#   bash bench/run.sh --pg 15,18      # also WAL drain and backups on PostgreSQL 18
#   bash bench/run.sh --help          # every size and phase flag
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh
# The performance anchor, and the TLS terminator its S3 client needs in front of s3s-fs:
# only needed here.
bench_packages=()
command -v pgbackrest >/dev/null || bench_packages+=(pgbackrest)
command -v stunnel >/dev/null || bench_packages+=(stunnel4)
if ((${#bench_packages[@]})); then
  echo "bench: installing ${bench_packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${bench_packages[@]}" >/dev/null
fi
# The majors measured (--pg 15,18 or --pg=15,18; default 15): the release extension goes into each.
majors=15
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --pg) next=$((i + 1)); majors=${!next} ;;
    --pg=*) majors=${!i#--pg=} ;;
  esac
done
echo "bench: building release binaries and installing the release extension for PostgreSQL ${majors//,/, }"
for major in ${majors//,/ }; do
  PG_CONFIG=$(bash scripts/pg-config-for.sh "$major") bash scripts/install-extension.sh --release
done
cargo build --quiet --release -p sc-backup-bench
# Results go to target/bench unless --out says otherwise.
SC_BACKUP_BIN="$PWD/target/release/sc-backup" exec target/release/sc-backup-bench "$@"
