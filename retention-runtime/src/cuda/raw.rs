//! Memory by address: copies and clears between device addresses and host slices, and
//! stream capture into a replayable graph. Device tensors (`crate::DeviceTensor`) and the
//! launch description bind memory by its 64-bit address, so these are the only copies the
//! runtime makes on a GPU.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, DevicePtr, result};
use retention_core::{Result, RetentionError};

use super::buffer::{DeviceBuffer, DeviceElement};
use super::error::device_error;
use super::stream::Stream;

impl<T: DeviceElement> DeviceBuffer<T> {
    /// The device address of the first element (a `CUdeviceptr`).
    pub fn address(&self) -> u64 {
        // The event `device_ptr` records is dropped at once: launches by address are ordered
        // by the one stream they run on, not by cudarc's per-buffer events.
        let (ptr, _record) = self.slice.device_ptr(self.slice.stream());
        ptr
    }
}

impl Stream {
    /// Queues a copy of `host` to device address `dst`.
    ///
    /// # Safety
    /// `dst..dst + host.len()` is device memory of this stream's context that stays
    /// allocated until the copy has run.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver refuses the copy.
    pub unsafe fn upload_to_address(&self, host: &[u8], dst: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees the destination; pageable host memory is staged by
        // the driver before the call returns, so `host` may be reused afterwards.
        unsafe { result::memcpy_htod_async(dst, host, self.inner.cu_stream()) }
            .map_err(|e| device_error(self.ordinal(), "copying host to device", e))
    }

    /// Copies device address `src` into `host` and waits for the copy.
    ///
    /// # Safety
    /// `src..src + host.len()` is device memory of this stream's context.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the copy fails.
    pub unsafe fn download_from_address(&self, src: u64, host: &mut [u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees the source; we synchronise before `host` is read.
        unsafe { result::memcpy_dtoh_async(host, src, self.inner.cu_stream()) }
            .map_err(|e| device_error(self.ordinal(), "copying device to host", e))?;
        self.synchronize()
    }

    /// Queues a copy of `bytes` bytes from device address `src` to `dst`.
    ///
    /// # Safety
    /// Both ranges are device memory of this stream's context, allocated until the copy runs.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver refuses the copy.
    pub unsafe fn copy_address(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees both ranges.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.inner.cu_stream()) }
            .map_err(|e| device_error(self.ordinal(), "copying on the device", e))
    }

    /// Queues clearing `bytes` bytes at device address `dst`.
    ///
    /// # Safety
    /// The range is device memory of this stream's context, allocated until the clear runs.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver refuses it.
    pub unsafe fn zero_address(&self, dst: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: the caller guarantees the range.
        unsafe { result::memset_d8_async(dst, 0, bytes, self.inner.cu_stream()) }
            .map_err(|e| device_error(self.ordinal(), "clearing device memory", e))
    }

    /// Starts capturing this stream's work (launches, copies) into a graph instead of
    /// running it.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver refuses (already capturing, say).
    pub fn begin_capture(&self) -> Result<()> {
        self.inner
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
            .map_err(|e| device_error(self.ordinal(), "beginning stream capture", e))
    }

    /// Ends the capture begun by [`Stream::begin_capture`] and instantiates the graph.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the capture was invalidated or is empty.
    pub fn end_capture(&self) -> Result<Graph> {
        let graph = self
            .inner
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| device_error(self.ordinal(), "ending stream capture", e))?;
        graph
            .map(|inner| Graph { inner })
            .ok_or_else(|| RetentionError::DeviceFailure("stream capture recorded no work".into()))
    }

    fn bind(&self) -> Result<()> {
        self.inner
            .context()
            .bind_to_thread()
            .map_err(|e| device_error(self.ordinal(), "binding the context", e))
    }
}

/// An instantiated CUDA graph: captured work replayed with one call.
pub struct Graph {
    inner: CudaGraph,
}

impl Graph {
    /// Queues one replay of the captured work on the stream it was captured from.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver refuses the launch.
    pub fn replay(&self) -> Result<()> {
        self.inner
            .launch()
            .map_err(|e| RetentionError::DeviceFailure(format!("replaying a CUDA graph: {e}")))
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cuda::Graph")
    }
}
