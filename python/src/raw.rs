//! Torch tensors as the native layer sees them: read from the `torch.Tensor` object itself
//! (its `data_ptr()`, dtype, shape and device), which must be contiguous. The Python caller
//! holds the tensor for the whole call, so its memory stays allocated while the GIL is
//! released. Checked here, so that even a direct call of this private module with wrong
//! arguments is an exception rather than a crash: the object is a `torch.Tensor`, contiguous,
//! of a supported dtype, on the device the op runs on (host copies only from CPU tensors), with
//! a non-null aligned pointer when non-empty and an element count that does not overflow.

use std::ffi::c_void;
use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use retention_core::{Dtype, Element, HostTensor};
use retention_runtime::{Device, DeviceDtype, DeviceTensor, Stream};

use crate::error::{IntoPy, PyResult};

/// One torch tensor handed over by Python.
#[derive(Debug, Clone)]
pub struct Raw {
    /// `data_ptr()`: a host address, or a `CUdeviceptr` for a CUDA tensor.
    pub address: u64,
    /// torch's dtype name without the `torch.` prefix.
    pub dtype: String,
    /// Dimensions, row-major and contiguous.
    pub shape: Vec<usize>,
    /// `None` on the CPU, else the CUDA ordinal.
    pub cuda: Option<usize>,
}

impl<'a, 'py> FromPyObject<'a, 'py> for Raw {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let tensor_type = obj.py().import("torch")?.getattr("Tensor")?;
        if !obj.is_instance(&tensor_type)? {
            let got = obj.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "expected a torch.Tensor, got {got}"
            )));
        }
        if !obj.call_method0("is_contiguous")?.extract::<bool>()? {
            return Err(PyValueError::new_err(
                "the native layer takes contiguous tensors (call .contiguous())",
            ));
        }
        let dtype = obj.getattr("dtype")?.str()?.to_string();
        let device = obj.getattr("device")?;
        let kind: String = device.getattr("type")?.extract()?;
        let cuda = match kind.as_str() {
            "cpu" => None,
            "cuda" => Some(
                device
                    .getattr("index")?
                    .extract::<Option<usize>>()?
                    .unwrap_or(0),
            ),
            other => {
                return Err(PyValueError::new_err(format!(
                    "tensors on {other} are not supported (CPU or CUDA only)"
                )));
            }
        };
        Ok(Self {
            address: obj.call_method0("data_ptr")?.extract()?,
            dtype: dtype.trim_start_matches("torch.").to_string(),
            shape: obj.getattr("shape")?.extract()?,
            cuda,
        })
    }
}

/// TEST PATH ONLY: the device CPU tensors run on instead of the CPU — the emulated GPU,
/// whose memory is host memory, so CPU tensors are borrowed by address exactly as CUDA
/// tensors are and the device code path (the PTX kernels, on the emulator) runs on them.
static CPU_ROUTE: Mutex<Option<Device>> = Mutex::new(None);

/// TEST PATH ONLY (`retention.testing.emulated_device`): route ops on CPU tensors through the
/// emulated GPU (`on`), or back to the CPU kernels. Not for production: the emulator is slow.
#[pyfunction]
pub fn _route_cpu_through_emulator(on: bool) -> PyResult<()> {
    let device = if on {
        Some(Device::from_name("emulated").py()?)
    } else {
        None
    };
    *CPU_ROUTE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = device;
    Ok(())
}

/// The device an op on `t` runs on: the CPU (or the emulated GPU under the test route), or
/// `t`'s CUDA device.
pub fn device_of(t: &Raw) -> PyResult<Device> {
    match t.cuda {
        None => Ok(cpu_device()),
        Some(ordinal) => Device::cuda(ordinal).py(),
    }
}

/// The device CPU tensors run on: the CPU, or the emulated GPU under the test route.
pub fn cpu_device() -> Device {
    let route = CPU_ROUTE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    route.clone().unwrap_or(Device::Cpu)
}

/// torch's current stream of a CUDA `device`; `None` elsewhere (the device's default).
pub fn torch_stream(py: Python<'_>, device: &Device) -> PyResult<Option<Stream>> {
    let Device::Cuda(ordinal) = device else {
        return Ok(None);
    };
    let raw: usize = py
        .import("torch.cuda")?
        .call_method1("current_stream", (*ordinal,))?
        .getattr("cuda_stream")?
        .extract()?;
    // SAFETY: `raw` is torch's current stream of this CUDA device, a stream of the device's
    // primary context (the one torch uses), which torch keeps alive past this call; the
    // runtime stream wrapping it is dropped when the call returns.
    unsafe { Stream::from_raw_cuda(device, raw as *mut c_void) }
        .py()
        .map(Some)
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

    /// A `ValueError` unless the tensor lives on `device`.
    fn expect_device(&self, name: &str, device: &Device) -> PyResult<()> {
        let same = match (device, self.cuda) {
            (Device::Cpu | Device::Emulated(_), None) => true,
            (Device::Cuda(d), Some(t)) => *d == t,
            _ => false,
        };
        if same {
            return Ok(());
        }
        let on = self.cuda.map_or("cpu".into(), |i| format!("cuda:{i}"));
        Err(PyValueError::new_err(format!(
            "`{name}` is on {on} but the op runs on {device}"
        )))
    }

    /// A borrowed view for the device API (no copy).
    pub fn view(&self, name: &str, device: &Device) -> PyResult<DeviceTensor> {
        self.expect_device(name, device)?;
        let dtype = self.device_dtype(name)?;
        self.checked_len(name, dtype.size())?;
        // SAFETY: `address` is the data of a contiguous torch tensor of `shape` and `dtype`
        // on `device` (all checked above), which the Python caller holds until this call
        // returns; the view does not outlive the call.
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
        self.expect_device(name, &Device::Cpu)?;
        self.expect_dtype::<T>(name)?;
        let n = self.checked_len(name, std::mem::size_of::<T>())?;
        let data = if n == 0 {
            Vec::new()
        } else {
            // SAFETY: `address` is the non-null, aligned (checked above) data of a
            // contiguous CPU tensor of `n` elements of `T` (checked at extraction), held
            // by the Python caller for the call; the slice is dropped before returning.
            unsafe { std::slice::from_raw_parts(self.address as *const T, n) }.to_vec()
        };
        HostTensor::new(self.shape.clone(), data).py()
    }

    /// Copies `t` into this CPU tensor; the shapes must be equal.
    pub fn write<T: Element>(&self, name: &str, t: &HostTensor<T>) -> PyResult<()> {
        self.expect_device(name, &Device::Cpu)?;
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
            // SAFETY: as in `host`; no other slice of this memory is alive here (inputs
            // were copied out by `host` before any write).
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
