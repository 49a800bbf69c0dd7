//! Conversions between candle's CPU storage / tensors and the facade's host tensors, and the
//! error mapping. Only dense (contiguous) layouts are read; the public functions make their
//! inputs contiguous before the op sees them.

use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};
use retention::{CpuElement, HostTensor, RetentionError};

/// The element types both candle and the CPU kernels hold.
pub(crate) trait Elem: CpuElement + WithDType {}
impl<T: CpuElement + WithDType> Elem for T {}

/// A retention error as a candle error (its message kept).
pub(crate) fn err(e: RetentionError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The retention input dtype of a candle dtype: f32, f16 or bf16.
pub(crate) fn check_dtype(name: &str, d: DType) -> candle_core::Result<DType> {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Ok(d),
        other => Err(candle_core::Error::Msg(format!(
            "retention: {name} has dtype {other:?}; f32, f16 or bf16 expected"
        ))),
    }
}

/// A host copy of a contiguous CPU storage region of element type `T`.
pub(crate) fn host<T: Elem>(
    s: &CpuStorage,
    l: &Layout,
    name: &str,
) -> candle_core::Result<HostTensor<T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        return Err(candle_core::Error::Msg(format!(
            "retention: {name} is not contiguous; call .contiguous() first"
        )));
    };
    let data = s.as_slice::<T>()?[start..end].to_vec();
    HostTensor::new(l.dims().to_vec(), data).map_err(err)
}

/// A host copy of a candle tensor of element type `T`.
pub(crate) fn host_of<T: Elem>(t: &Tensor) -> candle_core::Result<HostTensor<T>> {
    let data = t.flatten_all()?.to_vec1::<T>()?;
    HostTensor::new(t.dims().to_vec(), data).map_err(err)
}

/// A candle tensor holding `h`, on `like`'s device.
pub(crate) fn tensor_of<T: Elem>(h: HostTensor<T>, like: &Tensor) -> candle_core::Result<Tensor> {
    let dims = h.shape().to_vec();
    Tensor::from_vec(h.into_data(), dims, like.device())
}
