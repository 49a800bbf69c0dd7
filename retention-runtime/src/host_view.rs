//! Host-memory device tensors (`Device::Cpu`) seen as [`HostTensor`]s, so the CPU kernels of
//! `retention-kernels` serve the device API. These copies stay in host memory: nothing
//! crosses a host↔device boundary, so they are not counted as transfers.

use retention_core::{Element, HostTensor, Result, RetentionError};

use crate::device::Device;
use crate::tensor::DeviceTensor;

fn check_cpu(t: &DeviceTensor) -> Result<()> {
    if t.device() == &Device::Cpu {
        Ok(())
    } else {
        Err(RetentionError::WrongDevice {
            tensor: "cpu view".into(),
            expected: "cpu".into(),
            got: t.device().name(),
        })
    }
}

/// A host copy of a CPU tensor's elements (the caller checked its dtype is `T`'s).
pub(crate) fn read<T: Element>(t: &DeviceTensor) -> Result<HostTensor<T>> {
    check_cpu(t)?;
    let mut out = HostTensor::<T>::zeros(t.shape().to_vec());
    let dst: &mut [u8] = bytemuck::cast_slice_mut(out.data_mut());
    let n = dst.len().min(t.num_bytes());
    // SAFETY: a CPU tensor's address is host memory of `num_bytes()` bytes, alive while `t` is.
    unsafe { std::ptr::copy_nonoverlapping(t.address() as *const u8, dst.as_mut_ptr(), n) };
    Ok(out)
}

/// Overwrites a CPU tensor with `h`'s elements (same byte size).
pub(crate) fn write<T: Element>(t: &mut DeviceTensor, h: &HostTensor<T>) -> Result<()> {
    check_cpu(t)?;
    let src = h.as_bytes();
    if src.len() != t.num_bytes() {
        return Err(RetentionError::DataLength {
            tensor: "cpu output".into(),
            len: src.len(),
            shape: t.shape().to_vec(),
            needed: t.num_bytes(),
        });
    }
    // SAFETY: as in `read`; `&mut t` is exclusive.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), t.address() as *mut u8, src.len()) };
    Ok(())
}
