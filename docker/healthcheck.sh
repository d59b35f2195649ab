#!/usr/bin/env bash
# The container's healthcheck: healthy when the server accepts connections and sc_health()
# finds every backup schedule and WAL archiving on time. Prints what is wrong (docker inspect
# and `docker compose ps` show it).
set -uo pipefail
# The role and database of the first start (compose sets PGUSER and PGDATABASE from them).
export PGUSER=${PGUSER:-${POSTGRES_USER:-postgres}}
export PGDATABASE=${PGDATABASE:-${POSTGRES_DB:-$PGUSER}}
if ! pg_isready -q; then
  echo "the server does not accept connections"
  exit 1
fi
problems=$(psql -X -A -t -q -v ON_ERROR_STOP=1 -c "SELECT check_name || ': ' || detail FROM sc_health() WHERE NOT healthy" 2>&1) || {
  echo "sc_health() failed: $problems"
  exit 1
}
if [ -n "$problems" ]; then
  echo "$problems"
  exit 1
fi
echo "healthy"
