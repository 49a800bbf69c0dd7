//! Tensors as the Python layer hands them over: `(address, dtype, shape)` of a contiguous
//! torch tensor that the Python caller keeps alive for the whole call.
//!
//! The contract (kept by `retention/_native_call.py`, the only caller): the address is the
//! `data_ptr()` of a contiguous tensor of exactly that dtype and shape, on the device the
//! call names, alive and not used by anyone else until the call returns. Checked here:
//! the dtype name, a null or misaligned address of a non-empty tensor, and a shape whose
//! element count overflows — so a misuse of this private module is an exception, not a crash,
//! in every case a Rust check can see.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use retention_core::{Dtype, Element, HostTensor};
use retention_runtime::{Device, DeviceDtype, DeviceTensor};

use crate::error::{IntoPy, PyResult};

/// One tensor handed over by Python.
#[derive(Debug, Clone, FromPyObject)]
pub struct Raw {
    /// `data_ptr()`: a host address, or a `CUdeviceptr` for a CUDA tensor.
    pub address: u64,
    /// torch's dtype name without the `torch.` prefix.
    pub dtype: String,
    /// Dimensions, row-major and contiguous.
    pub shape: Vec<usize>,
}

/// The device a call runs on: `None` for the CPU, else a CUDA ordinal.
pub fn device_of(cuda: Option<usize>) -> PyResult<Device> {
    match cuda {
        None => Ok(Device::Cpu),
        Some(ordinal) => Device::cuda(ordinal).py(),
    }
}

impl Raw {
    /// The floating dtype of a retention input.
    pub fn float(&self, name: &str) -> PyResult<Dtype> {
        match self.dtype.as_str() {
            "float32" => Ok(Dtype::F32),
            "float16" => Ok(Dtype::F16),
            "bfloat16" => Ok(Dtype::Bf16),
            other => Err(PyTypeError::new_err(format!(
                "`{name}` has dtype {other}; retention takes float32, float16 or bfloat16"
            ))),
        }
    }

    fn device_dtype(&self, name: &str) -> PyResult<DeviceDtype> {
        Ok(self.float(name)?.into())
    }

    /// Elements, checked for overflow, and the address checked non-null and aligned when
    /// there are any.
    fn checked_len(&self, name: &str, elem: usize) -> PyResult<usize> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|n| n.checked_mul(elem).is_some())
            .ok_or_else(|| PyValueError::new_err(format!("`{name}` is too large")))?;
        if n > 0 && (self.address == 0 || !self.address.is_multiple_of(elem as u64)) {
            return Err(PyValueError::new_err(format!(
                "`{name}` has a null or misaligned data pointer"
            )));
        }
        Ok(n)
    }

    /// A borrowed view for the device API (no copy).
    pub fn view(&self, name: &str, device: &Device) -> PyResult<DeviceTensor> {
        let dtype = self.device_dtype(name)?;
        self.checked_len(name, dtype.size())?;
        // SAFETY: the module contract above: `address` is the data of a live, contiguous
        // tensor of `shape` and `dtype` on `device`, kept alive and unshared by the Python
        // caller until this call returns, and the view does not outlive the call.
        Ok(unsafe { DeviceTensor::from_raw(device, dtype, &self.shape, self.address) })
    }

    /// A borrowed view of f32 state (h0, ht).
    pub fn state_view(&self, name: &str, device: &Device) -> PyResult<DeviceTensor> {
        self.expect_dtype::<f32>(name)?;
        self.view(name, device)
    }

    fn expect_dtype<T: Element>(&self, name: &str) -> PyResult<()> {
        let want = dtype_name::<T>();
        if self.dtype != want {
            return Err(PyTypeError::new_err(format!(
                "`{name}` has dtype {}; expected {want}",
                self.dtype
            )));
        }
        Ok(())
    }

    /// A host copy of a CPU tensor.
    pub fn host<T: Element>(&self, name: &str) -> PyResult<HostTensor<T>> {
        self.expect_dtype::<T>(name)?;
        let n = self.checked_len(name, std::mem::size_of::<T>())?;
        let data = if n == 0 {
            Vec::new()
        } else {
            // SAFETY: the module contract: `address` is the non-null, aligned (checked
            // above) data of a live contiguous CPU tensor of `n` elements of `T`, not
            // written by anyone during this call.
            unsafe { std::slice::from_raw_parts(self.address as *const T, n) }.to_vec()
        };
        HostTensor::new(self.shape.clone(), data).py()
    }

    /// Copies `t` into this CPU tensor; the shapes must be equal.
    pub fn write<T: Element>(&self, name: &str, t: &HostTensor<T>) -> PyResult<()> {
        self.expect_dtype::<T>(name)?;
        let n = self.checked_len(name, std::mem::size_of::<T>())?;
        if t.shape() != self.shape.as_slice() {
            return Err(PyValueError::new_err(format!(
                "`{name}`: result shape {:?} differs from the output's {:?}",
                t.shape(),
                self.shape
            )));
        }
        if n > 0 {
            // SAFETY: as in `host`, and the Python caller gave this tensor as an output
            // that nothing else reads or writes during the call.
            unsafe { std::slice::from_raw_parts_mut(self.address as *mut T, n) }
                .copy_from_slice(t.data());
        }
        Ok(())
    }
}

/// torch's name for an element type.
fn dtype_name<T: Element>() -> &'static str {
    match T::DTYPE {
        Some(Dtype::F32) => "float32",
        Some(Dtype::F16) => "float16",
        Some(Dtype::Bf16) => "bfloat16",
        None => "float64",
    }
}
