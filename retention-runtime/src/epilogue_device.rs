//! The gated MSR epilogue y = RMSNorm_head(o) ⊙ swish(g) and its backward on device tensors
//! (ARCHITECTURE §1, §7): [`Retention::msr_epilogue_into`] and
//! [`Retention::msr_epilogue_backward_into`]. On `Device::Cpu` the CPU kernels run on host
//! views of the tensors; on GPU-like devices the epilogue family's kernel (one warp per
//! (token, head) row) is described once as a [`KernelLaunch`] and run by the device's
//! executor — the emulator or cudarc — on the caller's stream, with no host copy.

use half::{bf16, f16};
use kernel_gen::{KernelSpec, launch_geometry};
use retention_core::{Dtype, HostTensor, Result, RetentionError};
use retention_kernels::cpu::{self, CpuElement};

use crate::host_view;
use crate::kernel_launch::{Arg, Executor, KernelLaunch, Region};
use crate::retention::Retention;
use crate::retention_device::{float_dtype, rank4};
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

/// The backward's outputs: dL/do and dL/dg `[B, T, H, V]` in the input dtype.
pub type EpilogueGradientsInto<'a> = (&'a mut DeviceTensor, &'a mut DeviceTensor);

/// What a checked epilogue call runs on.
struct Checked {
    dtype: Dtype,
    /// (B·T, H, V).
    rows: (usize, usize, usize),
    eps: f32,
}

impl Retention {
    /// The MSR epilogue `out = RMSNorm_head(o) ⊙ swish(g)` (per (token, head) row of V
    /// entries, eps ≥ 0, no affine weight; an all-zero row with eps = 0 gives 0) on device
    /// tensors `[B, T, H, V]` of one float dtype, enqueued on `stream` (this device's, or its
    /// default when `None`). f32 math whatever the dtype.
    ///
    /// # Errors
    /// A tensor or stream of another device; a dtype or shape mismatch (naming the tensor);
    /// eps negative or not finite; on a GPU-like device V > 512.
    pub fn msr_epilogue_into(
        &self,
        o: &DeviceTensor,
        g: &DeviceTensor,
        eps: f64,
        out: &mut DeviceTensor,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let c = self.check_epilogue(o, &[("g", g)], eps, &[("out", &*out)])?;
        let stream = self.stream_for(stream)?;
        let Some((exec, _)) = self.gpu() else {
            return match c.dtype {
                Dtype::F32 => cpu_forward::<f32>(o, g, eps, out),
                Dtype::F16 => cpu_forward::<f16>(o, g, eps, out),
                Dtype::Bf16 => cpu_forward::<bf16>(o, g, eps, out),
            };
        };
        let spec = KernelSpec::epilogue(c.rows.2 as u32, c.dtype, exec.arch());
        let args = [
            ("p_o", Arg::Ptr(Region::of(o))),
            ("p_g", Arg::Ptr(Region::of(g))),
            ("p_y", Arg::Ptr(Region::of_mut(out))),
        ];
        launch(exec, &stream, spec, &c, args)
    }

    /// Gradients of [`Retention::msr_epilogue_into`] for the upstream gradient `dy`: do and
    /// dg into `out` (`[B, T, H, V]`, the input dtype), computed in f32 with r recomputed
    /// from o (the forward saves nothing), on `stream` as the forward.
    ///
    /// # Errors
    /// As [`Retention::msr_epilogue_into`], for `dy` and both outputs too.
    pub fn msr_epilogue_backward_into(
        &self,
        o: &DeviceTensor,
        g: &DeviceTensor,
        eps: f64,
        dy: &DeviceTensor,
        (d_o, dg): EpilogueGradientsInto<'_>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let outs = [("do", &*d_o), ("dg", &*dg)];
        let c = self.check_epilogue(o, &[("g", g), ("dy", dy)], eps, &outs)?;
        let stream = self.stream_for(stream)?;
        let Some((exec, _)) = self.gpu() else {
            return match c.dtype {
                Dtype::F32 => cpu_backward::<f32>((o, g, dy), eps, (d_o, dg)),
                Dtype::F16 => cpu_backward::<f16>((o, g, dy), eps, (d_o, dg)),
                Dtype::Bf16 => cpu_backward::<bf16>((o, g, dy), eps, (d_o, dg)),
            };
        };
        let spec = KernelSpec::epilogue(c.rows.2 as u32, c.dtype, exec.arch()).epilogue_backward();
        let args = [
            ("p_o", Arg::Ptr(Region::of(o))),
            ("p_g", Arg::Ptr(Region::of(g))),
            ("p_dy", Arg::Ptr(Region::of(dy))),
            ("p_do", Arg::Ptr(Region::of_mut(d_o))),
            ("p_dg", Arg::Ptr(Region::of_mut(dg))),
        ];
        launch(exec, &stream, spec, &c, args)
    }

