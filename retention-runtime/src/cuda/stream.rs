//! An in-order queue of device work: allocation, copies, launches and events.

use std::sync::Arc;

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute};
use cudarc::driver::{CudaStream, PushKernelArg};
use retention_core::{Result, RetentionError};

use super::buffer::{BufferArg, DeviceBuffer, DeviceElement};
use super::error::{alloc_error, device_error, foreign_object, kernel_error};
use super::event::Event;
use super::launch::{ArgValue, KernelArg, LaunchDims};
use super::module::Kernel;

/// Dynamic shared memory a kernel may use without opting in (CUDA's default limit).
const DEFAULT_DYNAMIC_SHARED_LIMIT: u32 = 48 * 1024;

/// A CUDA stream. Work queued on one stream runs in order; cloning shares the stream.
#[derive(Debug, Clone)]
pub struct Stream {
    pub(super) inner: Arc<CudaStream>,
}

impl Stream {
    pub(super) fn new(inner: Arc<CudaStream>) -> Self {
        Self { inner }
    }

    /// The ordinal of the device this stream runs on.
    pub fn ordinal(&self) -> usize {
        self.inner.context().ordinal()
    }

    /// A buffer of `len` zeros, allocated and cleared in stream order.
    ///
    /// # Errors
    /// [`RetentionError::OutOfMemory`] when the device cannot hold it (or its byte size
    /// overflows); [`RetentionError::Unsupported`] for `len == 0`.
    pub fn alloc_zeros<T: DeviceElement>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let bytes = self.checked_bytes::<T>(len)?;
        self.inner
            .alloc_zeros::<T>(len)
            .map(|slice| DeviceBuffer { slice })
            .map_err(|e| alloc_error(self.ordinal(), bytes, self.free_bytes(), e))
    }

    /// A new buffer holding a copy of `host`.
    ///
    /// # Errors
    /// As [`Stream::alloc_zeros`], or [`RetentionError::DeviceFailure`] when the copy fails.
    pub fn upload<T: DeviceElement>(&self, host: &[T]) -> Result<DeviceBuffer<T>> {
        let bytes = self.checked_bytes::<T>(host.len())?;
        self.inner
            .clone_htod(host)
            .map(|slice| DeviceBuffer { slice })
            .map_err(|e| alloc_error(self.ordinal(), bytes, self.free_bytes(), e))
    }

    /// Overwrites all of `dst` with `host`, which must have exactly `dst.len()` elements.
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] on a length mismatch; [`RetentionError::Unsupported`]
    /// when `dst` lives on another device; [`RetentionError::DeviceFailure`] when the copy fails.
    pub fn copy_to_device<T: DeviceElement>(
        &self,
        host: &[T],
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        self.check_same_device(dst)?;
        check_len("host source", host.len(), dst.len())?;
        self.inner
            .memcpy_htod(host, &mut dst.slice)
            .map_err(|e| device_error(self.ordinal(), "copying host to device", e))
    }

    /// A host copy of `src`, after all work queued on this stream before it (waits).
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] when `src` lives on another device;
    /// [`RetentionError::DeviceFailure`] when the copy fails, including because an earlier
    /// kernel faulted.
    pub fn download<T: DeviceElement>(&self, src: &DeviceBuffer<T>) -> Result<Vec<T>> {
        let mut host = vec![T::default(); src.len()];
        self.copy_to_host(src, &mut host)?;
        Ok(host)
    }

    /// Copies `src` into `host`, which must have exactly `src.len()` elements (waits).
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] on a length mismatch, otherwise as [`Stream::download`].
    pub fn copy_to_host<T: DeviceElement>(
        &self,
        src: &DeviceBuffer<T>,
        host: &mut [T],
    ) -> Result<()> {
        self.check_same_device(src)?;
        check_len("host destination", host.len(), src.len())?;
        self.inner
            .memcpy_dtoh(&src.slice, host)
            .map_err(|e| device_error(self.ordinal(), "copying device to host", e))?;
        self.synchronize()
    }

    /// Copies `host` into `dst[offset..offset + host.len()]` (in stream order; the host slice
    /// is read before this returns).
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] when the range does not fit in `dst`; otherwise as
    /// [`Stream::copy_to_device`].
    pub fn copy_to_device_at<T: DeviceElement>(
        &self,
        host: &[T],
        dst: &mut DeviceBuffer<T>,
        offset: usize,
    ) -> Result<()> {
        self.check_same_device(dst)?;
        let range = check_range("device destination", offset, host.len(), dst.len())?;
        let mut view = dst.slice.slice_mut(range);
        self.inner
            .memcpy_htod(host, &mut view)
            .map_err(|e| device_error(self.ordinal(), "copying host to device", e))
    }

    /// Copies `src[offset..offset + host.len()]` into `host` (waits).
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] when the range does not fit in `src`; otherwise as
    /// [`Stream::download`].
    pub fn copy_to_host_from<T: DeviceElement>(
        &self,
        src: &DeviceBuffer<T>,
        offset: usize,
        host: &mut [T],
    ) -> Result<()> {
        self.check_same_device(src)?;
        let range = check_range("device source", offset, host.len(), src.len())?;
        let view = src.slice.slice(range);
        self.inner
            .memcpy_dtoh(&view, host)
            .map_err(|e| device_error(self.ordinal(), "copying device to host", e))?;
        self.synchronize()
    }

    /// Copies `len` elements from `src[src_offset..]` to `dst[dst_offset..]` on the device,
    /// in stream order.
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] when either range does not fit;
    /// [`RetentionError::Unsupported`] for a buffer of another device;
    /// [`RetentionError::DeviceFailure`] when the copy fails.
    pub fn copy_on_device<T: DeviceElement>(
        &self,
        (src, src_offset): (&DeviceBuffer<T>, usize),
        (dst, dst_offset): (&mut DeviceBuffer<T>, usize),
        len: usize,
    ) -> Result<()> {
        self.check_same_device(src)?;
        self.check_same_device(dst)?;
        let from = check_range("device source", src_offset, len, src.len())?;
        let to = check_range("device destination", dst_offset, len, dst.len())?;
        let view = src.slice.slice(from);
        let mut target = dst.slice.slice_mut(to);
        self.inner
            .memcpy_dtod(&view, &mut target)
            .map_err(|e| device_error(self.ordinal(), "copying on the device", e))
    }

    /// Sets `dst[offset..offset + len]` to zero bits, in stream order.
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] when the range does not fit in `dst`;
    /// [`RetentionError::DeviceFailure`] when the driver call fails.
    pub fn zero_range<T: DeviceElement>(
        &self,
        dst: &mut DeviceBuffer<T>,
        offset: usize,
        len: usize,
    ) -> Result<()> {
        self.check_same_device(dst)?;
        let range = check_range("device destination", offset, len, dst.len())?;
        let mut view = dst.slice.slice_mut(range);
        self.inner
            .memset_zeros(&mut view)
            .map_err(|e| device_error(self.ordinal(), "clearing device memory", e))
    }

    /// Waits until all work queued on this stream has finished.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the device reports a failure, including an earlier
    /// kernel's fault.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .synchronize()
            .map_err(|e| device_error(self.ordinal(), "synchronising a stream", e))
    }

    /// A timing event recorded at the current end of this stream.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`] when the driver cannot create or record it.
    pub fn record_event(&self) -> Result<Event> {
        self.inner
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map(|inner| Event { inner })
            .map_err(|e| device_error(self.ordinal(), "recording an event", e))
    }

    /// Queues `kernel` on this stream with `args` in the entry's parameter order.
    ///
    /// Checked here, as typed errors: the kernel and every buffer belong to this stream's
    /// device; every extent of `dims` is at least 1; `args` match the entry's declared
    /// `.param` list in number and type (a buffer fills a 64-bit parameter).
    ///
    /// # Safety
    /// The caller guarantees what PTX parameter types cannot say: each buffer argument holds
    /// the element type the kernel reads or writes at that position, and is large enough
    /// for every address the kernel computes from `dims` and the scalar arguments (our
    /// kernels document their parameter order and the extents they touch). The kernel must
    /// also not write a buffer passed with [`KernelArg::input`].
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] for an argument mismatch or when the driver refuses the
    /// launch (e.g. too many threads per block, too much shared memory);
    /// [`RetentionError::Unsupported`] for a zero extent or an object of another device.
    pub unsafe fn launch(
        &self,
        kernel: &Kernel,
        dims: LaunchDims,
        args: &mut [KernelArg<'_>],
    ) -> Result<()> {
        let ordinal = self.ordinal();
        if kernel.ctx != *self.inner.context() {
            return Err(foreign_object("a kernel", ordinal, kernel.ordinal()));
        }
        if !dims.is_nonempty() {
            return Err(RetentionError::Unsupported {
                what: "launch extent".into(),
                value: format!("grid {:?}, block {:?}", dims.grid, dims.block),
                reason: "every grid and block extent must be at least 1".into(),
            });
        }
        check_args(kernel, args)?;
        for buffer in args.iter().filter_map(KernelArg::buffer) {
            self.check_same_device(buffer)?;
        }

        let mut builder = self.inner.launch_builder(&kernel.func);
        for arg in args.iter_mut() {
            match &mut arg.0 {
                ArgValue::Read(buffer) => buffer.push_read(&mut builder),
                ArgValue::Write(buffer) => buffer.push_write(&mut builder),
                ArgValue::U32(value) => {
                    builder.arg(&*value);
                }
                ArgValue::F32(value) => {
                    builder.arg(&*value);
                }
                ArgValue::U64(value) => {
                    builder.arg(&*value);
                }
            }
        }
        if dims.shared_bytes > DEFAULT_DYNAMIC_SHARED_LIMIT {
            // Above 48 KiB the driver needs the kernel's opt-in first, else the launch fails.
            let bytes = i32::try_from(dims.shared_bytes).unwrap_or(i32::MAX);
            kernel
                .func
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes,
                )
                .map_err(|e| {
                    kernel_error(
                        ordinal,
                        &format!(
                            "allowing `{}` {} B of dynamic shared memory",
                            kernel.entry(),
                            dims.shared_bytes
                        ),
                        e,
                    )
                })?;
        }
        let config = cudarc::driver::LaunchConfig {
            grid_dim: dims.grid,
            block_dim: dims.block,
            shared_mem_bytes: dims.shared_bytes,
        };
        // SAFETY: the argument list was checked above against the entry's declared `.param`
        // list, so the driver copies exactly as many values, each of its declared width, as
        // the kernel takes; every buffer is device memory of this stream's context, kept
        // alive by the borrow in `args` and ordered against other streams by the events
        // cudarc records per buffer. What the caller guarantees by calling this `unsafe fn`
        // (element types and extents the kernel touches, inputs not written) covers the
        // rest of the kernel's memory accesses.
        let launched = unsafe { builder.launch(config) };
        launched.map(|_| ()).map_err(|e| {
            kernel_error(
                ordinal,
                &format!(
                    "launching `{}` (grid {:?}, block {:?}, {} B dynamic shared)",
                    kernel.entry(),
                    dims.grid,
                    dims.block,
                    dims.shared_bytes
                ),
                e,
            )
        })
    }

    fn check_same_device(&self, buffer: &dyn BufferArg) -> Result<()> {
        let owner = buffer.context();
        if owner == self.inner.context() {
            Ok(())
        } else {
            Err(foreign_object("a buffer", self.ordinal(), owner.ordinal()))
        }
    }

    fn checked_bytes<T>(&self, len: usize) -> Result<usize> {
        if len == 0 {
            return Err(RetentionError::Unsupported {
                what: "device buffer length".into(),
                value: "0".into(),
                reason: "a device buffer holds at least one element".into(),
            });
        }
        len.checked_mul(size_of::<T>())
            .ok_or(RetentionError::OutOfMemory {
                requested: usize::MAX,
                available: self.free_bytes(),
            })
    }

    /// Free device bytes for an out-of-memory report; 0 when even that query fails.
    fn free_bytes(&self) -> usize {
        self.inner
            .context()
            .mem_get_info()
            .map_or(0, |(free, _)| free)
    }
}

