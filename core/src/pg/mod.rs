//! PostgreSQL's own facts, as its documentation and source define them: WAL positions and
//! segment names, the data directory's layout, the archive status files, quoting for SQL and
//! connection strings, and which installed server binaries are of which major.

pub mod archive_status;
pub mod layout;
pub mod lsn;
pub mod quote;
pub mod server_binaries;
