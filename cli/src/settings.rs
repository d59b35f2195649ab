//! Where the CLI's settings come from, in order of precedence: command-line flags, then
//! environment variables (ours, handled by clap, then the standard AWS_* and Google ones),
//! then the cluster's own configuration files (with its secrets file), so
//! `restore_command = 'sc-backup wal-fetch %f %p'` needs no second copy of the settings.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use sc_backup_core::config::repositories::RepositoryNumber;
use sc_backup_core::config::{RawSettings, Secret, Settings};

use crate::error::CliError;
use crate::pgconf;

// Under their own heading: global, they would otherwise be interleaved with each command's own
// options in `sc-backup COMMAND --help`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Repository and cluster settings (every command)")]
pub struct SettingsArgs {
    /// Repository: a location, or the number of one of the cluster's repositories (1 is
    /// sc_backup.repository, 2 to 4 sc_backup.repository2 to 4). Default: repository 1 (and
    /// for wal-fetch, the next one when a file is missing or damaged there)
    #[arg(long, global = true, env = "SC_BACKUP_REPOSITORY")]
    pub repository: Option<String>,

    /// Compression for new objects: none, gzip, zstd
    #[arg(long, global = true, env = "SC_BACKUP_COMPRESSION")]
    pub compression: Option<String>,

    /// Compression level; 0 is the algorithm's default
    #[arg(long, global = true, env = "SC_BACKUP_COMPRESSION_LEVEL")]
    pub compression_level: Option<String>,

    /// Encryption of a new repository: none, age
    #[arg(long, global = true, env = "SC_BACKUP_ENCRYPTION")]
    pub encryption: Option<String>,

    /// File holding the repository passphrase (or set SC_BACKUP_ENCRYPTION_PASSPHRASE)
    #[arg(long, global = true, env = "SC_BACKUP_ENCRYPTION_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// Region of an s3:// repository
    #[arg(long, global = true, env = "SC_BACKUP_S3_REGION")]
    pub s3_region: Option<String>,

    /// Endpoint of an S3-compatible store (default: AWS_ENDPOINT_URL, else AWS)
    #[arg(long, global = true, env = "SC_BACKUP_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 addressing: auto, path or host
    #[arg(long, global = true, env = "SC_BACKUP_S3_URI_STYLE")]
    pub s3_uri_style: Option<String>,

    /// Endpoint of a gs:// repository, for emulators (default: STORAGE_EMULATOR_HOST)
    #[arg(long, global = true, env = "SC_BACKUP_GCS_ENDPOINT")]
    pub gcs_endpoint: Option<String>,

    /// Service account JSON key file (default: GOOGLE_APPLICATION_CREDENTIALS)
    #[arg(long, global = true, env = "SC_BACKUP_GCS_CREDENTIALS")]
    pub gcs_credentials: Option<String>,

    /// Data directory whose configuration supplies unset settings (default: $PGDATA, or the
    /// current directory when it is a data directory, as for restore_command)
    #[arg(short = 'D', long, global = true, env = "PGDATA")]
    pub pgdata: Option<PathBuf>,

    /// The server's postgresql.conf, when it is not in the data directory and the server has
    /// not recorded it in postmaster.opts
    #[arg(long, global = true, env = "SC_BACKUP_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
}

/// The passphrase travels by environment or file, never as a flag value (visible in `ps`).
const PASSPHRASE_ENV: &str = "SC_BACKUP_ENCRYPTION_PASSPHRASE";

impl SettingsArgs {
    /// The repository this command works on: the one `--repository` names (a location, or
    /// a number of the cluster's), else the cluster's repository 1.
    pub fn resolve(&self) -> Result<Settings, CliError> {
        let (raw, chosen) = self.raw()?;
        Ok(Settings::of_repository(
            &raw,
            chosen.unwrap_or(RepositoryNumber::FIRST),
        )?)
    }

    /// The cluster's repository `number`, whatever `--repository` says.
    pub fn resolve_number(&self, number: RepositoryNumber) -> Result<Settings, CliError> {
        let (raw, _) = self.raw()?;
        Ok(Settings::of_repository(&raw, number)?)
    }

    /// Every repository a file may be read from, in order: the one `--repository` names
    /// alone, else every repository the cluster configures (1 first).
    pub fn resolve_all(&self) -> Result<Vec<(RepositoryNumber, Settings)>, CliError> {
        let (raw, chosen) = self.raw()?;
        match chosen {
            Some(number) => Ok(vec![(number, Settings::of_repository(&raw, number)?)]),
            None if self.repository.is_some() => {
                Ok(vec![(RepositoryNumber::FIRST, Settings::from_raw(&raw)?)])
            }
            None => {
                let mut all = vec![(RepositoryNumber::FIRST, Settings::from_raw(&raw)?)];
                for number in RepositoryNumber::all().skip(1) {
                    if raw.for_repository(number).is_none() {
                        continue;
                    }
                    match Settings::of_repository(&raw, number) {
                        Ok(settings) => all.push((number, settings)),
                        // A fallback this host cannot use (no credentials for its store, say)
                        // must not stop what repository 1 can do.
                        Err(error) => {
                            eprintln!("sc-backup: warning: {error}; {number} is not used")
                        }
                    }
                }
                Ok(all)
            }
        }
    }

