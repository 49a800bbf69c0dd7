//! [`Stream::from_raw_cuda`]: the caller's CUDA stream as a runtime [`Stream`] (DESIGN
//! "device-resident tensors": ops run on the caller's stream), for bindings that receive a
//! `CUstream` (the C ABI) or a framework's current stream.

use std::ffi::c_void;

use retention_core::{Result, RetentionError};

use super::{Stream, StreamInner};
use crate::device::Device;

impl Stream {
    /// A stream on CUDA `device` over `raw`, a `CUstream` the caller owns; ops given this
    /// stream are enqueued on it, never synchronised.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] for a device that is not CUDA (the CPU and the emulator
    /// have no CUDA streams); [`RetentionError::NoDevice`] when the GPU is not there.
    ///
    /// # Safety
    /// `raw` is a valid CUDA stream of `device`'s primary context, alive for as long as the
    /// returned stream (or a graph captured on it) is used.
    pub unsafe fn from_raw_cuda(device: &Device, raw: *mut c_void) -> Result<Self> {
        let Device::Cuda(ordinal) = device else {
            return Err(RetentionError::Unsupported {
                what: "a foreign CUDA stream on device".into(),
                value: device.name(),
                reason: "only CUDA devices have CUDA streams".into(),
            });
        };
        let target = crate::cuda_target::CudaTarget::open(*ordinal)?;
        // SAFETY: forwarded precondition; the target's stream carries the primary context.
        let inner = unsafe { target.stream().borrow_foreign(raw.cast()) };
        Ok(Self::with_inner(device, StreamInner::Cuda(inner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_devices_have_no_cuda_streams() {
        let mut x = 0u8;
        for d in [Device::Cpu, Device::from_name("emulated").unwrap()] {
            // SAFETY: the pointer is never used: host devices are refused first.
            let r = unsafe { Stream::from_raw_cuda(&d, (&raw mut x).cast()) };
            assert!(matches!(r, Err(RetentionError::Unsupported { .. })), "{d}");
        }
    }
}
