//! PostgreSQL 15's archive module ABI: `_PG_archive_module_init` fills in the callbacks
//! struct it is given, and the callbacks take no state argument. There is no startup
//! callback: initialisation runs when the archiver loads the module, which is the same moment.

use std::ffi::{c_char, CStr};

use pgrx::pg_sys;

use super::{archive_file, check_configured, install, shutdown, startup};
use super::{ParallelismSource, SettingsSource};

/// Installs the callbacks.
///
/// # Safety
/// `callbacks` must be the pointer PostgreSQL passed to `_PG_archive_module_init`.
pub unsafe fn init_pg15(
    callbacks: *mut pg_sys::ArchiveModuleCallbacks,
    settings_source: SettingsSource,
    parallelism_source: ParallelismSource,
) {
    install(settings_source, parallelism_source);
    (*callbacks).check_configured_cb = Some(check_configured_cb);
    (*callbacks).archive_file_cb = Some(archive_file_cb);
    (*callbacks).shutdown_cb = Some(shutdown_cb);
    startup();
}

unsafe extern "C-unwind" fn check_configured_cb() -> bool {
    check_configured()
}

unsafe extern "C-unwind" fn archive_file_cb(file: *const c_char, path: *const c_char) -> bool {
    let file = CStr::from_ptr(file).to_string_lossy().into_owned();
    let path = CStr::from_ptr(path).to_string_lossy().into_owned();
    archive_file(&file, &path)
}

unsafe extern "C-unwind" fn shutdown_cb() {
    shutdown()
}
