//! The device API of [`Retention`]: every op on [`DeviceTensor`]s of the retention's device,
//! writing caller-provided outputs, enqueued on the caller's [`Stream`] (the device's default
//! stream when `None`) with no synchronisation and no host copy. Tensor layouts are ARCHITECTURE
//! §1's: q, k `[B,T,H,K]`, v, o `[B,T,H,V]`, states `[B,H,K,V]` f32; varlen batches are packed
//! `[1,ΣT,H,·]` with N sequences.
//!
//! On `Device::Cpu` the fast CPU kernels run in place on the tensors' host memory (no copy;
//! outputs must not overlap inputs, a typed error otherwise). The MSR epilogue and its
//! backward are in `epilogue_device`.

use half::{bf16, f16};
use kernel_gen::KernelOp;
use retention_core::{CuSeqlens, Dtype, Result, RetentionError, RetentionShape, validate_scale};
use retention_kernels::cpu::{self, CpuElement};

use crate::device_launch::{self as dl, Ctx, SeqArgs};
use crate::host_view;
use crate::kernel_launch::{Executor, Region};
use crate::retention::Retention;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

/// The sequence inputs of an op: q, k, v.
pub type Qkv<'a> = (&'a DeviceTensor, &'a DeviceTensor, &'a DeviceTensor);

/// The outputs of a stateful op: o and the final state H_T.
pub type OutState<'a> = (&'a mut DeviceTensor, &'a mut DeviceTensor);

macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            Dtype::F32 => $f::<f32>($($arg),*),
            Dtype::F16 => $f::<f16>($($arg),*),
            Dtype::Bf16 => $f::<bf16>($($arg),*),
        }
    };
}

impl Retention {
    /// The stream to run on: `stream`, checked to be this device's, or the default.
    pub(crate) fn stream_for(&self, stream: Option<&Stream>) -> Result<Stream> {
        match stream {
            Some(s) if s.device() == self.device() => Ok(s.clone()),
            Some(s) => Err(RetentionError::WrongDevice {
                tensor: "stream".into(),
                expected: self.device().name(),
                got: s.device().name(),
            }),
            None => Stream::default_for(self.device()),
        }
    }

    /// Checks q, k, v (and o) on this device; returns the shape and dtype.
    pub(crate) fn check_qkv(
        &self,
        (q, k, v): Qkv<'_>,
        o: &DeviceTensor,
    ) -> Result<(RetentionShape, Dtype)> {
        let [b, t, h, dk] = rank4(q, "q", "K")?;
        let [.., dv] = rank4(v, "v", "V")?;
        let dtype = float_dtype(q, "q")?;
        let s = RetentionShape::new(b, t, h, dk, dv)?;
        let d = self.device();
        q.expect("q", d, dtype.into(), &s.qk_shape())?;
        k.expect("k", d, dtype.into(), &s.qk_shape())?;
        v.expect("v", d, dtype.into(), &s.vo_shape())?;
        o.expect("o", d, dtype.into(), &s.vo_shape())?;
        self.params().gammas.check_heads(h)?;
        validate_scale(self.params().scale, dk)?;
        Ok((s, dtype))
    }

