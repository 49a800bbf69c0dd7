//! Tensor descriptors: what C passes (`RetentionTensor`: pointer, dtype, shape, strides) and
//! the checked [`View`] the entries work with — borrowed as a `DeviceTensor` of the handle's
//! device (no copy) or, for the host-only training ops, copied into a `HostTensor`.
//! Layouts are ARCHITECTURE §1's, dense row-major; anything else is refused with
//! `RETENTION_NON_CONTIGUOUS` (the runtime's kernels read dense rows only).

use std::ffi::c_void;

use retention::{Device, DeviceDtype, DeviceTensor, Element, HostTensor};

use crate::status::{Failure, RetentionStatus};

/// Element type of a tensor.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionDtype {
    /// 32-bit float (also every state, dH0 and d log γ tensor).
    F32 = 0,
    /// IEEE 16-bit float.
    F16 = 1,
    /// bfloat16.
    Bf16 = 2,
}

/// A borrowed tensor: data pointer, dtype, shape and strides in elements (rank ≤ 4; unused
/// trailing entries are ignored). Host memory on the CPU and the emulator, a `CUdeviceptr`
/// on CUDA.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RetentionTensor {
    /// Pointer to the first element (host or device memory, see above).
    pub data: *mut c_void,
    /// Element type, a `RetentionDtype` value.
    pub dtype: i32,
    /// Number of used dimensions (4 for sequences and states, 3 for decode rows, 1 for d log γ).
    pub ndim: i32,
    /// Sizes of the used dimensions.
    pub shape: [i64; 4],
    /// Strides in elements; must be the contiguous row-major strides (size-1 dims are free).
    pub strides: [i64; 4],
}

/// A checked descriptor: non-null data of a known dtype, positive sizes, contiguous.
#[derive(Debug, Clone)]
pub(crate) struct View {
    name: String,
    data: *mut c_void,
    pub dtype: DeviceDtype,
    pub shape: Vec<usize>,
}

fn bad(code: RetentionStatus, msg: String) -> Failure {
    Failure::new(code, msg)
}

/// Check `t` (of rank `rank`) and return its view.
///
/// # Safety
/// `t` must be null or point to a readable `RetentionTensor`.
pub(crate) unsafe fn view(
    t: *const RetentionTensor,
    name: &str,
    rank: usize,
) -> Result<View, Failure> {
    // SAFETY: null or readable, per the caller.
    let Some(d) = (unsafe { t.as_ref() }) else {
        return Err(bad(RetentionStatus::NullPointer, format!("{name} is null")));
    };
    if d.data.is_null() {
        return Err(bad(
            RetentionStatus::NullPointer,
            format!("{name}.data is null"),
        ));
    }
    let dtype = match d.dtype {
        0 => DeviceDtype::F32,
        1 => DeviceDtype::F16,
        2 => DeviceDtype::Bf16,
        x => {
            return Err(bad(
                RetentionStatus::BadDtype,
                format!("{name}: dtype {x} unknown (F32 0, F16 1, BF16 2)"),
            ));
        }
    };
    if d.ndim != rank as i32 {
        return Err(bad(
            RetentionStatus::BadShape,
            format!("{name}: rank {} != {rank}", d.ndim),
        ));
    }
    let mut shape = Vec::with_capacity(rank);
    for (i, &s) in d.shape[..rank].iter().enumerate() {
        if s <= 0 {
            return Err(bad(
                RetentionStatus::BadShape,
                format!("{name}: dimension {i} has size {s}"),
            ));
        }
        shape.push(s as usize);
    }
    let mut expect = 1i64;
    for i in (0..rank).rev() {
        if d.shape[i] > 1 && d.strides[i] != expect {
            return Err(bad(
                RetentionStatus::NonContiguous,
                format!(
                    "{name}: stride {} of dimension {i} is not the contiguous {expect} \
                     (only dense row-major layouts are served; make the tensor contiguous)",
                    d.strides[i]
                ),
            ));
        }
        expect = expect.checked_mul(d.shape[i]).ok_or_else(|| {
            bad(
                RetentionStatus::BadShape,
                format!("{name}: element count overflows"),
            )
        })?;
    }
    if !(d.data as usize).is_multiple_of(dtype.size()) {
        return Err(bad(
            RetentionStatus::InvalidArgument,
            format!("{name}.data is not aligned to its {dtype} elements"),
        ));
    }
    Ok(View {
        name: name.to_string(),
        data: d.data,
        dtype,
        shape,
    })
}

/// [`view`] of an optional tensor: `None` for a null pointer.
///
/// # Safety
/// As [`view`].
pub(crate) unsafe fn optional(
    t: *const RetentionTensor,
    name: &str,
    rank: usize,
) -> Result<Option<View>, Failure> {
    if t.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded precondition.
    unsafe { view(t, name, rank) }.map(Some)
}

impl View {
    /// `Err(BadDtype)` unless the view holds `want`.
    pub fn expect_dtype(&self, want: DeviceDtype) -> Result<(), Failure> {
        if self.dtype == want {
            return Ok(());
        }
        Err(bad(
            RetentionStatus::BadDtype,
            format!("{}: dtype {} where {want} is needed", self.name, self.dtype),
        ))
    }

    /// The caller's memory as a borrowed tensor of `device` (no copy).
    ///
    /// # Safety
    /// The descriptor's data must be `device` memory holding its shape's elements, alive and
    /// not accessed by anyone else while the returned tensor is used.
    pub unsafe fn borrow(&self, device: &Device) -> DeviceTensor {
        // SAFETY: forwarded precondition; alignment was checked by `view`.
        unsafe { DeviceTensor::from_raw(device, self.dtype, &self.shape, self.data as u64) }
    }

    /// A host copy, checked to hold `T`.
    ///
    /// # Safety
    /// The data must be readable host memory holding the shape's elements.
    pub unsafe fn read<T: Element>(&self) -> Result<HostTensor<T>, Failure> {
        self.expect_dtype(DeviceDtype::of::<T>()?)?;
        let n = self.shape.iter().product();
        // SAFETY: `T` is the descriptor's dtype; `n` elements are readable, per the caller.
        let data = unsafe { std::slice::from_raw_parts(self.data.cast::<T>(), n) }.to_vec();
        Ok(HostTensor::new(self.shape.clone(), data)?)
    }

    /// Overwrite the described host memory with `src`, which must have its dtype and shape.
    ///
    /// # Safety
    /// The data must be writable host memory holding the shape's elements, not aliasing `src`.
    pub unsafe fn write<T: Element>(&self, src: &HostTensor<T>) -> Result<(), Failure> {
        self.expect_dtype(DeviceDtype::of::<T>()?)?;
        if self.shape != src.shape() {
            return Err(bad(
                RetentionStatus::BadShape,
                format!(
                    "{}: expected shape {:?}, got {:?}",
                    self.name,
                    src.shape(),
                    self.shape
                ),
            ));
        }
        // SAFETY: writable for `src.len()` elements of `T`, per the caller and the checks above.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.data.cast::<T>(), src.len()) };
        dst.copy_from_slice(src.data());
        Ok(())
    }
}
