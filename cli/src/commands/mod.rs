pub mod expire;
pub mod list;
pub mod restore;
pub mod verify;
pub mod wal_fetch;
