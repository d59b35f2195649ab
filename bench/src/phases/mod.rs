//! One file per phase of the benchmark, each an `impl Bench` block that measures and adds its
//! table.

mod backup;
mod drill;
mod dumps;
mod extract;
mod incremental;
mod repositories;
mod s3;
mod wal;
