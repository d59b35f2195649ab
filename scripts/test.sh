#!/usr/bin/env bash
# Runs every test: unit tests, the extension's #[pg_test]s on every major, then the
# integration tests that start real PostgreSQL clusters (as the postgres OS user): all of them
# on PostgreSQL 18 (the image sc_backup:18 is built first, for the container test), and the
# cross-version subset below on 15, 16 and 17 (one process per test, three at a time, through
# scripts/parallel-tests.sh; one kill -9 round per target instead of three), which keeps CI
# within its time budget. Expects
# scripts/install-deps.sh to have run (`bash .ci/run` does both).
#
#   SC_BACKUP_PG_MAJORS="17" bash scripts/test.sh               # only 17 (the whole suite)
#   SC_BACKUP_FULL_SUITE_MAJORS="15 17" bash scripts/test.sh    # the whole suite on these
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

MAJORS=(${SC_BACKUP_PG_MAJORS:-15 16 17 18})
# The whole suite on the newest major asked for (SC_BACKUP_PG_MAJORS="17" runs it on 17).
FULL_SUITE_MAJORS=" ${SC_BACKUP_FULL_SUITE_MAJORS:-${MAJORS[-1]}} "
for major in $FULL_SUITE_MAJORS; do
  if [[ " ${MAJORS[*]} " != *" $major "* ]]; then
    echo "test.sh: SC_BACKUP_FULL_SUITE_MAJORS names $major, which SC_BACKUP_PG_MAJORS (${MAJORS[*]}) leaves out" >&2
    exit 2
  fi
done
# Fewer trials or samples than these would check nothing (the tests refuse them too).
if ((${SC_BACKUP_FAULT_TRIALS:-1} < 1)) || ((${SC_BACKUP_FAULT_SAMPLES:-18} < 18)); then
  echo "test.sh: SC_BACKUP_FAULT_TRIALS must be at least 1 and SC_BACKUP_FAULT_SAMPLES at least 18" >&2
  exit 2
fi
# What differs between majors is exercised by these on every major: the archive module's ABI
# and lifecycle, archive + wal-fetch, sc_backup() under pgbench and an exact PITR restore,
# sc_verify() and corruption, what the server does with wal-fetch's exit statuses (a damaged
# segment and an outage stop recovery, a standby survives), recovery to a time, an LSN and
# consistency (xid and name targets on 18 only), kill -9 of the
# archiver, postmaster and backup backend, the security checks, the WAL scanner against
# pg_waldump, and the sandbox (a table extracted under load; a restore test naming a damaged
# page; a drill and the scheduler worker running its restore test and its logical dumps,
# which is the scheduler's start on that major), which starts the server of the backup's own
# major, and that major's pg_dump behind sc_dump() (an encrypted dump, opened with the stock
# tools and restored). The scheduler's
# long test (retries, expiry, metrics, shutdown: 90 s) is version-independent above the worker
# and runs on 18, as do the several-repositories tests (the catch-up is the worker's thread
# and core's copies; what PostgreSQL sees is repository 1's archiving, tested on every major).
CROSS_VERSION_TESTS=(
  # The longest first (scripts/parallel-tests.sh runs them in this order, three at a time).
  kill_9_of_archiver_postmaster_and_backup_backend_loses_nothing
  a_chain_restores_each_backup_and_a_point_between_them_exactly
  an_archive_command_left_beside_archive_library_is_explained
  pitr_drill_under_pgbench_load_recovers_exactly_the_target_state
  drill_measures_rto_and_rpo_and_the_scheduler_runs_restore_tests_and_dumps
  archive_module_starts_archives_and_stops_through_this_majors_abi
  restore_needs_the_server_of_the_backups_own_major
  archived_segments_come_back_byte_identical_and_corruption_is_caught
  verify_reports_corruption_and_missing_wal_and_restore_refuses_corrupt_files
  point_in_time_recovery_replays_archived_wal_up_to_the_target
  secrets_stay_hidden_and_functions_need_the_operator_role
  the_newest_archived_transaction_is_what_pg_waldump_reads
  a_table_deleted_under_load_comes_back_as_it_was_in_a_new_schema
  restore_test_passes_a_good_backup_and_names_a_page_damaged_before_the_backup
  an_encrypted_dump_opens_with_the_stock_age_zstd_and_sha256sum
  a_dump_runs_no_meta_command_and_never_leaves_half_a_database
  recovery_reads_ahead_through_the_spool_and_never_trusts_a_bad_copy
  a_damaged_segment_stops_recovery_instead_of_ending_it_early
  an_object_store_outage_stops_recovery_and_spares_a_standby
)

