//! The scheduler worker's catch-up thread: copies into repositories 2 to 4 the WAL and the
//! backups they lack from repository 1, and applies their retention
//! (`sc_backup_core::ops::catch_up`), every [`CATCH_UP_EVERY`] and as soon as the settings
//! change. It never calls PostgreSQL: the worker's main loop hands it the
//! settings it read and logs what it reports (a repository failing, then catching up again).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sc_backup_core::config::repositories::RepositoryNumber;
use sc_backup_core::ops::catch_up::{catch_up_pass, write_state, RepositoryLag, STATE_FILE};
use sc_backup_core::{Repository, Settings};

/// Between passes. A further repository's WAL trails repository 1's by at most this, plus the
/// time to copy, while it is reachable.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(10);
/// Between two warnings about the same repository still failing.
const REMIND_EVERY: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Shared {
    /// The repositories as last configured; `None` until the worker read them.
    settings: Option<Vec<(RepositoryNumber, Settings)>>,
    /// Each further repository's state after the last pass.
    lags: Vec<RepositoryLag>,
    /// Set with new settings: the thread runs a pass now.
    changed: bool,
    /// The role the worker runs as: audit records of backups copied and expiries name it.
    user: String,
    /// Passes completed: what a pass copied or expired is said once.
    passes: u64,
}

pub struct CatchUp {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    /// Each repository the main loop reported on, and when it last warned that it fails
    /// (`None`: it said the repository is caught up).
    said: Vec<(RepositoryNumber, Option<Instant>)>,
    /// The pass whose copies and expiries were last said.
    said_pass: u64,
}

impl CatchUp {
    /// Starts the thread; it leaves each pass's outcome in `data`'s state file
    /// (`sc_backup_core::ops::catch_up::STATE_FILE`) for `sc_status()` and `sc_health()`.
    pub fn start(data: std::path::PathBuf) -> CatchUp {
        let shared: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let for_thread = Arc::clone(&shared);
        // The thread blocks no signal the worker needs and never calls pg_sys.
        if let Err(error) = sc_backup_core::util::threads::spawn_without_signals(
            "sc_backup catch-up".into(),
            move || run(&for_thread, &data),
        ) {
            pgrx::warning!(
                "sc_backup: could not start the thread that fills repositories 2 to 4: {error}"
            );
        }
        CatchUp {
            shared,
            said: Vec::new(),
            said_pass: 0,
        }
    }

    /// The repositories to keep up to date (all of them, repository 1 first).
    pub fn configure(&self, settings: Option<Vec<(RepositoryNumber, Settings)>>) {
        let (lock, wake) = &*self.shared;
        let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
        if shared.settings != settings {
            shared.settings = settings;
            shared.changed = true;
            wake.notify_one();
        }
    }

    /// The role audit records name (the worker's session user).
    pub fn set_user(&self, user: &str) {
        let (lock, _) = &*self.shared;
        let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
        if shared.user != user {
            shared.user = user.to_string();
        }
    }

