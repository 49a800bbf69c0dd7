//! `Retention`: the three forms of DESIGN §1 on any [`Device`], host tensors in and out.

use std::path::Path;

use kernel_gen::KernelOp;
use retention_core::{Dtype, HostTensor, Result, RetentionError, RetentionShape, validate_scale};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;

use crate::autotune_cache::{
    CACHE_FILE, DEFAULT_CHUNK, ShapeBucket, cache_dir, cached_winning_kernel, cpu_chunkwise_key,
    emulated_hardware, gpu_chunkwise_key, gpu_tuning_candidates,
};
use crate::device::Device;
use crate::gpu::{Gpu, StateRef};
use crate::gpu_chunkwise::{self, TwoPhaseMode};
use crate::gpu_decode::{self, DecodeProblem};
use crate::gpu_parallel;
use crate::memory_pool::MemoryPool;
use crate::state_pool::{StateConfig, StatePool};

/// Retention with fixed decays and scale on one device.
///
/// On the CPU every form runs the fast CPU kernels. On a GPU — a CUDA device, or the
/// emulator standing in for one — the chunkwise form launches the catalog's chunkwise kernel
/// when one serves the (K, V, chunk, dtype), and otherwise — like the recurrent form — the
/// decode kernel token by token (the same math, DESIGN §1); the parallel form launches the
/// flash-style parallel kernel. Host tensors go in and come out; on CUDA they are
/// copied to the device and back around each call.
#[derive(Debug, Clone)]
pub struct Retention {
    device: Device,
    gpu: Option<Gpu>,
    params: RetentionParams,
    memory: MemoryPool,
}

impl Retention {
    /// Retention on `device` with these decays and scale.
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] when a CUDA device cannot be opened;
    /// [`RetentionError::Unsupported`] for a GPU older than sm_80.
    pub fn new(device: &Device, params: RetentionParams) -> Result<Self> {
        Ok(Self {
            device: device.clone(),
            gpu: Gpu::of(device)?,
            params,
            memory: MemoryPool::on(device, None)?,
        })
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The memory pool state pools made by [`Retention::state_pool`] draw from.
    pub fn memory(&self) -> &MemoryPool {
        &self.memory
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
        let Some(gpu) = &self.gpu else {
            return cpu::parallel(q, k, v, &self.params);
        };
        let shape = shape_of(q, k, v, &self.params)?;
        let spec = gpu_parallel::parallel_spec::<T>(gpu, &self.params.gammas, &shape)?;
        let scale = validate_scale(self.params.scale, shape.dk)? as f32;
        gpu_parallel::parallel(gpu, &spec, &shape, &self.params.gammas, scale, (q, k, v))
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
        let Some(gpu) = &self.gpu else {
            return cpu::chunkwise(q, k, v, &self.params, chunk, h0);
        };
        if chunk == 0 {
            return Err(RetentionError::ZeroChunk);
        }
        let shape = shape_of(q, k, v, &self.params)?;
        if let Some(h) = h0 {
            h.expect_shape("h0", &["B", "H", "K", "V"], &shape.state_shape(shape.batch))?;
        }
        let dtype = gpu_decode::dtype_of::<T>()?;
        let gammas = &self.params.gammas;
        let Some(spec) = gpu_chunkwise::chunkwise_spec(gammas, &shape, chunk, dtype, gpu.arch())
        else {
            return self.recurrent_gpu(gpu, q, k, v, h0);
        };
        let scale = validate_scale(self.params.scale, shape.dk)? as f32;
        let mut h0 = h0.map(|h| h.data().to_vec());
        let mut ht = vec![0.0; shape.batch * shape.heads * shape.dk * shape.dv];
        let o = gpu_chunkwise::chunkwise(
            gpu,
            mode,
            &spec,
            &shape,
            gammas,
            scale,
            (q, k, v),
            h0.as_deref_mut().map(StateRef::Host),
            StateRef::Host(&mut ht),
        )?;
        Ok((o, HostTensor::new(shape.state_shape(shape.batch), ht)?))
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
        match &self.gpu {
            Some(gpu) => self.recurrent_gpu(gpu, q, k, v, h0),
            // One token per chunk is the recurrence itself.
            None => cpu::chunkwise(q, k, v, &self.params, 1, h0),
        }
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
        let key = match &self.gpu {
            None => cpu_chunkwise_key(bucket, dtype),
            Some(gpu) => {
                let arch = gpu.arch();
                let dims = (shape.heads, shape.dk, shape.dv);
                let candidates = gpu_tuning_candidates(bucket, dims, dtype, arch);
                let hardware = match gpu {
                    Gpu::Cuda(target) => target.name().to_string(),
                    Gpu::Emulated(_) => emulated_hardware(arch),
                };
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

    /// The recurrent form as one decode launch per token; the state stays in the device's
    /// memory between tokens.
    fn recurrent_gpu<T: CpuElement>(
        &self,
        gpu: &Gpu,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<(HostTensor<T>, HostTensor<f32>)> {
        // Validate exactly as the CPU path does, on a tiny slice of the work.
        let s = shape_of(q, k, v, &self.params)?;
        let mut state = match h0 {
            Some(h) => {
                h.expect_shape("h0", &["B", "H", "K", "V"], &s.state_shape(s.batch))?;
                h.data().to_vec()
            }
            None => vec![0.0; s.batch * s.heads * s.dk * s.dv],
        };
        let problem = DecodeProblem {
            arch: gpu.arch(),
            gammas: &self.params.gammas,
            scale: self.params.scale,
            heads: s.heads,
            dk: s.dk,
            dv: s.dv,
        };
        let rows: Vec<u32> = (0..s.batch as u32).collect();
        let token = |x: &HostTensor<T>, t: usize, d: usize| -> Result<HostTensor<T>> {
            let mut data = Vec::with_capacity(s.batch * s.heads * d);
            for b in 0..s.batch {
                let off = (b * s.seq_len + t) * s.heads * d;
                data.extend_from_slice(&x.data()[off..off + s.heads * d]);
            }
            HostTensor::new(vec![s.batch, s.heads, d], data)
        };
        let mut o = HostTensor::<T>::zeros(s.vo_shape());
        let mut device_state = match gpu {
            Gpu::Cuda(target) => {
                let mut buf = self.memory.alloc(state.len() * 4)?;
                if let Some(dev) = buf.device_mut() {
                    target.stream().copy_to_device_at(&state, dev, 0)?;
                }
                Some((target.stream().clone(), buf))
            }
            Gpu::Emulated(_) => None,
        };
        for t in 0..s.seq_len {
            let states = match device_state.as_mut().and_then(|(_, b)| b.device_mut()) {
                Some(dev) => StateRef::Device(dev),
                None => StateRef::Host(&mut state),
            };
            let ot = gpu_decode::decode_step(
                gpu,
                &problem,
                states,
                &rows,
                (
                    &token(q, t, s.dk)?,
                    &token(k, t, s.dk)?,
                    &token(v, t, s.dv)?,
                ),
            )?;
            let row = s.heads * s.dv;
            for b in 0..s.batch {
                let off = (b * s.seq_len + t) * row;
                o.data_mut()[off..off + row].copy_from_slice(&ot.data()[b * row..(b + 1) * row]);
            }
        }
        if let Some((stream, buf)) = &device_state
            && let Some(dev) = buf.device()
        {
            stream.copy_to_host_from(dev, 0, &mut state)?;
        }
        Ok((o, HostTensor::new(s.state_shape(s.batch), state)?))
    }
}

/// The problem shape after the same checks the CPU kernels make.
fn shape_of<T: CpuElement>(
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
