//! The retention handle: a device, the per-head decays and the scale (a `Retention`), created
//! and destroyed here, tagged so a foreign pointer or a double destroy is reported (while the
//! freed memory is not reused) instead of being used. Also the stream setting (ARCHITECTURE §8).

use std::ffi::c_void;

use retention::{Device, Gammas, Retention, RetentionParams, Stream};

use crate::status::{Failure, RetentionStatus, guard};

/// Device kind a handle runs on.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionDeviceKind {
    /// The CPU; tensors are host pointers.
    Cpu = 0,
    /// A CUDA GPU by ordinal; tensors are `CUdeviceptr`s (state-pool snapshots and
    /// `cu_seqlens` stay host memory).
    Cuda = 1,
    /// The PTX emulator (sm_80) on host pointers: the GPU code path run on the CPU, for tests.
    Emulated = 2,
}

pub(crate) const HANDLE_MAGIC: u64 = 0x5245_544e_4854_4e44;
pub(crate) const DEAD_MAGIC: u64 = 0xdead_dead_dead_dead;

/// Opaque handle over a [`Retention`] (a device plus the per-head decays and scale) and the
/// stream its ops run on (`None`: the device's default stream).
pub struct RetentionHandle {
    magic: u64,
    pub(crate) ret: Retention,
    stream: Option<Stream>,
}

impl RetentionHandle {
    /// The caller's stream, if one was set.
    pub(crate) fn stream(&self) -> Option<&Stream> {
        self.stream.as_ref()
    }

    /// Wait for a caller stream on CUDA: before scratch memory an op used there goes back to
    /// the runtime's pool, whose blocks are reused (and cleared) on the device's default stream
    /// without ordering against other streams. The default stream itself needs no wait.
    pub(crate) fn wait_for_caller_stream(&self) -> Result<(), Failure> {
        if let (Some(s), Device::Cuda(_)) = (&self.stream, self.device()) {
            s.synchronize()?;
        }
        Ok(())
    }

    /// The device the handle runs on.
    pub(crate) fn device(&self) -> &Device {
        self.ret.device()
    }

    /// `Err(Unsupported)` naming `op` unless the handle runs on the CPU (for ops the runtime
    /// has as host-tensor APIs only; refusing here keeps device pointers unread).
    pub(crate) fn cpu_only(&self, op: &str) -> Result<(), Failure> {
        if self.device() == &Device::Cpu {
            return Ok(());
        }
        Err(Failure::new(
            RetentionStatus::Unsupported,
            format!(
                "{op} runs on the CPU only for now (handle device {}); create a CPU handle",
                self.device()
            ),
        ))
    }
}

fn device_of(kind: i32, ordinal: u32) -> Result<Device, Failure> {
    match kind {
        0 => Ok(Device::Cpu),
        1 => Ok(Device::cuda(ordinal as usize)?),
        2 => Ok(Device::from_name("emulated")?),
        other => Err(Failure::new(
            RetentionStatus::UnsupportedDevice,
            format!("device kind {other} unknown (CPU 0, CUDA 1, EMULATED 2)"),
        )),
    }
}

/// Create a handle on device `device` (a `RetentionDeviceKind`; `ordinal` picks the GPU) for
/// `heads` heads with the RetNet decays of global heads `head_offset..head_offset + heads` and
/// scale `scale` (a non-positive or NaN scale means the default 1/sqrt(K)).
///
/// # Safety
/// `out` must be a valid pointer to writable storage for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_create(
    device: i32,
    ordinal: u32,
    heads: u32,
    head_offset: u32,
    scale: f64,
    out: *mut *mut RetentionHandle,
) -> RetentionStatus {
    guard(|| {
        crate::status::non_null(out, "out")?;
        let device = device_of(device, ordinal)?;
        let gammas = Gammas::retnet_sharded(heads as usize, head_offset as usize)?;
        let scale = (scale > 0.0).then_some(scale);
        let ret = Retention::new(&device, RetentionParams::new(gammas, scale))?;
        let h = Box::into_raw(Box::new(RetentionHandle {
            magic: HANDLE_MAGIC,
            ret,
            stream: None,
        }));
        // SAFETY: `out` is non-null and the caller promises it is writable.
        unsafe { *out = h };
        Ok(())
    })
}

/// Destroy a handle. Null is a no-op returning `Ok`.
///
/// # Safety
/// `h` must be null or a pointer returned by [`retention_create`] not yet destroyed; a double
/// destroy is detected by the magic tag only while the freed memory is not reused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_destroy(h: *mut RetentionHandle) -> RetentionStatus {
    guard(|| {
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: the caller promises `h` came from `retention_create`; `handle` checks the tag.
        unsafe { handle(h)? };
        // SAFETY: the tag says this is a live handle from `Box::into_raw`; we mark it dead first.
        unsafe {
            (*h).magic = DEAD_MAGIC;
            drop(Box::from_raw(h));
        }
        Ok(())
    })
}

/// Choose the stream the handle's ops (and the state pools created from it afterwards) run
/// on: a `CUstream` of the handle's GPU, in its primary context (PyTorch's streams are), or
/// NULL for the device's default stream (on CUDA the legacy default stream). Ops never
/// synchronise it, except the forwards that need scratch memory (a NULL `final_state`, or the
/// varlen `cu_seqlens` upload), which wait for a caller stream before the scratch is freed. The CPU and the emulator have no CUDA streams: a non-NULL
/// stream gives `RETENTION_UNSUPPORTED` there.
///
/// # Safety
/// `h` from [`retention_create`]; a non-NULL `stream` is a valid `CUstream` of the handle's
/// device and primary context, alive while the handle (or a pool created after this call)
/// uses it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_set_stream(
    h: *mut RetentionHandle,
    stream: *mut c_void,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's precondition: null or a handle's memory (the tag is checked).
        unsafe { handle(h)? };
        // SAFETY: a live handle (tag checked); the caller gives us `*mut` access to it.
        let r = unsafe { &mut *h };
        r.stream = if stream.is_null() {
            None
        } else {
            // SAFETY: the caller's precondition on `stream`.
            Some(unsafe { Stream::from_raw_cuda(r.device(), stream) }?)
        };
        Ok(())
    })
}

/// Borrow the handle behind `h`, checking null and the tag.
///
/// # Safety
/// `h` must be null or point to readable memory of a `RetentionHandle`.
pub(crate) unsafe fn handle<'a>(h: *const RetentionHandle) -> Result<&'a RetentionHandle, Failure> {
    // SAFETY: the caller promises `h` is null or points to a handle's memory.
    match unsafe { h.as_ref() } {
        Some(r) if r.magic == HANDLE_MAGIC => Ok(r),
        Some(_) => Err(Failure::new(
            RetentionStatus::InvalidHandle,
            "handle is foreign or already destroyed",
        )),
        None => Err(Failure::new(
            RetentionStatus::InvalidHandle,
            "handle is null",
        )),
    }
}
