//! `Retention`: the three forms of ARCHITECTURE §1 on any [`Device`], host tensors in and out.

use std::path::Path;

use kernel_gen::KernelOp;
use retention_core::{CuSeqlens, Dtype, HostTensor, Result, RetentionError, RetentionShape};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;

use crate::autotune_cache::{
    CACHE_FILE, DEFAULT_CHUNK, ShapeBucket, cache_dir, cached_winning_kernel, cpu_chunkwise_key,
    gpu_chunkwise_key, gpu_tuning_candidates,
};
use crate::device::Device;
use crate::gpu_chunkwise::TwoPhaseMode;
use crate::kernel_launch::{Executor, Region};
use crate::memory_pool::MemoryPool;
use crate::state_pool::{StateConfig, StatePool};
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

/// Retention with fixed decays and scale on one device.
///
/// The device API (`*_into`, see `retention_device`) takes [`DeviceTensor`]s and runs where
/// they are. The host-tensor methods here are a convenience on top: on the CPU they call the
/// fast CPU kernels directly; on a GPU-like device (CUDA, or the emulator standing in for
/// one) they upload q, k, v (and h0) on the device's default stream, run the device op and
/// download the results.
///
/// `Retention` is `Send + Sync`: one instance may serve many threads.
#[derive(Debug)]
pub struct Retention {
    device: Device,
    exec: Option<Executor>,
    params: RetentionParams,
    memory: MemoryPool,
    /// log2 γ per head (f32) and a u32 zero (the slot of one-row decode launches), on the
    /// device; `None` on the CPU.
    constants: Option<(DeviceTensor, DeviceTensor)>,
}

