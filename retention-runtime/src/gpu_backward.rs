//! The chunkwise backward on a GPU-like device (ARCHITECTURE §7): kernel-gen's
//! `chunkwise_backward` family — dq (a forward walk over chunks), dk and dv + dH0 (reverse
//! walks), each one pass recomputing the chunk states on chip, so the forward saves nothing —
//! launched through the runtime's one launch description on the caller's stream.
//!
//! The gradients do not depend on the chunk, so any chunk ≥ 1 is served by the family's
//! kernel chunk (64, or 32 where 64 does not fit). A packed varlen batch runs the varlen
//! kernels in one launch each over every sequence, its `cu_seqlens` uploaded as the varlen
//! forward does. d log γ comes back from the kernels as
//! per-thread f32 partials (one pool-block workspace per kernel), summed per head on the
//! device by the `head_sum` kernel (Kahan per thread, then warp and CTA sums: within 1e-6 of
//! Σ|partials|), so the op never downloads or waits for the stream.

use kernel_gen::{
    BackwardProblem, KernelSpec, LaunchSize, chunkwise_backward_plans,
    chunkwise_varlen_backward_plans, workspace_floats,
};
use retention_core::{CuSeqlens, HostTensor, Result, RetentionError, RetentionShape};
use retention_kernels::cpu::CpuElement;

use crate::device_launch::{Ctx, bind_common, gamma_set};
use crate::kernel_launch::{Arg, KernelLaunch, Region};
use crate::retention::Retention;
use crate::retention_device::Qkv;
use crate::retention_training::Gradients;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};
use crate::training_device::{GradientsInto, Upstream};

/// The token ranges the kernels walk: B dense rows of T tokens, or the sequences of a packed
/// batch `[1, ΣT, H, ·]` (the varlen kernels, states `[N, H, K, V]`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Walk<'a> {
    /// B rows of T tokens.
    Dense,
    /// A packed batch with these boundaries.
    Packed(&'a CuSeqlens),
}

impl Retention {
    /// The GPU form of [`Retention::chunkwise_backward_into`] and
    /// [`Retention::chunkwise_backward_varlen_into`] (this device has a launch executor).
    pub(crate) fn chunkwise_backward_gpu(
        &self,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        (d_o, d_ht): Upstream<'_>,
        GradientsInto {
            dq: out_dq,
            dk: out_dk,
            dv: out_dv,
            dh0: mut out_dh0,
            dlog_gamma: out_dlog,
        }: GradientsInto<'_>,
        (walk, stream): (Walk<'_>, Option<&Stream>),
    ) -> Result<()> {
        let (s, dtype) = self.check_qkv(qkv, d_o)?;
        let (dev, dt) = (self.device(), DeviceDtype::from(dtype));
        out_dq.expect("dq", dev, dt, &s.qk_shape())?;
        out_dk.expect("dk", dev, dt, &s.qk_shape())?;
        out_dv.expect("dv", dev, dt, &s.vo_shape())?;
        let seqs = sequences(walk, &s)?;
        let states = s.state_shape(seqs);
        for (name, t) in [("h0", h0), ("d_ht", d_ht), ("dh0", out_dh0.as_deref())] {
            t.map_or(Ok(()), |t| t.expect(name, dev, DeviceDtype::F32, &states))?;
        }
        if let Some(t) = out_dlog.as_deref() {
            t.expect("dlog_gamma", dev, DeviceDtype::F32, &[s.heads])?;
        }
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return Err(RetentionError::KernelLoad(
                "the GPU backward needs a launch executor".into(),
            ));
        };
        let cx = self.ctx(exec, &stream, &log2, dtype, s.dk)?;
        let problem = BackwardProblem {
            k: s.dk as u32,
            v: s.dv as u32,
            gammas: gamma_set(cx.gammas),
            dtype,
            arch: exec.arch(),
        };
        let size = LaunchSize {
            rows: seqs as u32,
            heads: s.heads as u32,
            tokens: s.seq_len as u32,
        };
        let (plans, cu) = match walk {
            Walk::Dense => (chunkwise_backward_plans(problem, size)?, None),
            Walk::Packed(cu) => (
                chunkwise_varlen_backward_plans(problem, size)?,
                Some(self.upload_bounds(cu, &stream)?),
            ),
        };
        let (q, k, v) = qkv;
        let mut partials = Vec::with_capacity(plans.len());
        // The plans are dq, dk, dv in launch order.
        for (i, plan) in plans.iter().enumerate() {
            let g = plan.geometry;
            let elems = workspace_floats(plan);
            let zeros = || DeviceTensor::zeros(self.memory(), dev, DeviceDtype::F32, &[elems]);
            let mut ws = out_dlog.is_some().then(zeros).transpose()?;
            let mut l = KernelLaunch::new(plan.spec, g.grid, g.block, g.dynamic_smem_bytes);
            let (grad, state) = match i {
                0 => (Region::of_mut(out_dq), h0),
                1 => (Region::of_mut(out_dk), d_ht),
                _ => (Region::of_mut(out_dv), d_ht),
            };
            let opt = |t: Option<&DeviceTensor>| t.map_or(Arg::Null, |t| Arg::Ptr(Region::of(t)));
            l.bind("p_q", Arg::Ptr(Region::of(q)))
                .bind("p_k", Arg::Ptr(Region::of(k)))
                .bind("p_v", Arg::Ptr(Region::of(v)))
                .bind("p_do", Arg::Ptr(Region::of(d_o)))
                .bind("p_grad", Arg::Ptr(grad))
                .bind("p_state", opt(state))
                .bind("p_dh0", opt_mut(out_dh0.as_deref_mut()))
                .bind("p_h0", opt(h0))
                .bind("p_dlog_gamma", opt_mut(ws.as_mut()));
            bind_common(&mut l, &cx, s.heads, s.seq_len);
            if let Some(cu) = &cu {
                l.bind("p_cu_seqlens", Arg::Ptr(Region::of(cu)));
            }
            exec.launch(&l, &stream)?;
            partials.extend(ws.map(|ws| (ws, g.grid[2] as usize * g.block[0] as usize)));
        }
        match out_dlog {
            Some(out) => head_sums(&cx, &partials, (seqs, s.heads), out),
            None => Ok(()),
        }
    }

