//! The `sc-backup` binary under test, installed where the postgres OS user can run it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::*;

/// The `sc-backup` binary, built once per test run and copied where the postgres OS user can
/// execute it (the build tree may be under root's home).
pub fn sc_backup_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = match std::env::var_os("SC_BACKUP_BIN") {
            Some(path) => PathBuf::from(path),
            None => {
                let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                run_ok(Command::new(cargo).current_dir(workspace).args([
                    "build",
                    "--quiet",
                    "-p",
                    "sc-backup-cli",
                    "--bin",
                    "sc-backup",
                ]));
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace.join("target"));
                target.join("debug/sc-backup")
            }
        };
        install_for_postgres(&built)
    })
}

/// Copies `built` into /tmp/sc_backup_pg_test/bin once per build, shared by every test process
/// of a run: the debug binary is over 100 MB, and a copy per process (some 60 in a CI run)
/// once filled the CI machine's disk. Copies of other builds older than a day are removed.
pub(crate) fn install_for_postgres(built: &Path) -> PathBuf {
    let dir = Path::new("/tmp/sc_backup_pg_test/bin");
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let meta = fs::metadata(built).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    let built_at = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("sc-backup-{}-{built_at}", meta.len());
    let installed = dir.join(&name);
    if fs::metadata(&installed).is_ok_and(|copy| copy.len() == meta.len()) {
        return installed;
    }
    // Copied under a private name and renamed, so a concurrent test process sees the whole
    // binary or none.
    let partial = dir.join(format!(".{name}.{}", std::process::id()));
    fs::copy(built, &partial).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&partial, &installed).unwrap();
    let day = Duration::from_secs(24 * 3600);
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let stale = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > day);
        if stale && entry.file_name() != name.as_str() {
            let _ = fs::remove_file(entry.path());
        }
    }
    installed
}

/// `sc-backup` run as the postgres OS user in `cwd` (restore_command's working directory is
/// the data directory).
pub fn sc_backup(cwd: &Path) -> Command {
    let mut command = as_postgres(sc_backup_bin());
    command.current_dir(cwd);
    command
}
