//! sc_backup's core: the repository format, storage backends and the streaming codec pipeline.
//!
//! Nothing here knows PostgreSQL's C API. The extension, the archive module and the CLI are
//! thin front ends over these functions.

pub mod archive_pipeline;
pub mod audit;
pub mod backup;
pub mod codec;
pub mod config;
pub mod container_env;
pub mod direct_write;
pub mod drill;
pub mod dump;
pub mod dump_copy_scan;
pub mod error;
pub mod extract;
pub mod health;
pub mod live;
pub mod lsn;
pub mod metrics;
pub mod metrics_server;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod sandbox;
pub mod schedule;
pub mod server_binaries;
pub mod storage;
pub mod threads;
pub mod verify_restore;
pub mod wal;
pub mod wal_prefetch;
pub mod wal_scan;

pub use config::{RawSettings, Settings};
pub use error::{Error, Result};
pub use repository::{ClusterIdentity, Repository};