    /// `cu`'s N + 1 boundaries as u32 in a pool block on this device (4·(N+1) bytes, counted
    /// on the stream), as the varlen forward uploads them.
    fn upload_bounds(&self, cu: &CuSeqlens, stream: &Stream) -> Result<DeviceTensor> {
        let host: Vec<u32> = cu.as_slice().iter().map(|&b| b as u32).collect();
        let mut dev = DeviceTensor::zeros(
            self.memory(),
            self.device(),
            DeviceDtype::U32,
            &[host.len()],
        )?;
        dev.write_bytes(0, bytemuck::cast_slice(&host), stream)?;
        Ok(dev)
    }

    /// [`Retention::chunkwise_backward`] (`cu` `None`) or
    /// [`Retention::chunkwise_varlen_backward`] through the device API: upload, run, download.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn chunkwise_backward_via_device<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        (cu, chunk): (Option<&CuSeqlens>, usize),
        h0: Option<&HostTensor<f32>>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        let s = crate::retention::shape_of(q, k, v, self.params())?;
        let seqs = sequences(cu.map_or(Walk::Dense, Walk::Packed), &s)?;
        let stream = Stream::default_for(self.device())?;
        let mem = self.memory();
        let up = |t: &HostTensor<T>| DeviceTensor::upload(mem, t, &stream);
        let up32 = |t: Option<&HostTensor<f32>>| {
            t.map(|t| DeviceTensor::upload(mem, t, &stream)).transpose()
        };
        let (dq_in, dk_in, dv_in, do_in) = (up(q)?, up(k)?, up(v)?, up(d_o)?);
        let (h0_in, dht_in) = (up32(h0)?, up32(d_ht)?);
        let zeros = |dtype, shape: &[usize]| DeviceTensor::zeros(mem, self.device(), dtype, shape);
        let dt = DeviceDtype::of::<T>()?;
        let mut dq = zeros(dt, &s.qk_shape())?;
        let mut dk = zeros(dt, &s.qk_shape())?;
        let mut dv = zeros(dt, &s.vo_shape())?;
        let mut dh0 = zeros(DeviceDtype::F32, &s.state_shape(seqs))?;
        let mut dlog_gamma = zeros(DeviceDtype::F32, &[s.heads])?;
        let out = GradientsInto {
            dq: &mut dq,
            dk: &mut dk,
            dv: &mut dv,
            dh0: Some(&mut dh0),
            dlog_gamma: Some(&mut dlog_gamma),
        };
        let (qkv, upstream) = ((&dq_in, &dk_in, &dv_in), (&do_in, dht_in.as_ref()));
        let at = (chunk, Some(&stream));
        match cu {
            None => self.chunkwise_backward_into(qkv, h0_in.as_ref(), upstream, out, at)?,
            Some(cu) => {
                self.chunkwise_backward_varlen_into(qkv, cu, h0_in.as_ref(), upstream, out, at)?;
            }
        }
        Ok(Gradients {
            dq: dq.download(&stream)?,
            dk: dk.download(&stream)?,
            dv: dv.download(&stream)?,
            dh0: Some(dh0.download(&stream)?),
            dlog_gamma: dlog_gamma.download(&stream)?,
        })
    }
}

/// d log γ_h = the sum of every kernel's partials of head h (`[rows, H, per]` each), reduced
/// on the device by the `head_sum` kernel into `out` (f32 `[H]`): the first workspace writes
/// it, the others add to it, all on the stream, so nothing is downloaded.
fn head_sums(
    cx: &Ctx<'_>,
    partials: &[(DeviceTensor, usize)],
    (rows, heads): (usize, usize),
    out: &mut DeviceTensor,
) -> Result<()> {
    let spec = KernelSpec::head_sum(cx.exec.arch());
    let g = kernel_gen::launch_geometry(&spec, rows as u32, heads as u32)
        .map_err(RetentionError::from)?;
    for (i, (ws, per)) in partials.iter().enumerate() {
        let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
        l.bind("p_partials", Arg::Ptr(Region::of(ws)))
            .bind("p_rows", Arg::U32(rows as u32))
            .bind("p_per", Arg::U32(*per as u32))
            .bind("p_out", Arg::Ptr(Region::of_mut(out)))
            .bind("p_accumulate", Arg::U32(u32::from(i > 0)));
        cx.exec.launch(&l, cx.stream)?;
    }
    Ok(())
}

/// A launch argument for an optional output: its region, or the null pointer.
fn opt_mut(t: Option<&mut DeviceTensor>) -> Arg {
    t.map_or(Arg::Null, |t| Arg::Ptr(Region::of_mut(t)))
}

/// The number of state rows: B, or the packed batch's N sequences (checked against ΣT, with
/// B = 1).
fn sequences(walk: Walk<'_>, s: &RetentionShape) -> Result<usize> {
    let Walk::Packed(cu) = walk else {
        return Ok(s.batch);
    };
    if s.batch != 1 {
        return Err(RetentionError::ShapeMismatch {
            tensor: "q".into(),
            expected: "[B=1, ΣT, H, K] (a packed varlen batch)".into(),
            got: format!("{:?}", s.qk_shape()),
        });
    }
    Ok(CuSeqlens::new(cu.as_slice().to_vec(), s.seq_len)?.num_seqs())
}
