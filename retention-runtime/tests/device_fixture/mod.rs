//! What the device-op tests (epilogue, layer ops, attention) share: a `Retention` with its
//! memory pool and stream on one device, uploads and downloads, and ARCHITECTURE §4's
//! tolerances (f32 ≤ 1e-5 max relative, f16/bf16 ≤ 5e-3 relative RMSE).

use retention_core::{Dtype, Element, Gammas, HostTensor};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::{Device, DeviceDtype, DeviceTensor, MemoryPool, Retention, Stream};

/// `got` against `want` within the tolerance of `dtype`; panics naming `what` otherwise.
pub fn close(what: &str, dtype: Dtype, got: &[f64], want: &[f64]) {
    let (e, tol) = match dtype {
        Dtype::F32 => (reference::max_rel_diff(got, want), 1e-5),
        Dtype::F16 | Dtype::Bf16 => (reference::rel_rmse(got, want), 5e-3),
    };
    assert!(e <= tol, "{what}: error {e:e} > {tol:e}");
}

/// A `Retention` (RetNet decays of `heads` heads), a memory pool and a stream on one device.
pub struct Fixture {
    pub ret: Retention,
    pub mem: MemoryPool,
    pub stream: Stream,
}

impl Fixture {
    pub fn new(device: &Device, heads: usize) -> Self {
        let params = RetentionParams::new(Gammas::retnet(heads).unwrap(), None);
        Self {
            ret: Retention::new(device, params).unwrap(),
            mem: MemoryPool::on(device, None).unwrap(),
            stream: Stream::new(device).unwrap(),
        }
    }
    pub fn up<T: Element>(&self, h: &HostTensor<T>) -> DeviceTensor {
        DeviceTensor::upload(&self.mem, h, &self.stream).unwrap()
    }
    pub fn zeros(&self, dtype: DeviceDtype, shape: &[usize]) -> DeviceTensor {
        DeviceTensor::zeros(&self.mem, self.stream.device(), dtype, shape).unwrap()
    }
    pub fn down<T: Element>(&self, t: &DeviceTensor) -> Vec<f64> {
        let h = t.download::<T>(&self.stream).unwrap();
        h.to_f64().data().to_vec()
    }
}
