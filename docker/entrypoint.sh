#!/usr/bin/env bash
# Initializes the cluster on first start, includes sc_backup.conf, then runs the server.
set -euo pipefail
# The server of the image's major: Debian's package (15) or the relocatable build (16-18).
for BIN in "/usr/lib/postgresql/$PG_MAJOR/bin" "/opt/sc_backup/postgresql/$PG_MAJOR/bin"; do
  [ -x "$BIN/postgres" ] && break
done
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  "$BIN/initdb" -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  echo "include '/etc/postgresql/sc_backup.conf'" >> "$PGDATA/postgresql.conf"
  if [ -n "${SC_BACKUP_ENCRYPTION_PASSPHRASE:-}" ]; then
    {
      echo "sc_backup.encryption = 'age'"
      printf "sc_backup.encryption_passphrase = '%s'\n" "${SC_BACKUP_ENCRYPTION_PASSPHRASE//\'/\'\'}"
    } >> "$PGDATA/postgresql.auto.conf"
  fi
fi
exec "$BIN/postgres" -D "$PGDATA"
