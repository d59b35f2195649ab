//! Helpers every room may use, knowing nothing of backups or PostgreSQL: times and sizes as
//! people write them, the host's name, threads that leave signals to the main thread, and
//! writes that bypass the page cache.

pub mod bytes;
pub mod direct_write;
pub mod host;
pub mod threads;
pub mod time;