# The whole suite's longest tests, started first.
FULL_SUITE_FIRST=(
  object_store_faults_lose_nothing_and_accept_nothing_truncated
  the_image_runs_the_playbooks_three_configurations_and_restores_inside_the_container
  kill_9_of_archiver_postmaster_and_backup_backend_loses_nothing
  scheduled_backups_retries_expiry_audit_metrics_and_shutdown
  the_entrypoint_runs_the_playbooks_configuration_and_applies_changes_at_restart
  pitr_drill_on_s3
  an_s3_outage_of_the_offsite_repository_never_holds_back_archiving
  drill_measures_rto_and_rpo_and_the_scheduler_runs_restore_tests_and_dumps
  a_chain_restores_each_backup_and_a_point_between_them_exactly
)

phase() { echo "== $(date -u +%H:%M:%S) $*"; }

phase "unit tests (core, cli)"
cargo test --locked -p sc-backup-core -p sc-backup-cli

for major in "${MAJORS[@]}"; do
  phase "#[pg_test] on PostgreSQL $major (extension, in a temporary cluster run by the postgres OS user)"
  pgrx_data=/tmp/sc_backup_pgrx_test_data_$major
  rm -rf "$pgrx_data"
  (cd extension && cargo pgrx test "pg$major" --runas postgres --pgdata "$pgrx_data")
  rm -rf "$pgrx_data"
done

for major in "${MAJORS[@]}"; do
  pg_config=$(bash scripts/pg-config-for.sh "$major")
  phase "building and installing the extension for PostgreSQL $major"
  PG_CONFIG=$pg_config bash scripts/install-extension.sh
  if [[ $FULL_SUITE_MAJORS == *" $major "* ]]; then
    # The image the container test runs: this build, packaged (debug: reuses the build above),
    # on a base image made with debootstrap once per machine (no registry is reachable here).
    phase "building the image sc_backup:$major (podman)"
    BASE_IMAGE=${BASE_IMAGE:-local} SC_BACKUP_BUILD=debug bash docker/build-image.sh "$major"
    phase "integration tests on PostgreSQL $major: all (pg_test/, real clusters)"
    filters=()
    trials=${SC_BACKUP_FAULT_TRIALS:-3}
  else
    phase "integration tests on PostgreSQL $major: the cross-version subset"
    filters=("${CROSS_VERSION_TESTS[@]}")
    trials=${SC_BACKUP_FAULT_TRIALS:-1}
  fi
  started=$SECONDS
  if ((${#filters[@]})); then
    # One process per test, three at a time: the subset is one or two tests per binary.
    PG_CONFIG=$pg_config SC_BACKUP_FAULT_TRIALS=$trials \
      bash scripts/parallel-tests.sh "${filters[@]}"
  else
    # Two at a time, as `cargo test --test-threads=2` ran them, without waiting for each
    # binary's last test before starting the next binary's.
    PG_CONFIG=$pg_config SC_BACKUP_FAULT_TRIALS=$trials SC_BACKUP_TEST_JOBS=2 \
      bash scripts/parallel-tests.sh --all "${FULL_SUITE_FIRST[@]}"
  fi
  phase "PostgreSQL $major: integration tests took $((SECONDS - started)) s"
done
