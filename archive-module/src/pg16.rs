//! The archive module ABI of PostgreSQL 16, 17 and 18 (src/include/archive/archive_module.h,
//! identical in the three): `_PG_archive_module_init` returns a pointer to a static callbacks
//! struct, every callback receives an `ArchiveModuleState *` first, and a startup callback
//! runs once the module is loaded. pgrx's bindings do not include this header, so the structs
//! are declared here, `#[repr(C)]`, field for field.
//!
//! Our state lives in the module's statics, as on 15, so `private_data` stays unused.

use std::ffi::{c_char, c_void, CStr};

use super::{archive_file, check_configured, install, shutdown, startup};
use super::{ParallelismSource, SettingsSource};

#[repr(C)]
pub struct ArchiveModuleState {
    pub private_data: *mut c_void,
}

#[repr(C)]
pub struct ArchiveModuleCallbacks {
    pub startup_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
    pub check_configured_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState) -> bool>,
    pub archive_file_cb: Option<
        unsafe extern "C-unwind" fn(*mut ArchiveModuleState, *const c_char, *const c_char) -> bool,
    >,
    pub shutdown_cb: Option<unsafe extern "C-unwind" fn(*mut ArchiveModuleState)>,
}

// Safety: immutable, and only function pointers.
unsafe impl Sync for ArchiveModuleCallbacks {}

static CALLBACKS: ArchiveModuleCallbacks = ArchiveModuleCallbacks {
    startup_cb: Some(startup_cb),
    check_configured_cb: Some(check_configured_cb),
    archive_file_cb: Some(archive_file_cb),
    shutdown_cb: Some(shutdown_cb),
};

/// Records where the settings come from and returns the callbacks.
pub fn init(
    settings_source: SettingsSource,
    parallelism_source: ParallelismSource,
) -> *const ArchiveModuleCallbacks {
    install(settings_source, parallelism_source);
    &CALLBACKS
}

unsafe extern "C-unwind" fn startup_cb(_state: *mut ArchiveModuleState) {
    startup()
}

unsafe extern "C-unwind" fn check_configured_cb(_state: *mut ArchiveModuleState) -> bool {
    check_configured()
}

unsafe extern "C-unwind" fn archive_file_cb(
    _state: *mut ArchiveModuleState,
    file: *const c_char,
    path: *const c_char,
) -> bool {
    let file = CStr::from_ptr(file).to_string_lossy().into_owned();
    let path = CStr::from_ptr(path).to_string_lossy().into_owned();
    archive_file(&file, &path)
}

unsafe extern "C-unwind" fn shutdown_cb(_state: *mut ArchiveModuleState) {
    shutdown()
}

// Four function pointers, in header order; a mismatch here would be a crash in the archiver.
const _: () =
    assert!(std::mem::size_of::<ArchiveModuleCallbacks>() == 4 * std::mem::size_of::<usize>());
