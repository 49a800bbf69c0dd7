//! `DeviceTensor`: a dense row-major tensor in one device's memory — GPU memory on
//! `Device::Cuda`, the emulator's memory on `Device::Emulated`, host memory on `Device::Cpu`.
//!
//! Storage is owned (a block of the device's [`MemoryPool`], returned to it on drop) or
//! borrowed (memory the caller owns, e.g. a PyTorch or candle buffer, passed by address
//! through [`DeviceTensor::from_raw`] and never freed here). Host data enters and leaves only
//! through [`DeviceTensor::upload`] / [`DeviceTensor::download`] on a [`Stream`], which counts
//! the bytes; ops read and write the tensors where they are.
//!
//! Owned storage returns to its pool as soon as the tensor is dropped, with no stream
//! ordering: on CUDA, synchronise a non-default stream that used a tensor before dropping it.

use std::sync::{Arc, Weak};

use retention_core::{Dtype, Element, HostTensor, Result, RetentionError};

use crate::device::Device;
use crate::memory_pool::{MemoryPool, PoolBuffer};
use crate::stream::Stream;

/// Element type of a device tensor: the input dtypes, plus `u32` for index tensors (slot rows,
/// `cu_seqlens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceDtype {
    /// IEEE binary32 (also every state tensor).
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
    /// Unsigned 32-bit integers.
    U32,
}

impl DeviceDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DeviceDtype::F16 | DeviceDtype::Bf16 => 2,
            DeviceDtype::F32 | DeviceDtype::U32 => 4,
        }
    }

    /// The device dtype of host elements `T`.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] for f64 (the oracle's type, never on a device).
    pub fn of<T: Element>() -> Result<Self> {
        T::DTYPE
            .map(Self::from)
            .ok_or_else(|| RetentionError::Unsupported {
                what: "dtype".into(),
                value: "f64".into(),
                reason: "device tensors hold f32, f16, bf16 or u32".into(),
            })
    }

    /// The input dtype this is, if it is one.
    pub fn float(self) -> Option<Dtype> {
        match self {
            DeviceDtype::F32 => Some(Dtype::F32),
            DeviceDtype::F16 => Some(Dtype::F16),
            DeviceDtype::Bf16 => Some(Dtype::Bf16),
            DeviceDtype::U32 => None,
        }
    }
}

impl From<Dtype> for DeviceDtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => DeviceDtype::F32,
            Dtype::F16 => DeviceDtype::F16,
            Dtype::Bf16 => DeviceDtype::Bf16,
        }
    }
}

impl std::fmt::Display for DeviceDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceDtype::F32 => "f32",
            DeviceDtype::F16 => "f16",
            DeviceDtype::Bf16 => "bf16",
            DeviceDtype::U32 => "u32",
        })
    }
}

/// Where a tensor's bytes are.
#[derive(Debug)]
enum Storage {
    /// A pool block; `alive` lets recorded launches (graphs) notice when it is gone.
    Owned { _block: PoolBuffer, alive: Arc<()> },
    /// Caller memory, never freed here.
    Borrowed,
}

/// A dense row-major tensor on one device. See the module docs.
#[derive(Debug)]
pub struct DeviceTensor {
    dtype: DeviceDtype,
    shape: Vec<usize>,
    device: Device,
    /// Host address (CPU, emulator) or `CUdeviceptr` (CUDA) of the first element.
    address: u64,
    storage: Storage,
}