    pub(crate) fn ctx<'a>(
        &'a self,
        exec: &'a Executor,
        stream: &'a Stream,
        log2: &'a Region,
        dtype: Dtype,
        dk: usize,
    ) -> Result<Ctx<'a>> {
        Ok(Ctx {
            exec,
            stream,
            gammas: &self.params().gammas,
            log2_gamma: log2,
            scale: validate_scale(self.params().scale, dk)? as f32,
            dtype,
        })
    }

    /// Parallel form into `o`.
    ///
    /// # Errors
    /// A tensor or stream of another device, a wrong dtype or shape, gammas not matching H,
    /// a bad scale; on a GPU a (K, V) no parallel kernel serves.
    pub fn parallel_into(
        &self,
        qkv: Qkv<'_>,
        o: &mut DeviceTensor,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let (s, dtype) = self.check_qkv(qkv, o)?;
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return by_dtype!(dtype, cpu_parallel, self, qkv, o);
        };
        let cx = self.ctx(exec, &stream, &log2, dtype, s.dk)?;
        let (q, k, v) = qkv;
        dl::parallel(
            &cx,
            &s,
            Region::of(q),
            Region::of(k),
            Region::of(v),
            Region::of_mut(o),
        )
    }

    /// Chunkwise form with chunk `chunk`, optional H0 `[B,H,K,V]`, into o and H_T. On a GPU the
    /// catalog's chunkwise kernel runs (two-phase when the plan prefers it, its workspace a
    /// cached pool block), or — for a (K, V, chunk, dtype) none serves — the decode kernel
    /// token by token (the same math).
    ///
    /// # Errors
    /// As [`Retention::parallel_into`], plus chunk 0 and a wrong h0/ht.
    pub fn chunkwise_into(
        &self,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        out: OutState<'_>,
        chunk: usize,
        stream: Option<&Stream>,
    ) -> Result<()> {
        self.chunkwise_device(qkv, h0, out, chunk, true, stream)
    }

    pub(crate) fn chunkwise_device(
        &self,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        (o, ht): OutState<'_>,
        chunk: usize,
        two_phase: bool,
        stream: Option<&Stream>,
    ) -> Result<()> {
        if chunk == 0 {
            return Err(RetentionError::ZeroChunk);
        }
        let (s, dtype) = self.check_qkv(qkv, o)?;
        self.check_states(h0, ht, &s.state_shape(s.batch))?;
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return by_dtype!(dtype, cpu_chunkwise, self, qkv, h0, (o, ht), chunk, None);
        };
        let cx = self.ctx(exec, &stream, &log2, dtype, s.dk)?;
        let Some(spec) = dl::chunkwise_spec(
            &self.params().gammas,
            &s,
            chunk,
            dtype,
            exec.arch(),
            KernelOp::Chunkwise,
        ) else {
            let seqs: Vec<(usize, usize)> =
                (0..s.batch).map(|b| (b * s.seq_len, s.seq_len)).collect();
            return self.recurrent_launches(&cx, &s, qkv, h0, (o, ht), &seqs);
        };
        let a = seq_args(qkv, h0, (o, ht));
        dl::chunkwise(&cx, spec, &s, &a, two_phase, self.memory())
    }

    /// Recurrent form (token by token) with optional H0, into o and H_T.
    ///
    /// # Errors
    /// As [`Retention::chunkwise_into`].
    pub fn recurrent_into(
        &self,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        (o, ht): OutState<'_>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let (s, dtype) = self.check_qkv(qkv, o)?;
        self.check_states(h0, ht, &s.state_shape(s.batch))?;
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return by_dtype!(dtype, cpu_chunkwise, self, qkv, h0, (o, ht), 1, None);
        };
        let cx = self.ctx(exec, &stream, &log2, dtype, s.dk)?;
        let seqs: Vec<(usize, usize)> = (0..s.batch).map(|b| (b * s.seq_len, s.seq_len)).collect();
        self.recurrent_launches(&cx, &s, qkv, h0, (o, ht), &seqs)
    }

    /// Chunkwise form over a packed variable-length batch (q, k `[1,ΣT,H,K]`, v, o
    /// `[1,ΣT,H,V]`, h0/ht `[N,H,K,V]`, chunks restarting at every sequence). The N+1
    /// boundaries are uploaded (4·(N+1) bytes, counted on the stream) into a pool block.
    ///
    /// # Errors
    /// As [`Retention::chunkwise_into`], plus B ≠ 1 and boundaries not ending at ΣT.
    pub fn chunkwise_varlen_into(
        &self,
        qkv: Qkv<'_>,
        cu_seqlens: &CuSeqlens,
        h0: Option<&DeviceTensor>,
        out: OutState<'_>,
        chunk: usize,
        stream: Option<&Stream>,
    ) -> Result<()> {
        self.varlen(qkv, cu_seqlens, h0, out, Some(chunk), stream)
    }

    /// Recurrent form over a packed variable-length batch; see
    /// [`Retention::chunkwise_varlen_into`].
    ///
    /// # Errors
    /// As [`Retention::chunkwise_varlen_into`].
    pub fn recurrent_varlen_into(
        &self,
        qkv: Qkv<'_>,
        cu_seqlens: &CuSeqlens,
        h0: Option<&DeviceTensor>,
        out: OutState<'_>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        self.varlen(qkv, cu_seqlens, h0, out, None, stream)
    }

    fn varlen(
        &self,
        qkv: Qkv<'_>,
        cu: &CuSeqlens,
        h0: Option<&DeviceTensor>,
        (o, ht): OutState<'_>,
        chunk: Option<usize>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        if chunk == Some(0) {
            return Err(RetentionError::ZeroChunk);
        }
        let (s, dtype) = self.check_qkv(qkv, o)?;
        if s.batch != 1 {
            return Err(RetentionError::ShapeMismatch {
                tensor: "q".into(),
                expected: "[B=1, ΣT, H, K] (a packed varlen batch)".into(),
                got: format!("{:?}", qkv.0.shape()),
            });
        }
        let bounds = cu.as_slice();
        let cu = CuSeqlens::new(bounds.to_vec(), s.seq_len)?;
        let n = bounds.len() - 1;
        self.check_states(h0, ht, &s.state_shape(n))?;
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return by_dtype!(
                dtype,
                cpu_chunkwise,
                self,
                qkv,
                h0,
                (o, ht),
                chunk.unwrap_or(1),
                Some(&cu)
            );
        };
        let cx = self.ctx(exec, &stream, &log2, dtype, s.dk)?;
        let spec = chunk.and_then(|c| {
            dl::chunkwise_spec(
                &self.params().gammas,
                &s,
                c,
                dtype,
                exec.arch(),
                KernelOp::ChunkwiseVarlen,
            )
        });
        let Some(spec) = spec else {
            let seqs: Vec<(usize, usize)> =
                bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
            return self.recurrent_launches(&cx, &s, qkv, h0, (o, ht), &seqs);
        };
        let host: Vec<u32> = bounds.iter().map(|&b| b as u32).collect();
        let mut dev =
            DeviceTensor::zeros(self.memory(), self.device(), DeviceDtype::U32, &[n + 1])?;
        dev.write_bytes(0, bytemuck::cast_slice(&host), &stream)?;
        let a = seq_args(qkv, h0, (o, ht));
        dl::chunkwise_varlen(&cx, spec, s.heads, n, &a, Region::of(&dev))
    }

    pub(crate) fn check_states(
        &self,
        h0: Option<&DeviceTensor>,
        ht: &DeviceTensor,
        shape: &[usize],
    ) -> Result<()> {
        if let Some(h) = h0 {
            h.expect("h0", self.device(), DeviceDtype::F32, shape)?;
        }
        ht.expect("ht", self.device(), DeviceDtype::F32, shape)
    }

    /// The recurrent form by decode launches: H_T starts as H0 (or zero) and is advanced in
    /// place.
    fn recurrent_launches(
        &self,
        cx: &Ctx<'_>,
        s: &RetentionShape,
        qkv: Qkv<'_>,
        h0: Option<&DeviceTensor>,
        (o, ht): OutState<'_>,
        seqs: &[(usize, usize)],
    ) -> Result<()> {
        let ht_region = Region::of_mut(ht);
        match h0 {
            Some(h) => cx.exec.copy(&Region::of(h), &ht_region, cx.stream)?,
            None => cx.exec.zero(&ht_region, cx.stream)?,
        }
        let zero = self.zero_slot()?;
        let a = seq_args(qkv, None, (o, ht));
        dl::recurrent(cx, (s.heads, s.dk, s.dv), seqs, &a, &zero)
    }
}

