#!/usr/bin/env bash
# Prints the pg_config of PostgreSQL <major> as scripts/install-deps.sh installs it: Debian's
# package for 15, /opt/sc_backup/postgresql/<major> for 16, 17 and 18.
set -euo pipefail
case "${1:-}" in
  15) echo /usr/lib/postgresql/15/bin/pg_config ;;
  16 | 17 | 18) echo "/opt/sc_backup/postgresql/$1/bin/pg_config" ;;
  *)
    echo "pg-config-for: PostgreSQL \"${1:-}\" is not one of 15, 16, 17, 18" >&2
    exit 1
    ;;
esac
