//! The element-wise parts of a decoder layer on device tensors (ARCHITECTURE §2, device-
//! resident tensors): [`Retention::rms_norm_into`] (RMSNorm with a gain over the model width)
//! and [`Retention::gelu_in_place`] (the FFN's tanh-form GELU), so a whole model step can stay
//! on the device. On `Device::Cpu` the CPU kernels (`retention_kernels::cpu::rms_norm_rows`,
//! `gelu_in_place`) run on the tensors' own memory; on GPU-like devices kernel-gen's
//! `layer_ops` family runs, described once as a [`KernelLaunch`] and run by the device's
//! executor on the caller's stream, with no host copy.

use half::{bf16, f16};
use kernel_gen::{KernelSpec, launch_geometry};
use retention_core::{Dtype, Result, RetentionError};
use retention_kernels::cpu::{self, CpuElement};

use crate::host_view;
use crate::kernel_launch::{Arg, KernelLaunch, Region};
use crate::retention::Retention;
use crate::retention_device::float_dtype;
use crate::stream::Stream;
use crate::tensor::DeviceTensor;

impl Retention {
    /// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) ⊙ gain` for every row of x (any rank; its
    /// last axis is the width d, which `gain` `[d]` matches; `out` has x's shape), one float
    /// dtype for all three, f32 math, enqueued on `stream` (this device's, or its default when
    /// `None`). A row whose mean square plus eps is not positive gives 0.
    ///
    /// # Errors
    /// A tensor or stream of another device; a dtype or shape mismatch (naming the tensor);
    /// eps negative or not finite; on a GPU-like device d > 8192 or 2³² rows or more.
    pub fn rms_norm_into(
        &self,
        x: &DeviceTensor,
        gain: &DeviceTensor,
        eps: f64,
        out: &mut DeviceTensor,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let dtype = float_dtype(x, "x")?;
        let d = x.shape().last().copied().unwrap_or(0);
        x.expect("x", self.device(), x.dtype(), x.shape())?;
        gain.expect("gain", self.device(), x.dtype(), &[d])?;
        out.expect("out", self.device(), x.dtype(), x.shape())?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(RetentionError::Unsupported {
                what: "RMSNorm eps".into(),
                value: eps.to_string(),
                reason: "must be finite and >= 0".into(),
            });
        }
        let stream = self.stream_for(stream)?;
        let Some((exec, _)) = self.gpu() else {
            return match dtype {
                Dtype::F32 => cpu_rms_norm::<f32>(x, gain, eps as f32, out),
                Dtype::F16 => cpu_rms_norm::<f16>(x, gain, eps as f32, out),
                Dtype::Bf16 => cpu_rms_norm::<bf16>(x, gain, eps as f32, out),
            };
        };
        let rows = x.len() / d.max(1);
        if rows == 0 || d == 0 {
            return Ok(());
        }
        let d32 = u32::try_from(d).map_err(|_| too_large("rms_norm width", d))?;
        let rows32 = u32::try_from(rows).map_err(|_| too_large("rms_norm rows", rows))?;
        let spec = KernelSpec::rms_norm(d32, dtype, exec.arch());
        let g = launch_geometry(&spec, rows32, 1).map_err(RetentionError::from)?;
        let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
        l.bind("p_x", Arg::Ptr(Region::of(x)))
            .bind("p_gain", Arg::Ptr(Region::of(gain)))
            .bind("p_y", Arg::Ptr(Region::of_mut(out)))
            .bind("p_rows", Arg::U32(rows32))
            .bind("p_eps", Arg::F32(eps as f32));
        exec.launch(&l, &stream)
    }

    /// The tanh-form GELU `x ← x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))` over every element
    /// of x (any shape, a float dtype), in place, f32 math, enqueued on `stream` as
    /// [`Retention::rms_norm_into`].
    ///
    /// # Errors
    /// A tensor or stream of another device; a non-float dtype; on a GPU-like device 2³²
    /// elements or more.
    pub fn gelu_in_place(&self, x: &mut DeviceTensor, stream: Option<&Stream>) -> Result<()> {
        let dtype = float_dtype(x, "x")?;
        x.expect("x", self.device(), x.dtype(), x.shape())?;
        let stream = self.stream_for(stream)?;
        let Some((exec, _)) = self.gpu() else {
            return match dtype {
                Dtype::F32 => cpu_gelu::<f32>(x),
                Dtype::F16 => cpu_gelu::<f16>(x),
                Dtype::Bf16 => cpu_gelu::<bf16>(x),
            };
        };
        let n = x.len();
        if n == 0 {
            return Ok(());
        }
        let n32 = u32::try_from(n).map_err(|_| too_large("gelu elements", n))?;
        let align = if n.is_multiple_of(4) { 4 } else { 1 };
        let spec = KernelSpec::gelu(align, dtype, exec.arch());
        let g = launch_geometry(&spec, n32, 1).map_err(RetentionError::from)?;
        let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
        l.bind("p_x", Arg::Ptr(Region::of_mut(x)))
            .bind("p_n", Arg::U32(n32));
        exec.launch(&l, &stream)
    }
}

fn too_large(what: &str, value: usize) -> RetentionError {
    RetentionError::Unsupported {
        what: what.into(),
        value: value.to_string(),
        reason: "at most 2^32 - 1 per launch".into(),
    }
}

fn cpu_rms_norm<T: CpuElement>(
    x: &DeviceTensor,
    gain: &DeviceTensor,
    eps: f32,
    out: &mut DeviceTensor,
) -> Result<()> {
    host_view::check_disjoint(&[("out", out)], &[("x", x), ("gain", gain)])?;
    let (x, gain) = (
        host_view::view::<T>(x, "x")?,
        host_view::view::<T>(gain, "gain")?,
    );
    let mut out = host_view::view_mut::<T>(out, "out")?;
    cpu::rms_norm_rows(x.data(), gain.data(), eps, out.data_mut());
    Ok(())
}

fn cpu_gelu<T: CpuElement>(x: &mut DeviceTensor) -> Result<()> {
    let mut x = host_view::view_mut::<T>(x, "x")?;
    cpu::gelu_in_place(x.data_mut());
    Ok(())
}