    /// The settings from every source, and the repository number `--repository` gave (a
    /// location the cluster configures as repository N stands for it; any other location for
    /// repository 1, replacing the cluster's).
    fn raw(&self) -> Result<(RawSettings, Option<RepositoryNumber>), CliError> {
        let chosen = match self.repository.as_deref().map(str::trim) {
            Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                Some(text.parse::<RepositoryNumber>()?)
            }
            _ => None,
        };
        let passphrase = match &self.passphrase_file {
            Some(path) => Some(read_passphrase_file(path)?),
            None => std::env::var(PASSPHRASE_ENV).ok().map(Secret::new),
        };
        // What the operator exported in the shell running this command is deliberate (a key
        // just rotated, another endpoint); the cluster's files may be stale. So the standard
        // variables (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST) rank with
        // ours, after them, above the cluster's configuration. The server, whose environment
        // is not the operator's, reads them only where its settings say nothing.
        let explicit = RawSettings {
            repository: if chosen.is_some() {
                None
            } else {
                self.repository.clone()
            },
            compression: self.compression.clone(),
            compression_level: self.compression_level.clone(),
            encryption: self.encryption.clone(),
            encryption_passphrase: passphrase,
            secrets_file: None,
            s3_region: self
                .s3_region
                .clone()
                .or_else(|| environment(&["AWS_REGION", "AWS_DEFAULT_REGION"])),
            s3_endpoint: self
                .s3_endpoint
                .clone()
                .or_else(|| environment(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])),
            s3_uri_style: self.s3_uri_style.clone(),
            // Keys travel by environment only, never as flags (process lists show flags).
            s3_access_key_id: environment(&["SC_BACKUP_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]),
            s3_secret_access_key: environment(&[
                "SC_BACKUP_S3_SECRET_ACCESS_KEY",
                "AWS_SECRET_ACCESS_KEY",
            ])
            .map(Secret::new),
            gcs_endpoint: self.gcs_endpoint.clone().or_else(|| {
                // As Google's libraries read it: a host, or a URL.
                environment(&["STORAGE_EMULATOR_HOST"]).map(|host| {
                    if host.contains("://") {
                        host
                    } else {
                        format!("http://{host}")
                    }
                })
            }),
            gcs_credentials: self
                .gcs_credentials
                .clone()
                .or_else(|| environment(&["GOOGLE_APPLICATION_CREDENTIALS"])),
            // Flags of `expire` override these; otherwise the cluster's settings apply.
            retention_days: None,
            retention_full: None,
            retention_hourly_days: None,
            retention_daily_days: None,
            retention_weekly_days: None,
            further: Default::default(),
        };
        let from_cluster = match (self.data_directory(), self.config_file.as_deref()) {
            (Some(data_directory), config_file) => cluster_settings(&data_directory, config_file)?,
            // A configuration named alone (on a new host, before any data directory): read
            // as if its directory were the data directory, as it is unless the packaging
            // moved it (/etc/postgresql/...: a relative secrets file is then best absolute).
            (None, Some(config_file)) => cluster_settings(
                config_file.parent().unwrap_or(Path::new(".")),
                Some(config_file),
            )?,
            (None, None) => RawSettings::default(),
        };
        // A location the cluster configures as repository 2 to 4 is that repository, with its
        // own settings and passphrase: a restore from it writes its location into
        // restore_command, which must then read it with its own key.
        if let (None, Some(location)) = (chosen, explicit.repository.as_deref().map(str::trim)) {
            let configured = RepositoryNumber::all().skip(1).find(|number| {
                from_cluster
                    .for_repository(*number)
                    .and_then(|own| own.repository)
                    .is_some_and(|own| own.trim() == location)
            });
            if let Some(number) = configured {
                let explicit = RawSettings {
                    repository: None,
                    ..explicit
                };
                return Ok((explicit.or(from_cluster), Some(number)));
            }
        }
        Ok((explicit.or(from_cluster), chosen))
    }

    fn data_directory(&self) -> Option<PathBuf> {
        if let Some(pgdata) = &self.pgdata {
            return Some(pgdata.clone());
        }
        // restore_command runs with the data directory as its working directory.
        let cwd = std::env::current_dir().ok()?;
        cwd.join("PG_VERSION").is_file().then_some(cwd)
    }
}

/// The first of `names` set (and not empty) in the environment.
fn environment(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
}

fn read_passphrase_file(path: &Path) -> Result<Secret, CliError> {
    let text = fs::read_to_string(path).map_err(|e| {
        CliError::Message(format!(
            "could not read passphrase file \"{}\": {e}",
            path.display()
        ))
    })?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

/// The `sc_backup.*` values PostgreSQL would use for this data directory.
fn cluster_settings(
    data_directory: &Path,
    config_file: Option<&Path>,
) -> Result<RawSettings, CliError> {
    let config_file = config_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| pgconf::config_file_of(data_directory));
    let mut assignments = Vec::new();
    if config_file.exists() {
        pgconf::read_file(&config_file, &mut assignments)?;
    }
    let auto_conf = data_directory.join("postgresql.auto.conf");
    if auto_conf.exists() {
        pgconf::read_file(&auto_conf, &mut assignments)?;
    }
    let mut raw = RawSettings::default();
    for (name, value) in assignments {
        if RawSettings::takes(&name) {
            raw.set(&name, value);
        }
    }
    // The cluster's secrets file, as the server reads it (relative to its data directory).
    Ok(raw.with_secrets_file(data_directory)?)
}