impl Retention {
    /// Retention on `device` with these decays and scale. On a GPU-like device the per-head
    /// log2 γ is uploaded once here (counted on the device's default stream).
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] when a CUDA device cannot be opened;
    /// [`RetentionError::Unsupported`] for a GPU older than sm_80.
    pub fn new(device: &Device, params: RetentionParams) -> Result<Self> {
        let exec = Executor::of(device)?;
        let memory = MemoryPool::on(device, None)?;
        let constants = if exec.is_none() {
            None
        } else {
            Some(device_constants(device, &memory, &params)?)
        };
        Ok(Self {
            device: device.clone(),
            exec,
            params,
            memory,
            constants,
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The decays and scale.
    pub fn params(&self) -> &RetentionParams {
        &self.params
    }

    /// The memory pool state pools made by [`Retention::state_pool`] draw from.
    pub fn memory(&self) -> &MemoryPool {
        &self.memory
    }

    /// The executor and the device's log2 γ, on a GPU-like device.
    pub(crate) fn gpu(&self) -> Option<(&Executor, Region)> {
        let exec = self.exec.as_ref()?;
        let (log2, _) = self.constants.as_ref()?;
        Some((exec, Region::of(log2)))
    }

    /// A device u32 holding 0.
    pub(crate) fn zero_slot(&self) -> Result<Region> {
        self.constants
            .as_ref()
            .map(|(_, z)| Region::of(z))
            .ok_or_else(|| RetentionError::NoDevice("the CPU has no device constants".into()))
    }

    /// Uploads host tensors on the default stream.
    fn upload<T: CpuElement>(&self, t: &HostTensor<T>, stream: &Stream) -> Result<DeviceTensor> {
        DeviceTensor::upload(&self.memory, t, stream)
    }

    fn empty(&self, dtype: DeviceDtype, shape: &[usize]) -> Result<DeviceTensor> {
        DeviceTensor::zeros(&self.memory, &self.device, dtype, shape)
    }

    /// A stateful op through the device API: upload, run, download (o, H_T).
    fn stateful_via_device<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        h0: Option<&HostTensor<f32>>,
        rows: usize,
        op: impl FnOnce(
            crate::retention_device::Qkv<'_>,
            Option<&DeviceTensor>,
            crate::retention_device::OutState<'_>,
            &Stream,
        ) -> Result<()>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        let s = shape_of(q, k, v, &self.params)?;
        let stream = Stream::default_for(&self.device)?;
        let (dq, dk, dv) = (
            self.upload(q, &stream)?,
            self.upload(k, &stream)?,
            self.upload(v, &stream)?,
        );
        let dh0 = h0.map(|h| self.upload(h, &stream)).transpose()?;
        let mut o = self.empty(DeviceDtype::of::<T>()?, &s.vo_shape())?;
        let mut ht = self.empty(DeviceDtype::F32, &s.state_shape(rows))?;
        op((&dq, &dk, &dv), dh0.as_ref(), (&mut o, &mut ht), &stream)?;
        Ok((o.download(&stream)?, ht.download(&stream)?))
    }

    /// Parallel form: o `[B, T, H, V]` from q, k `[B, T, H, K]`, v `[B, T, H, V]`.
    ///
    /// On a GPU this launches the catalog's flash-style parallel kernel.
    ///
    /// # Errors
    /// Shape mismatches, gammas not matching H, a bad scale; on a GPU a (K, V) no parallel
    /// kernel serves.
    pub fn parallel<T: CpuElement>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> Result<HostTensor<T>> {
        if self.exec.is_none() {
            return cpu::parallel(q, k, v, &self.params);
        }
        let s = shape_of(q, k, v, &self.params)?;
        let stream = Stream::default_for(&self.device)?;
        let (dq, dk, dv) = (
            self.upload(q, &stream)?,
            self.upload(k, &stream)?,
            self.upload(v, &stream)?,
        );
        let mut o = self.empty(DeviceDtype::of::<T>()?, &s.vo_shape())?;
        self.parallel_into((&dq, &dk, &dv), &mut o, Some(&stream))?;
        o.download(&stream)
    }

    /// Chunkwise form with chunk `chunk` and optional initial state `h0` `[B, H, K, V]`.
    /// Returns (o `[B, T, H, V]`, H_T `[B, H, K, V]` f32).
    ///
    /// # Errors
    /// Zero chunk, shape mismatches, gammas, scale; on emulated devices a head geometry no
    /// decode kernel serves.
    pub fn chunkwise<T: CpuElement>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        chunk: usize,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        self.chunkwise_with(TwoPhaseMode::Heuristic, (q, k, v), chunk, h0)
    }

    fn chunkwise_with<T: CpuElement>(
        &self,
        mode: TwoPhaseMode,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        chunk: usize,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        if self.exec.is_none() {
            return cpu::chunkwise(q, k, v, &self.params, chunk, h0);
        }
        let rows = q.shape().first().copied().unwrap_or(0);
        let two_phase = mode != TwoPhaseMode::Off;
        self.stateful_via_device((q, k, v), h0, rows, |qkv, h0, out, stream| {
            self.chunkwise_device(qkv, h0, out, chunk, two_phase, Some(stream))
        })
    }

    /// Recurrent form (token by token) with optional `h0`. Returns (o, H_T) like
    /// [`Retention::chunkwise`], whose result it equals.
    ///
    /// # Errors
    /// As [`Retention::chunkwise`].
    pub fn recurrent<T: CpuElement>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        if self.exec.is_none() {
            // One token per chunk is the recurrence itself.
            return cpu::chunkwise(q, k, v, &self.params, 1, h0);
        }
        let rows = q.shape().first().copied().unwrap_or(0);
        self.stateful_via_device((q, k, v), h0, rows, |qkv, h0, out, stream| {
            self.recurrent_into(qkv, h0, out, Some(stream))
        })
    }

    /// Chunkwise form over a packed variable-length batch of host tensors (see
    /// [`Retention::chunkwise_varlen_into`]). Returns (o, H_T `[N, H, K, V]`).
    ///
    /// # Errors
    /// As [`Retention::chunkwise_varlen_into`].
    pub fn chunkwise_varlen<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        cu_seqlens: &CuSeqlens,
        h0: Option<&HostTensor<f32>>,
        chunk: usize,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        if self.exec.is_none() {
            return cpu::chunkwise_varlen(q, k, v, cu_seqlens, &self.params, chunk, h0);
        }
        self.stateful_via_device(
            (q, k, v),
            h0,
            cu_seqlens.num_seqs(),
            |qkv, h0, out, stream| {
                self.chunkwise_varlen_into(qkv, cu_seqlens, h0, out, chunk, Some(stream))
            },
        )
    }

    /// Recurrent form over a packed variable-length batch of host tensors.
    ///
    /// # Errors
    /// As [`Retention::chunkwise_varlen_into`].
    pub fn recurrent_varlen<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        cu_seqlens: &CuSeqlens,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        if self.exec.is_none() {
            return cpu::chunkwise_varlen(q, k, v, cu_seqlens, &self.params, 1, h0);
        }
        self.stateful_via_device(
            (q, k, v),
            h0,
            cu_seqlens.num_seqs(),
            |qkv, h0, out, stream| {
                self.recurrent_varlen_into(qkv, cu_seqlens, h0, out, Some(stream))
            },
        )
    }

    /// The MSR epilogue on host tensors (`RMSNorm_head(o) ⊙ swish(g)`): the CPU kernel on
    /// the CPU, [`Retention::msr_epilogue_into`] (upload, run, download) on GPU-like devices.
    ///
    /// # Errors
    /// As `retention_kernels::cpu::msr_epilogue`; on a GPU-like device as
    /// [`Retention::msr_epilogue_into`].
    pub fn msr_epilogue<T: CpuElement>(
        &self,
        o: &HostTensor<T>,
        g: &HostTensor<T>,
        eps: f64,
    ) -> Result<HostTensor<T>> {
        if self.gpu().is_some() {
            return self.msr_epilogue_via_device(o, g, eps);
        }
        cpu::msr_epilogue(o, g, eps)
    }

    /// The chunk size `retention autotune` found fastest for this problem on this machine (the
    /// cached winner for its shape bucket and dtype in the default autotune cache), or
    /// [`DEFAULT_CHUNK`] when there is no current entry. Never fails: a missing, stale or
    /// corrupt cache just means no tuning result.
    pub fn tuned_chunk(&self, shape: &RetentionShape, dtype: Dtype) -> usize {
        match cache_dir() {
            Some(dir) => self.tuned_chunk_in(&dir.join(CACHE_FILE), shape, dtype),
            None => DEFAULT_CHUNK,
        }
    }

    /// [`Retention::tuned_chunk`] reading the cache file at `path`. On a GPU-like device the
    /// key names the device, its GPU (or the emulator's model) and the catalog candidates
    /// `retention autotune --device cuda|emulated` timed; on the CPU the CPU model.
    pub fn tuned_chunk_in(&self, path: &Path, shape: &RetentionShape, dtype: Dtype) -> usize {
        self.tuned_in(path, shape, dtype).0
    }

    /// The tuned chunk and whether the two-phase forward won it (`None` without a tuning).
    fn tuned_in(&self, path: &Path, shape: &RetentionShape, dtype: Dtype) -> (usize, Option<bool>) {
        let Some(bucket) =
            ShapeBucket::of(shape.batch, shape.seq_len, shape.heads, shape.dk, shape.dv)
        else {
            return (DEFAULT_CHUNK, None);
        };
        let key = match &self.exec {
            None => cpu_chunkwise_key(bucket, dtype),
            Some(exec) => {
                let arch = exec.arch();
                let dims = (shape.heads, shape.dk, shape.dv);
                let candidates = gpu_tuning_candidates(bucket, dims, dtype, arch);
                let hardware = exec.hardware();
                gpu_chunkwise_key(
                    &self.device.name(),
                    &hardware,
                    arch,
                    bucket,
                    dtype,
                    &candidates,
                )
            }
        };
        match cached_winning_kernel(path, &key) {
            Some((chunk, kernel)) => (
                chunk,
                kernel.map(|k| k.starts_with(KernelOp::ChunkwiseSegmented.name())),
            ),
            None => (DEFAULT_CHUNK, None),
        }
    }

    /// [`Retention::chunkwise`] with the tuned chunk size ([`Retention::tuned_chunk`]); on a
    /// GPU the tuning also decides between the one-pass and the two-phase forward.
    ///
    /// # Errors
    /// As [`Retention::chunkwise`].
    pub fn chunkwise_tuned<T: CpuElement>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        match cache_dir() {
            Some(dir) => self.chunkwise_tuned_in(&dir.join(CACHE_FILE), (q, k, v), h0),
            None => self.chunkwise(q, k, v, DEFAULT_CHUNK, h0),
        }
    }

    /// [`Retention::chunkwise_tuned`] reading the cache file at `path`.
    ///
    /// # Errors
    /// As [`Retention::chunkwise`].
    pub fn chunkwise_tuned_in<T: CpuElement>(
        &self,
        path: &Path,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        let shape = shape_of(q, k, v, &self.params)?;
        let dtype = T::DTYPE.unwrap_or(Dtype::F32);
        let (chunk, two_phase) = self.tuned_in(path, &shape, dtype);
        // The one-pass kernel won: never split. The two-phase forward won, or no tuning:
        // the runtime's plan (which the tuning timed) applies.
        let mode = match two_phase {
            Some(false) => TwoPhaseMode::Off,
            Some(true) | None => TwoPhaseMode::Heuristic,
        };
        self.chunkwise_with(mode, (q, k, v), chunk, h0)
    }

    /// A state pool for serving `capacity` sequences of `layers` layers with this device and
    /// these decays.
    ///
    /// # Errors
    /// As [`StatePool::new`].
    pub fn state_pool(
        &self,
        heads: usize,
        dk: usize,
        dv: usize,
        layers: usize,
        capacity: usize,
    ) -> Result<StatePool> {
        let cfg = StateConfig {
            heads,
            dk,
            dv,
            params: self.params.clone(),
        };
        StatePool::new(&self.device, &self.memory, &cfg, layers, capacity)
    }
}

