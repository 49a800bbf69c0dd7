//! Dense GEMMs on device tensors, for model code around retention (projections, FFN): on a
//! CUDA stream through cuBLAS (`libcublas` opened at run time, like the driver), in the
//! stream's order, with no synchronisation and no host copy (ARCHITECTURE §2: device-resident
//! tensors). On `Device::Cpu` and `Device::Emulated`, whose tensors are host memory, the same
//! calls run the `gemm` crate on the tensors' own bytes (`blas_host`; f32 and f16), so model
//! code is one body for every device and runs in CI on the emulator. The emulator has no time
//! model for these GEMMs: its predicted times cover kernels only.

use retention_core::{Result, RetentionError};

use crate::blas_host::gemm_host;
use crate::cuda::{BlasDtype, BlasHandle};
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

/// Whether a product overwrites its output or adds to it (a residual connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmWrite {
    /// `out ← x·W`.
    Overwrite,
    /// `out ← out + x·W`.
    Accumulate,
}

/// GEMMs bound to one stream: cuBLAS on CUDA, the `gemm` crate on host-memory devices.
#[derive(Debug)]
pub struct Blas {
    stream: Stream,
    /// `None` on the CPU and emulated devices (host GEMM).
    handle: Option<BlasHandle>,
}

impl Blas {
    /// GEMMs on `stream`: cuBLAS on a CUDA stream, the host GEMM on a CPU or emulated one.
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] when `libcublas` cannot be opened;
    /// [`RetentionError::DeviceFailure`] when cuBLAS cannot create its handle.
    pub fn new(stream: &Stream) -> Result<Self> {
        let handle = match stream.cuda() {
            Some(cuda) => Some(BlasHandle::new(cuda)?),
            None => None,
        };
        Ok(Self {
            stream: stream.clone(),
            handle,
        })
    }

    /// The stream the products run on.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// `out (+)= x·W` with row-major x `[m, k]` (any rank: its last axis is k), W `[k, n]`
    /// and out `[m, n]` (the same leading axes as x, last axis n); all three f32, f16 or bf16
    /// alike (f32 or f16 on host-memory devices), on the stream's device; f32 accumulation.
    /// On CUDA it is enqueued and returns before the product has run.
    ///
    /// # Errors
    /// [`RetentionError::WrongDevice`], [`RetentionError::DtypeMismatch`] or
    /// [`RetentionError::ShapeMismatch`] naming the tensor; bf16 on a host-memory device;
    /// a cuBLAS failure.
    pub fn linear_into(
        &self,
        x: &DeviceTensor,
        w: &DeviceTensor,
        out: &mut DeviceTensor,
        write: GemmWrite,
    ) -> Result<()> {
        let device = self.stream.device();
        let dtype = x.dtype();
        blas_dtype(dtype)?;
        let &[k, n] = w.shape() else {
            return Err(shape_error("W", "rank 2 [k, n]", w.shape()));
        };
        let (lead, x_k) = split_last(x.shape());
        if x_k != k {
            return Err(shape_error("x", &format!("[.., k = {k}]"), x.shape()));
        }
        let m = lead.iter().product::<usize>();
        let out_shape: Vec<usize> = lead.iter().copied().chain([n]).collect();
        x.expect("x", device, x.dtype(), x.shape())?;
        w.expect("W", device, x.dtype(), w.shape())?;
        out.expect("out", device, x.dtype(), &out_shape)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return Err(RetentionError::ZeroDim { axis: "k" });
        }
        let addresses = (x.address(), w.address(), out.address());
        let accumulate = write == GemmWrite::Accumulate;
        let Some(handle) = &self.handle else {
            // SAFETY: host-memory tensors (CPU or emulator) of the stream's device, live for
            // the borrows, with m·k, k·n and m·n elements of one dtype (checked above) at
            // addresses aligned for it (pool blocks, or `from_raw`'s contract); out is a
            // unique borrow, so it overlaps neither operand.
            return unsafe { gemm_host(dtype, (m, k, n), addresses, accumulate) };
        };
        // SAFETY: the three tensors are live on the stream's device (checked above), with
        // m·k, k·n and m·n elements of one dtype (their shapes, checked above); out is a
        // unique borrow, so it is neither operand; the borrows outlast the enqueue, and the
        // caller's tensors outlive stream order as every device op requires.
        unsafe { handle.gemm_row_major(blas_dtype(dtype)?, (m, k, n), addresses, accumulate) }
    }
}

fn blas_dtype(d: DeviceDtype) -> Result<BlasDtype> {
    match d {
        DeviceDtype::F32 => Ok(BlasDtype::F32),
        DeviceDtype::F16 => Ok(BlasDtype::F16),
        DeviceDtype::Bf16 => Ok(BlasDtype::Bf16),
        DeviceDtype::U32 => Err(RetentionError::DtypeMismatch {
            tensor: "x".into(),
            expected: "f32, f16 or bf16".into(),
            got: d.to_string(),
        }),
    }
}

fn split_last(shape: &[usize]) -> (&[usize], usize) {
    match shape.split_last() {
        Some((&last, lead)) => (lead, last),
        None => (&[], 0),
    }
}

fn shape_error(tensor: &str, expected: &str, got: &[usize]) -> RetentionError {
    RetentionError::ShapeMismatch {
        tensor: tensor.into(),
        expected: expected.into(),
        got: format!("{got:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    #[test]
    fn cuda_without_a_gpu_is_a_typed_error() {
        if crate::cuda::device_count() > 0 {
            return; // a GPU is here: the handle opens (covered where GPU tests run)
        }
        let err = Stream::new(&Device::Cuda(0)).and_then(|s| Blas::new(&s));
        assert!(matches!(err, Err(RetentionError::NoDevice(_))), "{err:?}");
    }
}
