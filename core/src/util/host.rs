//! This machine, as records name it.

/// The kernel's host name (`unknown` when it cannot be read): the host a backup, a dump or an
/// audit record came from.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
