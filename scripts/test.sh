#!/usr/bin/env bash
# Runs every test: unit tests, the extension's #[pg_test]s, then the integration tests that
# start real PostgreSQL clusters (as the postgres OS user). Expects scripts/install-deps.sh
# to have run (`bash .ci/run` does both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

echo "== unit tests (core, cli)"
cargo test --locked -p sc-backup-core -p sc-backup-cli

echo "== #[pg_test] (extension, in a temporary cluster run by the postgres OS user)"
pgrx_data=/tmp/sc_backup_pgrx_test_data
rm -rf "$pgrx_data"
(cd extension && cargo pgrx test pg15 --runas postgres --pgdata "$pgrx_data")

echo "== integration tests (pg_test/, real clusters)"
bash scripts/install-extension.sh
cargo test --locked -p sc-backup-pg-test -- --test-threads=2
