//! Dense GEMMs on device tensors, for model code around retention (projections, FFN): on a
//! CUDA stream through cuBLAS (`libcublas` opened at run time, like the driver), in the
//! stream's order, with no synchronisation and no host copy (ARCHITECTURE §2: device-resident
//! tensors). Other devices have their own GEMMs (the `gemm` crate on host memory) and are
//! refused here with a typed error, never a panic.

use retention_core::{Result, RetentionError};

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

/// cuBLAS bound to one CUDA stream.
#[derive(Debug)]
pub struct Blas {
    stream: Stream,
    handle: BlasHandle,
}

impl Blas {
    /// cuBLAS on `stream` (a CUDA stream).
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] for a stream of another device;
    /// [`RetentionError::KernelLoad`] when `libcublas` cannot be opened;
    /// [`RetentionError::DeviceFailure`] when cuBLAS cannot create its handle.
    pub fn new(stream: &Stream) -> Result<Self> {
        let Some(cuda) = stream.cuda() else {
            return Err(RetentionError::Unsupported {
                what: "cuBLAS GEMM device".into(),
                value: stream.device().name(),
                reason: "cuBLAS runs on CUDA devices only".into(),
            });
        };
        Ok(Self {
            stream: stream.clone(),
            handle: BlasHandle::new(cuda)?,
        })
    }

    /// The stream the products run on.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// `out (+)= x·W` with row-major x `[m, k]` (any rank: its last axis is k), W `[k, n]`
    /// and out `[m, n]` (the same leading axes as x, last axis n); all three f32, f16 or bf16
    /// alike, on the stream's device; f32 accumulation. Enqueued: it returns before the
    /// product has run.
    ///
    /// # Errors
    /// [`RetentionError::WrongDevice`], [`RetentionError::DtypeMismatch`] or
    /// [`RetentionError::ShapeMismatch`] naming the tensor; a cuBLAS failure.
    pub fn linear_into(
        &self,
        x: &DeviceTensor,
        w: &DeviceTensor,
        out: &mut DeviceTensor,
        write: GemmWrite,
    ) -> Result<()> {
        let device = self.stream.device();
        let dtype = blas_dtype(x.dtype())?;
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
        // SAFETY: the three tensors are live on the stream's device (checked above), with
        // m·k, k·n and m·n elements of one dtype (their shapes, checked above); out is a
        // unique borrow, so it is neither operand; the borrows outlast the enqueue, and the
        // caller's tensors outlive stream order as every device op requires.
        unsafe {
            self.handle.gemm_row_major(
                dtype,
                (m, k, n),
                (x.address(), w.address(), out.address()),
                write == GemmWrite::Accumulate,
            )
        }
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
    fn other_devices_are_refused_with_a_typed_error() {
        for device in [Device::Cpu, Device::from_name("emulated").unwrap()] {
            let stream = Stream::new(&device).unwrap();
            assert!(matches!(
                Blas::new(&stream),
                Err(RetentionError::Unsupported { .. })
            ));
        }
    }

    #[test]
    fn cuda_without_a_gpu_is_a_typed_error() {
        if crate::cuda::device_count() > 0 {
            return; // a GPU is here: the handle opens (covered where GPU tests run)
        }
        let err = Stream::new(&Device::Cuda(0)).and_then(|s| Blas::new(&s));
        assert!(matches!(err, Err(RetentionError::NoDevice(_))), "{err:?}");
    }
}
