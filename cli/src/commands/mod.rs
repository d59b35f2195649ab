pub mod wal_fetch;