impl DeviceTensor {
    /// A zero-filled tensor from `memory`, a pool of `device`'s memory
    /// ([`MemoryPool::on`]).
    ///
    /// # Errors
    /// [`RetentionError::WrongDevice`] when the pool holds another kind of memory;
    /// [`RetentionError::OutOfMemory`]; a device failure clearing it.
    pub fn zeros(
        memory: &MemoryPool,
        device: &Device,
        dtype: DeviceDtype,
        shape: &[usize],
    ) -> Result<Self> {
        let on_gpu = matches!(device, Device::Cuda(_));
        if memory.is_device_memory() != on_gpu {
            return Err(RetentionError::WrongDevice {
                tensor: "memory pool".into(),
                expected: device.name(),
                got: if on_gpu { "host" } else { "a GPU" }.into(),
            });
        }
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let mut block = memory.alloc(bytes.max(1))?;
        block.fill_zero()?;
        if let Device::Cuda(ordinal) = device {
            // Pools allocate and clear on the device's default stream; waiting here (at
            // allocation, never in an op) orders that before work on any other stream.
            crate::cuda_target::CudaTarget::open(*ordinal)?
                .stream()
                .synchronize()?;
        }
        let address = match block.bytes_mut() {
            Some(b) => b.as_mut_ptr() as u64,
            None => block.device().map_or(0, crate::cuda::DeviceBuffer::address),
        };
        Ok(Self {
            dtype,
            shape: shape.to_vec(),
            device: device.clone(),
            address,
            storage: Storage::Owned {
                _block: block,
                alive: Arc::new(()),
            },
        })
    }

    /// A new tensor on `device` holding a copy of `host` (counted on `stream`).
    ///
    /// # Errors
    /// As [`DeviceTensor::zeros`] and [`DeviceTensor::copy_from_host`].
    pub fn upload<T: Element>(
        memory: &MemoryPool,
        host: &HostTensor<T>,
        stream: &Stream,
    ) -> Result<Self> {
        let mut t = Self::zeros(
            memory,
            stream.device(),
            DeviceDtype::of::<T>()?,
            host.shape(),
        )?;
        t.copy_from_host(host, stream)?;
        Ok(t)
    }

    /// A view of caller-owned memory: `shape` elements of `dtype` at `address` on `device`
    /// (a `CUdeviceptr` on `Device::Cuda`, a host address otherwise). Never freed here.
    ///
    /// # Safety
    /// `address` points to at least `shape.iter().product() * dtype.size()` bytes of memory
    /// of `device`, suitably aligned for `dtype` (ops on GPU-like devices also require
    /// [`GPU_ALIGN`]-byte alignment and refuse other addresses), that stays allocated — and is not accessed
    /// by anyone else while an op or a replayed graph uses it — for as long as this tensor
    /// (and any graph captured with it) is used.
    pub unsafe fn from_raw(
        device: &Device,
        dtype: DeviceDtype,
        shape: &[usize],
        address: u64,
    ) -> Self {
        Self {
            dtype,
            shape: shape.to_vec(),
            device: device.clone(),
            address,
            storage: Storage::Borrowed,
        }
    }

    /// Element type.
    pub fn dtype(&self) -> DeviceDtype {
        self.dtype
    }

    /// Dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The device holding the data.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes.
    pub fn num_bytes(&self) -> usize {
        self.len() * self.dtype.size()
    }

