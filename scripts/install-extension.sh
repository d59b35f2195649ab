#!/usr/bin/env bash
# Builds the extension and installs it into the PostgreSQL server's directories, and builds the
# sc-backup CLI. `--release` for production builds (docker/), debug otherwise (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
(cd extension && cargo pgrx install --pg-config "$PG_CONFIG" "${profile[@]}" >/dev/null)
cargo build --quiet "${profile[@]}" -p sc-backup-cli --bin sc-backup
