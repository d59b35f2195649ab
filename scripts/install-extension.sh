#!/usr/bin/env bash
# Builds the extension for one PostgreSQL server and installs it into that server's
# directories, and builds the sc-backup CLI (one binary for every major). The server is the
# one whose pg_config PG_CONFIG names, e.g. for PGDG's PostgreSQL 17 packages:
#   PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config bash scripts/install-extension.sh --release
# Default: pg_config on PATH, else Debian's PostgreSQL 15. `--release` for production builds
# (docker/), debug otherwise (tests). The server's headers must be installed (Debian/Ubuntu:
# postgresql-server-dev-<major>; RHEL: postgresql<major>-devel).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
version=$("$PG_CONFIG" --version 2>/dev/null) || {
  echo "install-extension: cannot run $PG_CONFIG; set PG_CONFIG to your server's pg_config" >&2
  exit 1
}
major=$(sed -E 's/^PostgreSQL ([0-9]+).*/\1/' <<<"$version")
case "$major" in
  15 | 16 | 17 | 18) ;;
  *)
    echo "install-extension: $PG_CONFIG is $version; sc_backup supports PostgreSQL 15, 16, 17 and 18" >&2
    exit 1
    ;;
esac
profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
(cd extension && cargo pgrx install --pg-config "$PG_CONFIG" "${profile[@]}" >/dev/null)
cargo build --quiet "${profile[@]}" -p sc-backup-cli --bin sc-backup
