#!/usr/bin/env bash
# The main job on the embedded default: a throwaway PostgreSQL 15 cluster archives its WAL
# into a local repository through sc_backup (zstd, age encryption) and takes a base backup
# with SELECT sc_backup(); `sc-backup extract` brings one table back as of a target time into
# a new schema of the running cluster; then `sc-backup restore --target-time` brings the
# backup back on a second cluster, which replays WAL from the repository up to the target. Everything lives
# under $DEMO_DIR (default /tmp/sc_backup_demo) and is removed at the start of the next run.
# Run as root on Debian bookworm, or as a user who can run PostgreSQL directly.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

DEMO_DIR=${DEMO_DIR:-/tmp/sc_backup_demo}
BIN=/usr/lib/postgresql/15/bin

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_at() { as_pg psql -h "$DEMO_DIR/$1.sock" -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq -c "$2"; }

if [ "$(id -u)" = 0 ]; then
  step "installing what is missing"
  bash scripts/install-deps.sh
fi
step "building and installing the extension and the CLI"
bash scripts/install-extension.sh

for cluster in primary restored; do
  [ -f "$DEMO_DIR/$cluster/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/$cluster" -m immediate stop >/dev/null 2>&1 || true
done
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"/{repo,primary.sock,restored.sock}
install -m 0755 target/debug/sc-backup "$DEMO_DIR/sc-backup"
[ "$(id -u)" = 0 ] && chown -R postgres "$DEMO_DIR"
chmod 0700 "$DEMO_DIR/repo"

step "a throwaway cluster archiving into $DEMO_DIR/repo"
as_pg "$BIN/initdb" -D "$DEMO_DIR/primary" -A trust -U postgres >/dev/null
cat >>"$DEMO_DIR/primary/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$DEMO_DIR/primary.sock'
shared_preload_libraries = 'sc_backup'
archive_mode = on
archive_library = 'sc_backup'
sc_backup.repository = '$DEMO_DIR/repo'
sc_backup.compression = zstd
sc_backup.encryption = age
sc_backup.encryption_passphrase = 'demo passphrase, use a long random one'
EOF
as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/primary" -l "$DEMO_DIR/primary.log" -w start >/dev/null
as_pg pgbench -h "$DEMO_DIR/primary.sock" -U postgres -i -s 5 -q postgres 2>/dev/null

step "base backup: SELECT sc_backup()"
psql_at primary "CREATE EXTENSION sc_backup"
as_pg psql -h "$DEMO_DIR/primary.sock" -U postgres -d postgres -X -c "SELECT * FROM sc_backup()"

step "load, then a target time, then more load"
as_pg pgbench -h "$DEMO_DIR/primary.sock" -U postgres -T 5 -c 2 postgres >/dev/null 2>&1
target=$(psql_at primary "SELECT clock_timestamp()")
expected=$(psql_at primary "SELECT sum(abalance) FROM pgbench_accounts")
sleep 1
as_pg pgbench -h "$DEMO_DIR/primary.sock" -U postgres -T 5 -c 2 postgres >/dev/null 2>&1
last=$(psql_at primary "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 300); do
  archived=$(psql_at primary "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
  [[ "$archived" > "$last" || "$archived" == "$last" ]] && break
  sleep 0.2
done
psql_at primary "SELECT 'archived ' || archived_count || ' WAL files, ' || failed_count || ' failures' FROM pg_stat_archiver"
echo "repository: $(find "$DEMO_DIR/repo/wal" -type f | wc -l) objects, $(du -sh "$DEMO_DIR/repo" | cut -f1)"

step "table-level recovery into the running cluster: sc-backup extract (as of $target)"
# The table as it was at the target, restored and replayed in a throwaway sandbox (private
# socket, no port, removed at the end), copied into a new schema of the live cluster.
as_pg "$DEMO_DIR/sc-backup" -D "$DEMO_DIR/primary" extract --database postgres \
  --table public.pgbench_accounts --target-time "$target" --into-schema recovered \
  --sandbox-dir "$DEMO_DIR" --dbname "host=$DEMO_DIR/primary.sock user=postgres dbname=postgres"
extracted=$(psql_at primary "SELECT sum(abalance) FROM recovered.pgbench_accounts")
if [ "$extracted" != "$expected" ]; then
  step "FAILED: sum(abalance) at the target was $expected, the extracted table has $extracted"
  exit 1
fi
echo "recovered.pgbench_accounts: sum(abalance) = $extracted, as at the target"
as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/primary" -m fast -w stop >/dev/null

as_pg env SC_BACKUP_REPOSITORY="$DEMO_DIR/repo" "$DEMO_DIR/sc-backup" list

step "point-in-time recovery to $target: sc-backup restore, then start the server"
# In a real loss the primary's configuration is gone: the repository and the passphrase come
# from the environment (or flags). --archive-mode off: this copy must not archive a timeline.
as_pg env SC_BACKUP_REPOSITORY="$DEMO_DIR/repo" \
  SC_BACKUP_ENCRYPTION_PASSPHRASE='demo passphrase, use a long random one' \
  "$DEMO_DIR/sc-backup" restore --pgdata "$DEMO_DIR/restored" \
  --target-time "$target" --target-action promote --archive-mode off
echo "unix_socket_directories = '$DEMO_DIR/restored.sock'" >>"$DEMO_DIR/restored/postgresql.conf"
as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/restored" -l "$DEMO_DIR/restored.log" -w -t 300 start >/dev/null
for _ in $(seq 1 300); do
  [ "$(psql_at restored "SELECT pg_is_in_recovery()")" = f ] && break
  sleep 0.2
done
got=$(psql_at restored "SELECT sum(abalance) FROM pgbench_accounts")
as_pg "$BIN/pg_ctl" -D "$DEMO_DIR/restored" -m fast -w stop >/dev/null
grep -E "recovery stopping|restored log file" "$DEMO_DIR/restored.log" | tail -n 3
if [ "$got" = "$expected" ]; then
  step "OK: sum(abalance) at the target was $expected, the restored cluster has $got"
else
  step "FAILED: sum(abalance) at the target was $expected, the restored cluster has $got"
  exit 1
fi
