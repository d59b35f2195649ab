//! The integration tests: one binary, a module per area (one binary links the world once;
//! nineteen took 25.6 s to build from a clean pg_test against 10.8 s for one, on the CI
//! machine kind). scripts/parallel-tests.sh runs each test in its own process.

mod alerts;
mod archive_end;
mod backup_restore;
mod container;
mod container_image;
mod dump_across_majors;
mod extract;
mod faults;
mod incremental;
mod logical_dump;
mod object_storage;
mod recovery;
mod repositories;
mod restore_test;
mod scheduler;
mod security_and_input;
mod storage_conformance;
mod versions;
mod wal_archive;
mod wal_prefetch;
