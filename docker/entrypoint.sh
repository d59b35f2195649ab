#!/usr/bin/env bash
# The image's entrypoint. At every start (not only the first): turns the playbook's variables
# (POSTGRES_DB, BACKUP_STORAGE, COMPRESSION, HOURLY_BACKUP, ...) into sc_backup's settings with
# `sc-backup container-settings`, which stops the container with one line naming a bad
# variable. On the first start it also creates the cluster, the user and the database, like
# the official postgres image. Then it runs the server, or the command given
# (`docker compose run --rm postgres sc-backup list`).
set -euo pipefail

# The server of the image's major: Debian's package (15) or the relocatable build (16-18).
for BIN in "${SC_BACKUP_PG_BINDIR:-}" "/usr/lib/postgresql/$PG_MAJOR/bin" "/opt/sc_backup/postgresql/$PG_MAJOR/bin"; do
  [ -n "$BIN" ] && [ -x "$BIN/postgres" ] && break
done
# The rendered settings live outside PGDATA, so base backups never carry the secrets file.
CONF_DIR=${SC_BACKUP_CONF_DIR:-/etc/sc_backup}
# What the server includes and sc-backup reads (the image sets it too, for `exec`).
export SC_BACKUP_CONFIG_FILE=$CONF_DIR/sc_backup.conf
umask 0077

# The settings file (readable), the secrets file (0600) and the bootstrap's user and database.
bootstrap=$("${SC_BACKUP_CLI:-sc-backup}" container-settings --write "$CONF_DIR")
eval "$bootstrap"
# Secrets are in the 0600 file now: the server and its children do not need them in their
# environment, where a superuser's pg_read_file('/proc/self/environ') would find them.
unset POSTGRES_PASSWORD ENCRYPTION_KEY BACKUP_ENCRYPTION_KEY AWS_SECRET_ACCESS_KEY
export PGUSER=$SC_BACKUP_BOOTSTRAP_USER PGDATABASE=$SC_BACKUP_BOOTSTRAP_DATABASE

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=$CONF_DIR/bootstrap-password
  if [ -f "$password_file" ]; then
    host_auth=scram-sha-256
    initdb_password=(--pwfile="$password_file")
  else
    # No password: only connections inside the container (the socket) are accepted.
    echo "sc_backup: POSTGRES_PASSWORD is not set: connections over TCP are refused (set it and recreate the volume to allow them)" >&2
    host_auth=reject
    initdb_password=()
  fi
  "$BIN/initdb" -D "$PGDATA" -U "$SC_BACKUP_BOOTSTRAP_USER" "${initdb_password[@]}" \
    --auth-local=trust --auth-host="$host_auth" >/dev/null
  {
    echo "listen_addresses = '*'"
    echo "shared_preload_libraries = 'sc_backup'"
    echo "include '$SC_BACKUP_CONFIG_FILE'"
  } >>"$PGDATA/postgresql.conf"
  # initdb's host lines cover loopback only; clients come through the container's network
  # (the official image adds the same line).
  echo "host all all all $host_auth" >>"$PGDATA/pg_hba.conf"
  # The database and the extension, on a private socket only, then stopped.
  socket=$(mktemp -d)
  # Without the library preloaded: no archiving, no scheduler looking for the database yet.
  "$BIN/pg_ctl" -D "$PGDATA" -w -s -l "$socket/bootstrap.log" \
    -o "-c listen_addresses='' -c unix_socket_directories='$socket' -c archive_mode=off -c shared_preload_libraries=''" start
  if [ "$SC_BACKUP_BOOTSTRAP_DATABASE" != postgres ] && [ "$SC_BACKUP_BOOTSTRAP_DATABASE" != template1 ]; then
    # Through stdin: psql quotes :"db" there, not in -c.
    echo 'CREATE DATABASE :"db"' | "$BIN/psql" -h "$socket" -d postgres -X -q -v ON_ERROR_STOP=1 \
      -v db="$SC_BACKUP_BOOTSTRAP_DATABASE"
  fi
  "$BIN/psql" -h "$socket" -d "$SC_BACKUP_BOOTSTRAP_DATABASE" -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION sc_backup'
  "$BIN/pg_ctl" -D "$PGDATA" -w -s -m fast stop
  rm -rf "$socket"
fi
# Only initdb reads it, and only once.
rm -f "$CONF_DIR/bootstrap-password"

if [ $# -gt 0 ] && [ "$1" != postgres ]; then
  exec "$@"
fi
[ "${1:-}" = postgres ] && shift
exec "$BIN/postgres" -D "$PGDATA" "$@"
