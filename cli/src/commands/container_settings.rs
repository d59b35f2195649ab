//! `sc-backup container-settings --write DIR`: the image's entrypoint runs it at every start to
//! turn the playbook's variables into the settings files the server includes.

use std::path::Path;

use sc_backup_core::container_env::container_settings;

use crate::CliError;

pub fn run(directory: &Path) -> Result<(), CliError> {
    let settings = container_settings(|name| std::env::var(name).ok())
        .map_err(|e| CliError::Message(e.to_string()))?;
    settings.write_files(directory).map_err(|e| {
        CliError::Message(format!(
            "cannot write the settings into {}: {e}",
            directory.display()
        ))
    })?;
    // The entrypoint evaluates this: the bootstrap user and database (plain identifiers).
    print!("{}", settings.shell_assignments());
    Ok(())
}

/// Sets our `SC_BACKUP_*` restore variables from the playbook's (`FORCE_RESTORE=true`, ...)
/// where ours are unset, before the arguments are parsed.
pub fn adopt_restore_variables() {
    for (name, value) in
        sc_backup_core::container_env::restore_variables(|name| std::env::var(name).ok())
    {
        // Runs first thing in main, before any thread exists.
        std::env::set_var(name, value);
    }
}
