//! One CUDA device: its context, its default stream, and the modules loaded into it.

use std::ffi::CString;
use std::sync::Arc;

use cudarc::driver::CudaContext;
use cudarc::nvrtc::Ptx;
use retention_core::{Result, RetentionError};

use super::error::{device_error, kernel_error};
use super::module::Module;
use super::probe::{count_devices, guarded_driver_call};
use super::signature::parse_entries;
use super::stream::Stream;

/// A CUDA device opened for work. Cloning shares the same context and default stream.
#[derive(Debug, Clone)]
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    default_stream: Stream,
}

impl CudaBackend {
    /// Opens device `ordinal` (its primary context).
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] when no CUDA driver is installed, the driver fails to
    /// initialise, or `ordinal` is not below [`device_count`](super::device_count).
    pub fn new(ordinal: usize) -> Result<Self> {
        let no_device =
            |why: String| RetentionError::NoDevice(format!("CUDA device {ordinal}: {why}"));
        let count = count_devices().map_err(no_device)?;
        if ordinal >= count {
            return Err(no_device(format!("the driver reports {count} device(s)")));
        }
        let ctx = guarded_driver_call(move || CudaContext::new(ordinal))
            .map_err(no_device)?
            .map_err(|e| device_error(ordinal, "creating the context", e))?;
        let default_stream = Stream::new(ctx.default_stream());
        Ok(Self {
            ctx,
            default_stream,
        })
    }

    /// The device ordinal this backend drives.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device's marketing name (e.g. `NVIDIA H100 80GB HBM3`).
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver call fails.
    pub fn name(&self) -> Result<String> {
        self.ctx
            .name()
            .map_err(|e| device_error(self.ordinal(), "reading the device name", e))
    }

    /// Compute capability `(major, minor)`, e.g. `(9, 0)` for sm_90: picks the PTX variant.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver call fails.
    pub fn compute_capability(&self) -> Result<(u32, u32)> {
        let (major, minor) = self
            .ctx
            .compute_capability()
            .map_err(|e| device_error(self.ordinal(), "reading the compute capability", e))?;
        Ok((major.unsigned_abs(), minor.unsigned_abs()))
    }

    /// Device memory `(free, total)` in bytes, as the driver sees it now.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver call fails.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(|e| device_error(self.ordinal(), "reading memory info", e))
    }

    /// The stream every operation without an explicit stream uses (CUDA's legacy default
    /// stream, which orders against the streams from [`CudaBackend::new_stream`] only
    /// through the buffers they share).
    pub fn default_stream(&self) -> &Stream {
        &self.default_stream
    }

    /// A new independent (non-blocking) stream on this device. Buffers used on several
    /// streams are ordered by the events cudarc records on each use.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver cannot create a stream.
    pub fn new_stream(&self) -> Result<Stream> {
        self.ctx
            .new_stream()
            .map(Stream::new)
            .map_err(|e| device_error(self.ordinal(), "creating a stream", e))
    }

    /// Waits until all work on every stream of this device has finished.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the device reports a failure (including an
    /// asynchronous fault of an earlier kernel).
    pub fn synchronize(&self) -> Result<()> {
        self.ctx
            .synchronize()
            .map_err(|e| device_error(self.ordinal(), "synchronising the device", e))
    }

    /// Loads a PTX module image (text, as `kernel-gen` writes it); the driver JIT-compiles it
    /// for this device. Entry signatures are read from the text so launches can be checked.
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] when the text holds a NUL byte or no `.entry`, or the
    /// driver rejects it (syntax, a PTX ISA version newer than the driver, a target above
    /// the device).
    pub fn load_module(&self, ptx: &str) -> Result<Module> {
        let ordinal = self.ordinal();
        // cudarc converts the text to a C string with `unwrap`: reject NULs first.
        if CString::new(ptx).is_err() {
            return Err(RetentionError::KernelLoad(format!(
                "CUDA device {ordinal}: PTX text contains a NUL byte"
            )));
        }
        let entries = parse_entries(ptx).map_err(|reason| {
            RetentionError::KernelLoad(format!("CUDA device {ordinal}: {reason}"))
        })?;
        let module = self
            .ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(|e| kernel_error(ordinal, "loading a PTX module", e))?;
        Ok(Module::new(module, self.ctx.clone(), entries))
    }
}