    /// The same elements under another shape of equal element count (dense row-major, so
    /// no byte moves): `[N, 1, H, V]` as `[N, H, V]` or `[N, H·V]`, say.
    ///
    /// # Errors
    /// [`RetentionError::ShapeMismatch`] when the element counts differ.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(RetentionError::ShapeMismatch {
                tensor: "reshape".into(),
                expected: format!("{} elements", self.len()),
                got: format!("{shape:?}"),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// True for a view of caller memory ([`DeviceTensor::from_raw`]).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.storage, Storage::Borrowed)
    }

    /// The address of the first element (host address or `CUdeviceptr`).
    pub fn address(&self) -> u64 {
        self.address
    }

    /// A token that dies with owned storage (`None` for borrowed memory).
    pub(crate) fn liveness(&self) -> Option<Weak<()>> {
        match &self.storage {
            Storage::Owned { alive, .. } => Some(Arc::downgrade(alive)),
            Storage::Borrowed => None,
        }
    }

    /// Overwrites the tensor with `host` (same shape and dtype), counted on `stream`.
    ///
    /// # Errors
    /// Shape, dtype or device mismatches; a copy during graph capture; a device failure.
    pub fn copy_from_host<T: Element>(
        &mut self,
        host: &HostTensor<T>,
        stream: &Stream,
    ) -> Result<()> {
        self.expect(
            "host data",
            stream.device(),
            DeviceDtype::of::<T>()?,
            host.shape(),
        )?;
        self.write_bytes(0, host.as_bytes(), stream)
    }

    /// Writes `bytes` at byte `offset` of the tensor, counted on `stream`.
    pub(crate) fn write_bytes(
        &mut self,
        offset: usize,
        bytes: &[u8],
        stream: &Stream,
    ) -> Result<()> {
        check_host_copy(stream, offset + bytes.len(), self.num_bytes())?;
        let dst = self.address + offset as u64;
        match stream.cuda() {
            // SAFETY: the range lies inside this tensor (checked above), which is memory of
            // the stream's device while `self` lives.
            Some(s) => unsafe { s.upload_to_address(bytes, dst)? },
            // SAFETY: host memory of this tensor, in range, and `&mut self` is exclusive.
            None => unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len());
            },
        }
        stream.counter().host_to_device(bytes.len());
        Ok(())
    }

    /// Reads `host.len()` bytes from byte `offset` of the tensor, counted on `stream`.
    pub(crate) fn read_bytes(&self, offset: usize, host: &mut [u8], stream: &Stream) -> Result<()> {
        check_host_copy(stream, offset + host.len(), self.num_bytes())?;
        let src = self.address + offset as u64;
        match stream.cuda() {
            // SAFETY: the range lies inside this tensor, memory of the stream's device.
            Some(s) => unsafe { s.download_from_address(src, host)? },
            // SAFETY: host memory of this tensor, in range.
            None => unsafe {
                std::ptr::copy_nonoverlapping(src as *const u8, host.as_mut_ptr(), host.len());
            },
        }
        stream.counter().device_to_host(host.len());
        Ok(())
    }

    /// A host copy of the tensor as `T` (its own dtype), counted on `stream`. Waits for the
    /// stream's earlier work.
    ///
    /// # Errors
    /// A dtype or device mismatch; a copy during graph capture; a device failure.
    pub fn download<T: Element>(&self, stream: &Stream) -> Result<HostTensor<T>> {
        let mut out = HostTensor::<T>::zeros(self.shape.clone());
        self.copy_to_host(&mut out, stream)?;
        Ok(out)
    }

    /// Copies the tensor into `out` (same shape and dtype), counted on `stream`.
    ///
    /// # Errors
    /// As [`DeviceTensor::download`], plus a shape mismatch.
    pub fn copy_to_host<T: Element>(&self, out: &mut HostTensor<T>, stream: &Stream) -> Result<()> {
        self.expect(
            "host output",
            stream.device(),
            DeviceDtype::of::<T>()?,
            out.shape(),
        )?;
        check_host_copy(stream, self.num_bytes(), self.num_bytes())?;
        let host: &mut [u8] = bytemuck::cast_slice_mut(out.data_mut());
        match stream.cuda() {
            // SAFETY: the whole tensor, memory of the stream's device while `self` lives.
            Some(s) => unsafe { s.download_from_address(self.address, host)? },
            // SAFETY: host memory of this tensor, `host.len()` = its byte size.
            None => unsafe {
                std::ptr::copy_nonoverlapping(
                    self.address as *const u8,
                    host.as_mut_ptr(),
                    host.len(),
                );
            },
        }
        stream.counter().device_to_host(host.len());
        Ok(())
    }

    /// Checks that the tensor lives on `device` with `dtype` and `shape`; typed errors name
    /// the tensor.
    ///
    /// # Errors
    /// [`RetentionError::WrongDevice`], [`RetentionError::DtypeMismatch`] or
    /// [`RetentionError::ShapeMismatch`].
    pub fn expect(
        &self,
        name: &str,
        device: &Device,
        dtype: DeviceDtype,
        shape: &[usize],
    ) -> Result<()> {
        if &self.device != device {
            return Err(RetentionError::WrongDevice {
                tensor: name.into(),
                expected: device.name(),
                got: self.device.name(),
            });
        }
        if self.dtype != dtype {
            return Err(RetentionError::DtypeMismatch {
                tensor: name.into(),
                expected: dtype.to_string(),
                got: self.dtype.to_string(),
            });
        }
        if self.shape != shape {
            return Err(RetentionError::ShapeMismatch {
                tensor: name.into(),
                expected: format!("{shape:?}"),
                got: format!("{:?}", self.shape),
            });
        }
        if *device != Device::Cpu && !self.address.is_multiple_of(GPU_ALIGN) {
            return Err(RetentionError::Unsupported {
                what: format!("{name} address"),
                value: format!("{:#x}", self.address),
                reason: format!(
                    "GPU kernels access tensors with {GPU_ALIGN}-byte vector loads and stores \
                     (cp.async, ld.v4), so a borrowed buffer must start {GPU_ALIGN}-byte aligned"
                ),
            });
        }
        Ok(())
    }
}

