//! Harness for integration tests against real PostgreSQL clusters.
//!
//! PostgreSQL refuses to run as root, and tests (like CI) usually run as root: clusters, the
//! archiver and `restore_command` therefore run as the `postgres` OS user (through `runuser`),
//! in directories under /tmp owned by it. Each cluster listens only on a Unix socket in its own
//! directory, so tests never compete for TCP ports.
//!
//! Needs the extension installed into the server (`cargo pgrx install`, as `.ci/run` does).
//!
//! One file per concern: `process` (the postgres OS user, the installation under test),
//! `files` (test directories), `cli` (the binary under test), `cluster` (clusters), `stores`
//! (S3 and GCS on loopback), `fault_proxy` (a TCP proxy that injects faults). Tests import
//! everything from here.

pub use postgres;

mod cli;
mod cluster;
pub mod fault_proxy;
mod files;
mod process;
mod stores;

pub use cli::*;
pub use cluster::*;
pub use files::*;
pub use process::*;
pub use stores::*;
