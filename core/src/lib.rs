//! sc_backup's core: the repository format, storage backends and the streaming codec pipeline.
//!
//! Nothing here knows PostgreSQL's C API. The extension, the archive module and the CLI are
//! thin front ends over these functions. docs/design.md maps the folders and what each may
//! import.

pub mod backup;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod dump;
pub mod error;
pub mod ops;
pub mod pg;
pub mod repository;
pub mod restore;
pub mod sandbox;
pub mod storage;
pub mod util;
pub mod wal;

pub use config::{RawSettings, Settings};
pub use error::{Error, Result};
pub use repository::{ClusterIdentity, Repository};
