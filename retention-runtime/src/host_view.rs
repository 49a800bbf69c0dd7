//! Host-memory device tensors (`Device::Cpu`) seen by the CPU kernels of `retention-kernels`:
//! borrowed in place as [`TensorView`]s (what the forward ops and the decode step use: no
//! copy, no allocation), or copied into [`HostTensor`]s (the backward ops, whose CPU kernels
//! still return owned tensors). Either way nothing crosses a host↔device boundary, so
//! nothing here counts as a transfer.

use retention_core::{Element, HostTensor, Result, RetentionError, TensorView, TensorViewMut};

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

/// The byte range of `t`'s memory.
fn span(t: &DeviceTensor) -> std::ops::Range<u64> {
    t.address()..t.address() + t.num_bytes() as u64
}

/// Checks `t` is a CPU tensor whose address suits `T` (borrowed memory may not).
fn check_view<T: Element>(t: &DeviceTensor, name: &str) -> Result<()> {
    check_cpu(t)?;
    let align = std::mem::align_of::<T>() as u64;
    if t.num_bytes() == 0 || t.address().is_multiple_of(align) {
        Ok(())
    } else {
        Err(RetentionError::Unsupported {
            what: format!("address of {name}"),
            value: format!("{:#x}", t.address()),
            reason: format!("not aligned to its element's {align} bytes"),
        })
    }
}

/// `t`'s elements in place (the caller checked its dtype is `T`'s).
///
/// # Errors
/// A tensor of another device, an address not aligned for `T`.
pub(crate) fn view<'a, T: Element>(t: &'a DeviceTensor, name: &str) -> Result<TensorView<'a, T>> {
    check_view::<T>(t, name)?;
    let len = t.num_bytes() / std::mem::size_of::<T>();
    let data: &[T] = if len == 0 {
        &[]
    } else {
        // SAFETY: a CPU tensor's address is host memory of `num_bytes()` bytes, aligned for T
        // (checked above), alive and not written by anyone else while `t` is borrowed
        // (DeviceTensor's ownership, or `from_raw`'s contract for borrowed memory).
        unsafe { std::slice::from_raw_parts(t.address() as *const T, len) }
    };
    TensorView::new(name, t.shape(), data)
}

/// `t`'s elements in place, writable (the caller checked its dtype is `T`'s).
///
/// # Errors
/// As [`view`].
pub(crate) fn view_mut<'a, T: Element>(
    t: &'a mut DeviceTensor,
    name: &str,
) -> Result<TensorViewMut<'a, T>> {
    check_view::<T>(t, name)?;
    let len = t.num_bytes() / std::mem::size_of::<T>();
    let address = t.address();
    let data: &mut [T] = if len == 0 {
        &mut []
    } else {
        // SAFETY: as in `view`; `&mut t` is exclusive, and `check_disjoint` has ruled out
        // another tensor of the same op over these bytes.
        unsafe { std::slice::from_raw_parts_mut(address as *mut T, len) }
    };
    TensorViewMut::new(name, t.shape(), data)
}

/// Checks no output's memory overlaps another output's or an input's — possible only with
/// borrowed memory, and undefined behaviour once both are seen as slices.
///
/// # Errors
/// [`RetentionError::Unsupported`] naming the two tensors.
pub(crate) fn check_disjoint(
    outputs: &[(&str, &DeviceTensor)],
    inputs: &[(&str, &DeviceTensor)],
) -> Result<()> {
    for (i, (name, out)) in outputs.iter().enumerate() {
        let others = outputs[i + 1..].iter().chain(inputs);
        for (other_name, other) in others {
            let (a, b) = (span(out), span(other));
            if !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end {
                return Err(RetentionError::Unsupported {
                    what: format!("memory of {name}"),
                    value: format!("{:#x}..{:#x}", a.start, a.end),
                    reason: format!("overlaps {other_name}'s; outputs need memory of their own"),
                });
            }
        }
    }
    Ok(())
}
