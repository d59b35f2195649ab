//! Test directories owned by the postgres OS user, and what tests look for in them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::*;

/// Every regular file under `dir`, recursively, sorted (temporary ones included). None if
/// `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The repository objects under `dir`: [`files_under`] without the '.'-named temporary files
/// of writers in flight, which no reader lists.
pub fn objects_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// Unwraps a repository's key into `key_file` with the stock `age`, as the README's manual
/// recovery does it (age reads a passphrase only from a terminal: `script` gives it one).
pub fn unwrap_key_with_stock_age(repository: &Path, passphrase: &str, key_file: &Path) {
    let unwrap = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '{passphrase}\\n' | script -qec 'age -d -o {} {}' /dev/null",
            key_file.display(),
            repository.join("keys/repository.key.age").display()
        ))
        .output()
        .unwrap();
    assert!(
        key_file.exists(),
        "age could not unwrap the key: {unwrap:?}"
    );
}

/// Where sandboxes are made under `--sandbox-dir parent`: the private directory of the user that
/// runs their servers (postgres, when the tests run as root).
pub fn sandbox_root(parent: &Path) -> PathBuf {
    let uid = if is_root() {
        // Safety: getpwnam returns static storage or NULL; read at once.
        let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        assert!(!entry.is_null(), "no postgres OS user");
        unsafe { (*entry).pw_uid }
    } else {
        // Safety: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    };
    parent.join(format!("sc-backup-{uid}"))
}

/// The sandboxes under `--sandbox-dir parent` (none when it was never used).
pub fn sandboxes_under(parent: &Path) -> Vec<PathBuf> {
    fs::read_dir(sandbox_root(parent))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A fresh directory owned by the postgres OS user, removed when dropped (kept when the test
/// panicked, for the post-mortem, or when SC_BACKUP_KEEP_TEST_DIRS is set).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let base = Path::new("/tmp/sc_backup_pg_test");
        fs::create_dir_all(base).unwrap();
        fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
        let path = base.join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_postgres(&path);
        TestDir { path }
    }

    /// A subdirectory owned by postgres (e.g. a repository).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::create_dir_all(&path).unwrap();
        chown_to_postgres(&path);
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("SC_BACKUP_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