fn seq_args(qkv: Qkv<'_>, h0: Option<&DeviceTensor>, (o, ht): OutState<'_>) -> SeqArgs {
    let (q, k, v) = qkv;
    SeqArgs {
        q: Region::of(q),
        k: Region::of(k),
        v: Region::of(v),
        o: Region::of_mut(o),
        h0: h0.map(Region::of),
        ht: Region::of_mut(ht),
    }
}

/// The float dtype of `t` (named `name` in the error).
pub(crate) fn float_dtype(t: &DeviceTensor, name: &str) -> Result<Dtype> {
    t.dtype()
        .float()
        .ok_or_else(|| RetentionError::DtypeMismatch {
            tensor: name.into(),
            expected: "f32, f16 or bf16".into(),
            got: t.dtype().to_string(),
        })
}

/// The four dims of `t` (`[B, T, H, last]`), or a shape error naming it.
pub(crate) fn rank4(t: &DeviceTensor, name: &str, last: &str) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(t.shape()).map_err(|_| RetentionError::ShapeMismatch {
        tensor: name.into(),
        expected: format!("rank 4 [B, T, H, {last}]"),
        got: format!("rank {} {:?}", t.shape().len(), t.shape()),
    })
}

fn cpu_parallel<T: CpuElement>(
    r: &Retention,
    (q, k, v): Qkv<'_>,
    o: &mut DeviceTensor,
) -> Result<()> {
    host_view::check_disjoint(&[("o", o)], &[("q", q), ("k", k), ("v", v)])?;
    let (q, k, v) = (
        host_view::view::<T>(q, "q")?,
        host_view::view::<T>(k, "k")?,
        host_view::view::<T>(v, "v")?,
    );
    cpu::parallel_into(q, k, v, r.params(), host_view::view_mut::<T>(o, "o")?)
}

fn cpu_chunkwise<T: CpuElement>(
    r: &Retention,
    (q, k, v): Qkv<'_>,
    h0: Option<&DeviceTensor>,
    (o, ht): OutState<'_>,
    chunk: usize,
    cu: Option<&CuSeqlens>,
) -> Result<()> {
    let outputs = [("o", &*o), ("ht", &*ht)];
    host_view::check_disjoint(&outputs, &[("q", q), ("k", k), ("v", v)])?;
    if let Some(h0) = h0 {
        host_view::check_disjoint(&outputs, &[("h0", h0)])?;
    }
    let (q, k, v) = (
        host_view::view::<T>(q, "q")?,
        host_view::view::<T>(k, "k")?,
        host_view::view::<T>(v, "v")?,
    );
    let h0 = h0.map(|h| host_view::view::<f32>(h, "h0")).transpose()?;
    let out = (
        host_view::view_mut::<T>(o, "o")?,
        host_view::view_mut::<f32>(ht, "ht")?,
    );
    match cu {
        Some(cu) => cpu::chunkwise_varlen_into(q, k, v, cu, r.params(), chunk, h0, out),
        None => cpu::chunkwise_into(q, k, v, r.params(), chunk, h0, out),
    }
}
