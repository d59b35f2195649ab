//! Running things as the postgres OS user, and the PostgreSQL installation under test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const PG_USER: &str = "postgres";

pub(crate) fn is_root() -> bool {
    // Safety: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the postgres OS user (directly when we already are not root).
pub fn as_postgres(program: impl AsRef<Path>) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", PG_USER, "--"]).arg(program.as_ref());
        command
    } else {
        Command::new(program.as_ref())
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The bin directory of the server under test: `pg_config --bindir` of `PG_CONFIG` (else of
/// `pg_config` on PATH), unless [`use_pg_bindir`] chose another.
pub fn pg_bindir() -> PathBuf {
    let mut bindir = BINDIR.lock().unwrap_or_else(|e| e.into_inner());
    bindir
        .get_or_insert_with(|| {
            let pg_config = std::env::var("PG_CONFIG").unwrap_or_else(|_| "pg_config".into());
            let output = run_ok(Command::new(pg_config).arg("--bindir"));
            PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
        })
        .clone()
}

pub(crate) static BINDIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// Runs what follows on another server (the benchmark measures several majors in one run).
pub fn use_pg_bindir(bindir: &Path) {
    *BINDIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bindir.to_path_buf());
}

/// The major version of the server under test.
pub fn pg_major() -> u32 {
    sc_backup_core::pg::server_binaries::ServerBinaries::at(&pg_bindir())
        .unwrap_or_else(|e| panic!("{e}"))
        .major()
}

pub(crate) fn chown_to_postgres(path: &Path) {
    if is_root() {
        run_ok(Command::new("chown").arg("-R").arg(PG_USER).arg(path));
    }
}

/// Writes a file inside a cluster's directories, owned by the postgres OS user as the server
/// expects (it fsyncs and renames such files).
pub fn write_as_postgres(path: &Path, content: &[u8]) {
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_to_postgres(path);
}

/// A command's standard output then standard error, for assertions and their messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
