//! Keeping a repository in order over time: retention and expiry, deletion, the schedule, health,
//! metrics and the audit trail. Every front end (SQL, the scheduler, the CLI) calls these.

pub mod audit;
pub mod catch_up;
pub mod health;
pub mod maintenance;
pub mod metrics;
pub mod metrics_server;
pub mod retention;
pub mod schedule;
