//! `sc-backup container-settings --write DIR`: the image's entrypoint runs it at every start to
//! turn the playbook's variables into the settings files the server includes.

use std::path::Path;

use sc_backup_core::config::container_env::container_settings;

use crate::error::CliError;

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

/// Set (to `on`) by the image: the playbook's restore variables are obeyed where the playbook's
/// commands run. Elsewhere a `TARGET_TIME` left in a shell would turn "restore everything" into
/// a point-in-time recovery, and `FORCE_RESTORE=true` would replace a directory, unasked.
pub const PLAYBOOK_VARIABLES_ENV: &str = "SC_BACKUP_PLAYBOOK_VARIABLES";

/// In the image, sets our `SC_BACKUP_*` restore variables from the playbook's
/// (`FORCE_RESTORE=true`, ...) where ours are unset, before the arguments are parsed;
/// elsewhere says, one line each, that they are ignored.
pub fn adopt_restore_variables() {
    let adopted =
        sc_backup_core::config::container_env::restore_variables(|name| std::env::var(name).ok());
    let in_image = std::env::var(PLAYBOOK_VARIABLES_ENV).is_ok_and(|v| v == "on");
    for (name, value) in adopted {
        let playbook = sc_backup_core::config::container_env::RESTORE_VARIABLES
            .iter()
            .find(|(_, ours)| *ours == name)
            .map_or(name, |(theirs, _)| theirs);
        if in_image {
            // Runs first thing in main, before any thread exists.
            std::env::set_var(name, value);
        } else {
            eprintln!(
                "sc-backup: note: {playbook} is set but ignored outside the sc_backup image; set {name} to use it here"
            );
        }
    }
}