/// The alignment, in bytes, every tensor an op reads or writes on a GPU-like device must
/// start at: the widest access the kernels make (`cp.async` of 16 bytes, `ld.global.v4` of
/// f32). The pool's blocks always are; [`DeviceTensor::expect`] checks borrowed ones, so a
/// misaligned caller buffer is a typed error rather than a fault on the device.
pub const GPU_ALIGN: u64 = 16;

/// Host copies are refused while a stream captures a graph (a replay would re-read host
/// memory the caller may have reused) and must stay inside the tensor.
fn check_host_copy(stream: &Stream, end: usize, size: usize) -> Result<()> {
    if stream.is_capturing() {
        return Err(RetentionError::Unsupported {
            what: "host copy".into(),
            value: "during graph capture".into(),
            reason: "a captured graph must not depend on host memory; upload before capturing"
                .into(),
        });
    }
    if end > size {
        return Err(RetentionError::DataLength {
            tensor: "device tensor".into(),
            len: size,
            shape: vec![end],
            needed: end,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_gen::Arch;

    #[test]
    fn uploads_round_trip_and_are_counted() {
        for device in [Device::Cpu, Device::Emulated(Arch::Sm90)] {
            let mem = MemoryPool::on(&device, None).unwrap();
            let stream = Stream::new(&device).unwrap();
            let host =
                HostTensor::new(vec![2, 3], vec![1.0f32, -2.0, 3.5, 0.0, 7.0, -0.25]).unwrap();
            let t = DeviceTensor::upload(&mem, &host, &stream).unwrap();
            assert_eq!(
                (t.dtype(), t.shape(), t.num_bytes()),
                (DeviceDtype::F32, &[2, 3][..], 24)
            );
            assert_eq!(t.download::<f32>(&stream).unwrap(), host);
            let moved = stream.transfers();
            assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (24, 24));
            assert!(matches!(
                t.download::<half::bf16>(&stream),
                Err(RetentionError::DtypeMismatch { .. })
            ));
            assert!(matches!(
                t.expect("t", &device, DeviceDtype::F32, &[3, 2]),
                Err(RetentionError::ShapeMismatch { .. })
            ));
        }
    }

    #[test]
    fn capture_refuses_host_copies_and_copies_stay_in_bounds() {
        let mem = MemoryPool::new();
        let stream = Stream::new(&Device::Emulated(Arch::Sm80)).unwrap();
        let mut t = DeviceTensor::zeros(&mem, stream.device(), DeviceDtype::U32, &[4]).unwrap();
        stream.begin_capture().unwrap();
        assert!(matches!(
            t.write_bytes(0, &[0; 16], &stream),
            Err(RetentionError::Unsupported { .. })
        ));
        let graph = stream.end_capture().unwrap();
        assert_eq!(graph.launches(), Some(0));
        assert!(t.write_bytes(4, &[0; 16], &stream).is_err(), "past the end");
    }
}
