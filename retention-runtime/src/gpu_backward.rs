//! The chunkwise backward on a GPU-like device (ARCHITECTURE §7): kernel-gen's
//! `chunkwise_backward` family — dq (a forward walk over chunks), dk and dv + dH0 (reverse
//! walks), each one pass recomputing the chunk states on chip, so the forward saves nothing —
//! launched through the runtime's one launch description on the caller's stream.
//!
//! The gradients do not depend on the chunk, so any chunk ≥ 1 is served by the family's
//! kernel chunk (64, or 32 where 64 does not fit). d log γ comes back from the kernels as
//! per-thread f32 partials (one pool-block workspace per kernel); they are summed per head in
//! f64 on the host, so this op downloads them and waits for the stream — the one host round
//! trip of the op (a reduction kernel would keep it on the device).

use kernel_gen::kernels::chunkwise_backward::{self, OPS, SUPPORTED_CHUNKS};
use kernel_gen::{KernelOp, KernelSpec, LaunchSize};
use retention_core::{HostTensor, Result, RetentionError, RetentionShape};
use retention_kernels::cpu::CpuElement;

use crate::device_launch::{Ctx, bind_common, gamma_set};
use crate::kernel_launch::{Arg, KernelLaunch, Region};
use crate::retention::Retention;
use crate::retention_device::Qkv;
use crate::retention_training::Gradients;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};
use crate::training_device::{GradientsInto, Upstream};

impl Retention {
    /// The GPU form of [`Retention::chunkwise_backward_into`] (this device has a launch
    /// executor).
    pub(crate) fn chunkwise_backward_gpu(
        &self,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        (d_o, d_ht): Upstream<'_>,
        GradientsInto {
            dq: out_dq,
            dk: out_dk,
            dv: out_dv,
            dh0: out_dh0,
            dlog_gamma: out_dlog,
        }: GradientsInto<'_>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let (s, dtype) = self.check_qkv(qkv, d_o)?;
        let (dev, dt) = (self.device(), DeviceDtype::from(dtype));
        out_dq.expect("dq", dev, dt, &s.qk_shape())?;
        out_dk.expect("dk", dev, dt, &s.qk_shape())?;
        out_dv.expect("dv", dev, dt, &s.vo_shape())?;
        let states = s.state_shape(s.batch);
        self.check_states(h0, out_dh0, &states)?;
        self.check_states(d_ht, out_dh0, &states)?;
        out_dlog.expect("dlog_gamma", dev, DeviceDtype::F32, &[s.heads])?;
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return Err(RetentionError::KernelLoad(
                "the GPU backward needs a launch executor".into(),
            ));
        };
        let cx = self.ctx(exec, &stream, &log2, dtype, s.dk)?;
        let spec = backward_spec(&cx, &s)?;
        let (q, k, v) = qkv;
        let mut partials = Vec::with_capacity(OPS.len());
        for op in OPS {
            let spec = chunkwise_backward::preferred(&KernelSpec { op, ..spec });
            let size = LaunchSize {
                rows: s.batch as u32,
                heads: s.heads as u32,
                tokens: s.seq_len as u32,
            };
            let plan = kernel_gen::plan(&spec, size).map_err(RetentionError::from)?;
            let g = plan.geometry;
            let elems = (plan.workspace_bytes / 4) as usize;
            let mut ws = DeviceTensor::zeros(self.memory(), dev, DeviceDtype::F32, &[elems])?;
            let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
            let (grad, state) = match op {
                KernelOp::ChunkwiseBackwardDq => (Region::of_mut(out_dq), h0),
                KernelOp::ChunkwiseBackwardDk => (Region::of_mut(out_dk), d_ht),
                _ => (Region::of_mut(out_dv), d_ht),
            };
            let opt = |t: Option<&DeviceTensor>| t.map_or(Arg::Null, |t| Arg::Ptr(Region::of(t)));
            l.bind("p_q", Arg::Ptr(Region::of(q)))
                .bind("p_k", Arg::Ptr(Region::of(k)))
                .bind("p_v", Arg::Ptr(Region::of(v)))
                .bind("p_do", Arg::Ptr(Region::of(d_o)))
                .bind("p_grad", Arg::Ptr(grad))
                .bind("p_state", opt(state))
                .bind("p_dh0", Arg::Ptr(Region::of_mut(out_dh0)))
                .bind("p_h0", opt(h0))
                .bind("p_dlog_gamma", Arg::Ptr(Region::of_mut(&mut ws)));
            bind_common(&mut l, &cx, s.heads, s.seq_len);
            exec.launch(&l, &stream)?;
            partials.push((ws, g.grid[2] as usize * g.block[0] as usize));
        }
        let mut sums = vec![0.0f64; s.heads];
        for (ws, per_pair) in &partials {
            let host = ws.download::<f32>(&stream)?;
            for (i, pair) in host.data().chunks(*per_pair).enumerate() {
                sums[i % s.heads] += pair.iter().map(|&x| f64::from(x)).sum::<f64>();
            }
        }
        let dlog = HostTensor::new(vec![s.heads], sums.iter().map(|&x| x as f32).collect())?;
        out_dlog.copy_from_host(&dlog, &stream)
    }

    /// [`Retention::chunkwise_backward`] through the device API: upload, run, download.
    pub(crate) fn chunkwise_backward_via_device<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        chunk: usize,
        h0: Option<&HostTensor<f32>>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        let s = crate::retention::shape_of(q, k, v, self.params())?;
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
        let mut dh0 = zeros(DeviceDtype::F32, &s.state_shape(s.batch))?;
        let mut dlog_gamma = zeros(DeviceDtype::F32, &[s.heads])?;
        let out = GradientsInto {
            dq: &mut dq,
            dk: &mut dk,
            dv: &mut dv,
            dh0: &mut dh0,
            dlog_gamma: &mut dlog_gamma,
        };
        self.chunkwise_backward_into(
            (&dq_in, &dk_in, &dv_in),
            h0_in.as_ref(),
            (&do_in, dht_in.as_ref()),
            out,
            (chunk, Some(&stream)),
        )?;
        Ok(Gradients {
            dq: dq.download(&stream)?,
            dk: dk.download(&stream)?,
            dv: dv.download(&stream)?,
            dh0: Some(dh0.download(&stream)?),
            dlog_gamma: dlog_gamma.download(&stream)?,
        })
    }
}

/// The family's dq spec for this problem: kernel chunk 64, or 32 where 64 does not fit.
fn backward_spec(cx: &Ctx<'_>, s: &RetentionShape) -> Result<KernelSpec> {
    let mut last = None;
    for c in SUPPORTED_CHUNKS.into_iter().rev() {
        let spec = KernelSpec::chunkwise_backward(
            KernelOp::ChunkwiseBackwardDq,
            s.dk as u32,
            s.dv as u32,
            c,
            gamma_set(cx.gammas),
            cx.dtype,
            cx.exec.arch(),
        );
        match spec.validate() {
            Ok(()) => return Ok(spec),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || RetentionError::KernelLoad("no chunkwise backward kernel chunk".into()),
        RetentionError::from,
    ))
}