    /// [`Retention::msr_epilogue_into`] for host tensors on a GPU-like device: upload, run on
    /// the default stream, download.
    pub(crate) fn msr_epilogue_via_device<T: CpuElement>(
        &self,
        o: &HostTensor<T>,
        g: &HostTensor<T>,
        eps: f64,
    ) -> Result<HostTensor<T>> {
        let stream = Stream::default_for(self.device())?;
        let (d_o, d_g) = (self.up(o, &stream)?, self.up(g, &stream)?);
        let mut y = self.like(&d_o)?;
        self.msr_epilogue_into(&d_o, &d_g, eps, &mut y, Some(&stream))?;
        y.download(&stream)
    }

    /// [`Retention::msr_epilogue_backward_into`] for host tensors on a GPU-like device:
    /// upload, run on the default stream, download (do, dg).
    pub(crate) fn msr_epilogue_backward_via_device<T: CpuElement>(
        &self,
        (o, g, dy): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        eps: f64,
    ) -> Result<(HostTensor<T>, HostTensor<T>)> {
        let stream = Stream::default_for(self.device())?;
        let (d_o, d_g, d_dy) = (
            self.up(o, &stream)?,
            self.up(g, &stream)?,
            self.up(dy, &stream)?,
        );
        let (mut grad_o, mut grad_g) = (self.like(&d_o)?, self.like(&d_o)?);
        let out = (&mut grad_o, &mut grad_g);
        self.msr_epilogue_backward_into(&d_o, &d_g, eps, &d_dy, out, Some(&stream))?;
        Ok((grad_o.download(&stream)?, grad_g.download(&stream)?))
    }

    fn up<T: CpuElement>(&self, t: &HostTensor<T>, stream: &Stream) -> Result<DeviceTensor> {
        DeviceTensor::upload(self.memory(), t, stream)
    }

    fn like(&self, t: &DeviceTensor) -> Result<DeviceTensor> {
        let dtype: DeviceDtype = t.dtype();
        DeviceTensor::zeros(self.memory(), self.device(), dtype, t.shape())
    }

    /// o is rank 4 of a float dtype on this device; every other input and output matches it;
    /// eps is finite and ≥ 0.
    fn check_epilogue(
        &self,
        o: &DeviceTensor,
        inputs: &[(&str, &DeviceTensor)],
        eps: f64,
        outputs: &[(&str, &DeviceTensor)],
    ) -> Result<Checked> {
        let dtype = float_dtype(o, "o")?;
        let [b, t, h, v] = rank4(o, "o", "V")?;
        o.expect("o", self.device(), o.dtype(), o.shape())?;
        for (name, x) in inputs.iter().chain(outputs) {
            x.expect(name, self.device(), o.dtype(), o.shape())?;
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(RetentionError::Unsupported {
                what: "RMSNorm eps".into(),
                value: eps.to_string(),
                reason: "must be finite and >= 0".into(),
            });
        }
        Ok(Checked {
            dtype,
            rows: (b * t, h, v),
            eps: eps as f32,
        })
    }
}

/// One launch of the epilogue kernel `spec` over the checked rows, `args` bound by name.
fn launch<const N: usize>(
    exec: &Executor,
    stream: &Stream,
    spec: KernelSpec,
    c: &Checked,
    args: [(&'static str, Arg); N],
) -> Result<()> {
    let (tokens, heads, _) = c.rows;
    if tokens * heads == 0 {
        return Ok(());
    }
    let too_many = || RetentionError::Unsupported {
        what: "epilogue rows".into(),
        value: format!("{tokens} x {heads}"),
        reason: "at most 2^32 - 1 (token, head) rows per launch".into(),
    };
    let t32 = u32::try_from(tokens).map_err(|_| too_many())?;
    let h32 = u32::try_from(heads).map_err(|_| too_many())?;
    let rows = t32.checked_mul(h32).ok_or_else(too_many)?;
    let g = launch_geometry(&spec, t32, h32).map_err(RetentionError::from)?;
    let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
    for (name, arg) in args {
        l.bind(name, arg);
    }
    l.bind("p_rows", Arg::U32(rows))
        .bind("p_eps", Arg::F32(c.eps));
    exec.launch(&l, stream)
}

fn cpu_forward<T: CpuElement>(
    o: &DeviceTensor,
    g: &DeviceTensor,
    eps: f64,
    out: &mut DeviceTensor,
) -> Result<()> {
    host_view::check_disjoint(&[("out", out)], &[("o", o), ("g", g)])?;
    let (o, g) = (host_view::view::<T>(o, "o")?, host_view::view::<T>(g, "g")?);
    cpu::msr_epilogue_into(o, g, eps, host_view::view_mut::<T>(out, "out")?)
}

fn cpu_backward<T: CpuElement>(
    (o, g, dy): (&DeviceTensor, &DeviceTensor, &DeviceTensor),
    eps: f64,
    (d_o, dg): EpilogueGradientsInto<'_>,
) -> Result<()> {
    let grads = cpu::msr_epilogue_backward(
        &host_view::read::<T>(o)?,
        &host_view::read::<T>(g)?,
        eps,
        &host_view::read::<T>(dy)?,
    )?;
    host_view::write(d_o, &grads.d_o)?;
    host_view::write(dg, &grads.dg)
}
