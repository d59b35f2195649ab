//! Ctrl-C and SIGTERM during long commands (restore into a sandbox, extract, drill): the first
//! one sets a flag that every step checks, so the command stops its children, removes its
//! sandbox and exits with "interrupted"; a second one exits at once (a sandbox server then
//! dies with us, by its parent-death signal, and its directory is swept by the next run).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Installs the handlers and returns the flag they set.
pub fn install() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so that it sees the flag before the second handler sets it.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag));
        let _ = signal_hook::flag::register(signal, Arc::clone(&flag));
    }
    flag
}
