//! Threads inside a host process (PostgreSQL's backends, the archiver, background workers).

use std::io;
use std::thread::JoinHandle;

/// Runs `spawn` (which starts threads) with every signal blocked on the calling thread, then
/// restores the mask. Threads inherit the mask, so the ones started inside never receive a
/// signal: PostgreSQL's process-wide handlers touch its globals and set its latch, and the
/// kernel now delivers every signal to the host's own thread, where those handlers belong.
pub fn with_signals_blocked<T>(spawn: impl FnOnce() -> T) -> T {
    // Safety: plain POSIX signal-mask calls on the calling thread, restored before returning.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
        let spawned = spawn();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        spawned
    }
}

/// Spawns a named thread that never receives signals (see [`with_signals_blocked`]).
pub fn spawn_without_signals<T: Send + 'static>(
    name: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    with_signals_blocked(|| std::thread::Builder::new().name(name).spawn(body))
}
