//! The device-tensor form of the chunkwise backward ([`Retention::chunkwise_backward_into`],
//! and [`Retention::chunkwise_backward_varlen_into`] over a packed varlen batch).
//! On `Device::Cpu`, as the CPU forms of the device API, the fast CPU kernels run on host
//! views of the tensors and their results are copied into the caller's outputs; GPU-like
//! devices run kernel-gen's chunkwise-backward kernels (`gpu_backward`).

use half::{bf16, f16};
use retention_core::{CuSeqlens, Dtype, Result, RetentionError};
use retention_kernels::cpu::CpuElement;

use crate::gpu_backward::Walk;
use crate::host_view;
use crate::retention::Retention;
use crate::retention_device::Qkv;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

/// The upstream gradients of a stateful op: dO `[B, T, H, V]` (input dtype) and an optional
/// dH_T `[B, H, K, V]` f32.
pub type Upstream<'a> = (&'a DeviceTensor, Option<&'a DeviceTensor>);

/// Caller-provided outputs of a backward: dq, dk `[B, T, H, K]` and dv `[B, T, H, V]` in the
/// input dtype; dh0 `[B, H, K, V]` and dlog_gamma `[H]` in f32, each optional (`None`: not
/// computed into any caller memory; dq, dk and dv are the same either way).
#[derive(Debug)]
pub struct GradientsInto<'a> {
    /// dL/dq.
    pub dq: &'a mut DeviceTensor,
    /// dL/dk.
    pub dk: &'a mut DeviceTensor,
    /// dL/dv.
    pub dv: &'a mut DeviceTensor,
    /// dL/dH0, when wanted.
    pub dh0: Option<&'a mut DeviceTensor>,
    /// dL/dlog γ per head, when wanted. On a GPU-like device, asking for it makes the op wait
    /// for the stream (its per-thread partials are summed on the host); without it the op
    /// only enqueues.
    pub dlog_gamma: Option<&'a mut DeviceTensor>,
}

impl Retention {
    /// [`Retention::chunkwise_backward`] on device tensors, writing `out`; `stream` (this
    /// device's, or its default when `None`) orders nothing on the CPU, where the op runs to
    /// completion before returning.
    ///
    /// # Errors
    /// A stream or tensor of another device; dtype mismatches (q, k, v, dO share a float dtype; states and dlog_gamma f32);
    /// shape mismatches of inputs or outputs; a zero chunk.
    pub fn chunkwise_backward_into(
        &self,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        upstream: Upstream<'_>,
        out: GradientsInto<'_>,
        at: (usize, Option<&Stream>),
    ) -> Result<()> {
        self.backward_into((qkv, h0, upstream, out), Walk::Dense, at)
    }

    /// [`Retention::chunkwise_varlen_backward`] on device tensors: packed q, k `[1, ΣT, H, K]`,
    /// v, dO, dv `[1, ΣT, H, V]`, per-sequence h0, dH_T and dh0 `[N, H, K, V]` f32, chunks
    /// restarting at every sequence. On GPU-like devices the varlen kernels run, one launch
    /// each over all N sequences, the N + 1 boundaries uploaded into a pool block (4·(N+1)
    /// bytes, counted on the stream). Recurrent gradients are these at any chunk.
    ///
    /// # Errors
    /// As [`Retention::chunkwise_backward_into`], plus B ≠ 1 and boundaries not ending at ΣT.
    pub fn chunkwise_backward_varlen_into(
        &self,
        qkv: Qkv<'_>,
        cu_seqlens: &CuSeqlens,
        h0: Option<&DeviceTensor>,
        upstream: Upstream<'_>,
        out: GradientsInto<'_>,
        at: (usize, Option<&Stream>),
    ) -> Result<()> {
        self.backward_into((qkv, h0, upstream, out), Walk::Packed(cu_seqlens), at)
    }

    /// Both device-tensor backwards: the GPU kernels where this device has an executor, the
    /// CPU kernels on host views otherwise.
    fn backward_into(
        &self,
        args: (
            Qkv<'_>,
            Option<&DeviceTensor>,
            Upstream<'_>,
            GradientsInto<'_>,
        ),
        walk: Walk<'_>,
        (chunk, stream): (usize, Option<&Stream>),
    ) -> Result<()> {
        if chunk == 0 {
            return Err(RetentionError::ZeroChunk);
        }
        if self.gpu().is_some() {
            let (qkv, h0, upstream, out) = args;
            return self.chunkwise_backward_gpu(qkv, h0, upstream, out, (walk, stream));
        }
        let cu = match walk {
            Walk::Dense => None,
            Walk::Packed(cu) => Some(cu),
        };
        self.backward_on_host(args, cu, (chunk, stream))
    }