/// log2 γ per head (f32) and a u32 zero, uploaded once on the device's default stream.
fn device_constants(
    device: &Device,
    memory: &MemoryPool,
    params: &RetentionParams,
) -> Result<(DeviceTensor, DeviceTensor)> {
    let stream = Stream::default_for(device)?;
    let log2: Vec<f32> = (0..params.gammas.len())
        .map(|h| params.gammas.log2(h) as f32)
        .collect();
    let log2 = DeviceTensor::upload(memory, &HostTensor::new(vec![log2.len()], log2)?, &stream)?;
    let zero = DeviceTensor::zeros(memory, device, DeviceDtype::U32, &[1])?;
    // Once, at construction: ops on other streams read these.
    stream.synchronize()?;
    Ok((log2, zero))
}

/// The problem shape after the same checks the CPU kernels make.
pub(crate) fn shape_of<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
) -> Result<RetentionShape> {
    // A one-token, one-row probe of the CPU parallel kernel would also validate, but shapes
    // are cheap to check directly.
    let dims = |t: &HostTensor<T>, name: &str, last: &str| -> Result<[usize; 4]> {
        <[usize; 4]>::try_from(t.shape()).map_err(|_| RetentionError::ShapeMismatch {
            tensor: name.into(),
            expected: format!("rank 4 [B, T, H, {last}]"),
            got: format!("rank {} {:?}", t.shape().len(), t.shape()),
        })
    };
    let [b, t, h, dk] = dims(q, "q", "K")?;
    let [.., dv] = dims(v, "v", "V")?;
    let shape = RetentionShape::new(b, t, h, dk, dv)?;
    k.expect_shape("k", &["B", "T", "H", "K"], &shape.qk_shape())?;
    v.expect_shape("v", &["B", "T", "H", "V"], &shape.vo_shape())?;
    params.gammas.check_heads(h)?;
    retention_core::validate_scale(params.scale, dk)?;
    Ok(shape)
}