    /// Each further repository's state after the last pass.
    pub fn lags(&self) -> Vec<RepositoryLag> {
        let (lock, _) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).lags.clone()
    }

    /// The changes since the last call, as log lines: (is a warning, text). A repository
    /// that starts failing is reported at once, then again every [`REMIND_EVERY`] while it
    /// fails (its error's text changes from file to file: it is no reason to say it again);
    /// one that catches up, once.
    pub fn news(&mut self) -> Vec<(bool, String)> {
        let mut news = Vec::new();
        let (lags, passes) = {
            let (lock, _) = &*self.shared;
            let shared = lock.lock().unwrap_or_else(|e| e.into_inner());
            (shared.lags.clone(), shared.passes)
        };
        let new_pass = std::mem::replace(&mut self.said_pass, passes) != passes;
        for lag in lags {
            let said = self
                .said
                .iter()
                .position(|(number, _)| *number == lag.number);
            let last_warning = said.and_then(|i| self.said[i].1);
            match &lag.error {
                Some(error) if last_warning.is_none_or(|at| at.elapsed() >= REMIND_EVERY) => {
                    news.push((
                        true,
                        format!(
                            "sc_backup: {} ({}) is not caught up with repository 1{}: {error}",
                            lag.number,
                            lag.location,
                            lag.backlog
                                .map(|n| format!(" ({n} WAL files behind)"))
                                .unwrap_or_default()
                        ),
                    ));
                    self.remember(lag.number, Some(Instant::now()));
                }
                Some(_) => {}
                None if lag.caught_up_at.is_some()
                    && (said.is_none() || last_warning.is_some()) =>
                {
                    news.push((
                        false,
                        format!(
                            "sc_backup: {} ({}) holds all of repository 1's WAL ({} file(s) copied)",
                            lag.number, lag.location, lag.copied
                        ),
                    ));
                    self.remember(lag.number, None);
                }
                None => {}
            }
            if new_pass && !lag.backups_copied.is_empty() {
                news.push((
                    false,
                    format!(
                        "sc_backup: copied backup(s) {} into {} ({})",
                        lag.backups_copied.join(", "),
                        lag.number,
                        lag.location
                    ),
                ));
            }
            if new_pass && !lag.dumps_copied.is_empty() {
                news.push((
                    false,
                    format!(
                        "sc_backup: copied dump(s) {} into {} ({})",
                        lag.dumps_copied.join(", "),
                        lag.number,
                        lag.location
                    ),
                ));
            }
            if let Some(expired) = lag.expired.as_ref().filter(|_| new_pass) {
                news.push((
                    false,
                    format!(
                        "sc_backup: {} ({}): expired {expired}",
                        lag.number, lag.location
                    ),
                ));
            }
        }
        news
    }

    fn remember(&mut self, number: RepositoryNumber, warned_at: Option<Instant>) {
        self.said.retain(|(n, _)| *n != number);
        self.said.push((number, warned_at));
    }
}

/// The thread's body: passes, forever. A pass that panics (a bug) is reported as its
/// repositories' error and the next pass starts afresh: catching up must not end silently.
fn run(shared: &(Mutex<Shared>, Condvar), data: &std::path::Path) {
    loop {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| passes(shared, data)));
        if let Err(panic) = outcome {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            let (lock, _) = shared;
            let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            for lag in &mut guard.lags {
                lag.error = Some(format!("the catch-up failed unexpectedly ({text})"));
            }
            drop(guard);
            std::thread::sleep(CATCH_UP_EVERY);
        }
    }
}

fn passes(shared: &(Mutex<Shared>, Condvar), data: &std::path::Path) {
    let (lock, wake) = shared;
    let mut first: Option<(Settings, Repository)> = None;
    loop {
        let (settings, previous, user) = {
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (mut guard, _) = wake
                .wait_timeout_while(guard, CATCH_UP_EVERY, |s| !s.changed)
                .unwrap_or_else(|e| e.into_inner());
            guard.changed = false;
            (
                guard.settings.clone(),
                guard.lags.clone(),
                guard.user.clone(),
            )
        };
        let Some(settings) = settings.filter(|all| all.len() > 1) else {
            lock.lock().unwrap_or_else(|e| e.into_inner()).lags.clear();
            if previous.is_empty() {
                let _ = std::fs::remove_file(data.join(STATE_FILE));
            } else {
                let _ = write_state(data, &[]);
            }
            continue;
        };
        let (_, first_settings) = &settings[0];
        if first.as_ref().is_none_or(|(s, _)| s != first_settings) {
            first = Repository::open(first_settings)
                .ok()
                .map(|repository| (first_settings.clone(), repository));
        }
        let Some((_, repository)) = &first else {
            // Nothing archived yet (or repository 1 unreachable): nothing to copy from.
            continue;
        };
        let user = if user.is_empty() { "postgres" } else { &user };
        let lags = catch_up_pass(repository, &settings[1..], &previous, user, &|| false);
        // Best effort: sc_status() in other backends shows nothing rather than stale figures.
        if write_state(data, &lags).is_err() {
            let _ = std::fs::remove_file(data.join(STATE_FILE));
        }
        let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
        shared.lags = lags;
        shared.passes += 1;
    }
}
