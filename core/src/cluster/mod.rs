//! The running cluster we serve: SQL sessions through its own psql (to list databases, copy a
//! table in, run pg_dump against it).

pub mod live;
