//! Whether this machine can run CUDA at all, asked without ever panicking.

use std::panic::{UnwindSafe, catch_unwind};
use std::sync::OnceLock;

use cudarc::driver::CudaContext;

/// True when a CUDA driver library (`libcuda`) can be opened. It says nothing about GPUs:
/// a driver with no device attached still answers [`device_count`] with 0.
///
/// Probed once per process: a driver does not appear or vanish while we run.
pub fn driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: this only tries `dlopen` on the driver's library names and closes what it
        // opened; running a library's initialisers is exactly what any CUDA use does, and
        // no pointer crosses the call.
        unsafe { cudarc::driver::sys::is_culib_present() }
    })
}

/// The number of CUDA devices; 0 when there is no driver, it fails to initialise, or it has
/// no device.
pub fn device_count() -> usize {
    count_devices().unwrap_or(0)
}

/// The number of CUDA devices, or why the driver cannot say.
pub(super) fn count_devices() -> Result<usize, String> {
    match guarded_driver_call(CudaContext::device_count)? {
        Ok(count) => Ok(usize::try_from(count).unwrap_or(0)),
        Err(err) => Err(format!("the CUDA driver failed to initialise: {err}")),
    }
}

/// Runs a cudarc call that touches the driver, or says why it cannot.
///
/// cudarc opens `libcuda` and resolves each symbol lazily and panics when either is missing,
/// so the library's presence is checked first; the `catch_unwind` is for a driver older than
/// the pinned bindings that lacks a symbol (it does nothing under `panic = "abort"`).
pub(super) fn guarded_driver_call<T>(call: impl FnOnce() -> T + UnwindSafe) -> Result<T, String> {
    if !driver_present() {
        return Err("no CUDA driver (libcuda) found on this machine".into());
    }
    catch_unwind(call).map_err(|_| {
        "the CUDA driver lacks a function this build calls (bindings pinned to CUDA 12.8)".into()
    })
}