    /// The CPU form of both device-tensor backwards: the fast CPU kernels on host views.
    fn backward_on_host(
        &self,
        (qkv, h0, upstream, out): (
            Qkv<'_>,
            Option<&DeviceTensor>,
            Upstream<'_>,
            GradientsInto<'_>,
        ),
        cu: Option<&CuSeqlens>,
        (chunk, stream): (usize, Option<&Stream>),
    ) -> Result<()> {
        if let Some(s) = stream.filter(|s| s.device() != self.device()) {
            return Err(RetentionError::WrongDevice {
                tensor: "stream".into(),
                expected: self.device().name(),
                got: s.device().name(),
            });
        }
        let q = qkv.0;
        let dtype = q
            .dtype()
            .float()
            .ok_or_else(|| RetentionError::DtypeMismatch {
                tensor: "q".into(),
                expected: "f32, f16 or bf16".into(),
                got: q.dtype().to_string(),
            })?;
        let args = (qkv, h0, upstream, out, (cu, chunk));
        match dtype {
            Dtype::F32 => self.backward_typed::<f32>(args),
            Dtype::F16 => self.backward_typed::<f16>(args),
            Dtype::Bf16 => self.backward_typed::<bf16>(args),
        }
    }

    #[allow(clippy::type_complexity)]
    fn backward_typed<T: CpuElement>(
        &self,
        ((q, k, v), h0, (d_o, d_ht), out, (cu, chunk)): (
            Qkv<'_>,
            Option<&DeviceTensor>,
            Upstream<'_>,
            GradientsInto<'_>,
            (Option<&CuSeqlens>, usize),
        ),
    ) -> Result<()> {
        let (d, dt, f32t) = (self.device(), DeviceDtype::of::<T>()?, DeviceDtype::F32);
        for (name, t) in [("q", q), ("k", k), ("v", v), ("d_o", d_o)] {
            t.expect(name, d, dt, t.shape())?;
        }
        for (name, t) in [("h0", h0), ("d_ht", d_ht)] {
            if let Some(t) = t {
                t.expect(name, d, f32t, t.shape())?;
            }
        }
        let read_f32 = |t: Option<&DeviceTensor>| t.map(host_view::read::<f32>).transpose();
        let (hq, hk, hv) = (
            host_view::read::<T>(q)?,
            host_view::read::<T>(k)?,
            host_view::read::<T>(v)?,
        );
        let (hh0, hdht) = (read_f32(h0)?, read_f32(d_ht)?);
        let hdo = host_view::read::<T>(d_o)?;
        let qkv = (&hq, &hk, &hv);
        let g = match cu {
            None => self.chunkwise_backward(qkv, chunk, hh0.as_ref(), &hdo, hdht.as_ref())?,
            Some(cu) => {
                let at = (hh0.as_ref(), chunk);
                self.chunkwise_varlen_backward(qkv, cu, at, &hdo, hdht.as_ref())?
            }
        };
        let dh0 = g.dh0.as_ref().expect("the chunkwise backward returns dH0");
        out.dq.expect("dq", d, dt, g.dq.shape())?;
        out.dk.expect("dk", d, dt, g.dk.shape())?;
        out.dv.expect("dv", d, dt, g.dv.shape())?;
        if let Some(t) = out.dh0.as_deref() {
            t.expect("dh0", d, f32t, dh0.shape())?;
        }
        if let Some(t) = out.dlog_gamma.as_deref() {
            t.expect("dlog_gamma", d, f32t, g.dlog_gamma.shape())?;
        }
        host_view::write(out.dq, &g.dq)?;
        host_view::write(out.dk, &g.dk)?;
        host_view::write(out.dv, &g.dv)?;
        if let Some(t) = out.dh0 {
            host_view::write(t, dh0)?;
        }
        match out.dlog_gamma {
            Some(t) => host_view::write(t, &g.dlog_gamma),
            None => Ok(()),
        }
    }
}