fn check_len(what: &str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(RetentionError::DataLength {
            tensor: what.into(),
            len: got,
            shape: vec![expected],
            needed: expected,
        })
    }
}

/// `offset..offset + len` as a range when it lies inside `0..available`.
fn check_range(
    what: &str,
    offset: usize,
    len: usize,
    available: usize,
) -> Result<std::ops::Range<usize>> {
    match offset.checked_add(len) {
        Some(end) if end <= available => Ok(offset..end),
        _ => Err(RetentionError::DataLength {
            tensor: what.into(),
            len: available,
            shape: vec![offset, len],
            needed: offset.saturating_add(len),
        }),
    }
}

fn check_args(kernel: &Kernel, args: &[KernelArg<'_>]) -> Result<()> {
    let params = kernel.params();
    let fits = args.len() == params.len() && args.iter().zip(params).all(|(a, p)| a.fits(p));
    if fits {
        return Ok(());
    }
    let declared: Vec<String> = params.iter().map(ToString::to_string).collect();
    let given: Vec<&str> = args.iter().map(KernelArg::describe).collect();
    Err(RetentionError::KernelLoad(format!(
        "CUDA device {}: entry `{}` takes ({}) but the launch passes ({})",
        kernel.ordinal(),
        kernel.entry(),
        declared.join(", "),
        given.join(", ")
    )))
}
