//! A whole-model decode step with every tensor on one device (issue 17; ARCHITECTURE §2,
//! device-resident tensors): the same layers as [`super::RetNet::step`] and
//! [`super::Transformer::step`], one body for every device — the CPU, the emulated GPU (CI)
//! and CUDA. Per layer:
//!
//! ```text
//! xn = RMSNorm(x)                    Retention::rms_norm_into
//! P  = xn · W_in                     Blas::linear_into (cuBLAS on CUDA, the gemm crate on host memory)
//! q, k, v (, g) = columns of P       Retention::copy_rows_into
//! RetNet:      o = retention decode  StatePool::step_into;  y = RMSNorm_head(o) ⊙ swish(g)  msr_epilogue_into
//! Transformer: k, v → KV cache       kv_append_into;        y = attention(q, cache)          attention_decode_into
//! x += y · W_O                       Blas (accumulate)
//! x += gelu(RMSNorm(x) · W_up) · W_down   rms_norm_into, Blas, gelu_in_place, Blas (accumulate)
//! ```
//!
//! Nothing crosses between host and device during a step (tests count it). Weights, the
//! retention state and the KV cache are uploaded from a host model once, so the device step
//! can be checked against the host one. Activations are taken from the device's memory pool
//! each layer (its blocks are cached, so a steady step allocates nothing new). On the
//! emulated device the GEMMs run on the host and have no predicted time.

use retention_core::{Gammas, HostTensor};
use retention_kernels::reference::RetentionParams;
use retention_runtime::{
    Blas, Device, DeviceDtype, DeviceTensor, GemmWrite, MemoryPool, Retention, RowCopy, Slot,
    StateConfig, StatePool, Stream,
};

use super::config::{Arch, NetConfig};
use super::error::ModelError;
use super::layers::{HEAD_NORM_EPS, NORM_EPS};
use super::weights::LayerWeights;
use super::{NetElement, RetNet, Transformer};

/// One layer's weights on the device.
struct DeviceLayer {
    norm_mix: DeviceTensor,
    w_in: DeviceTensor,
    w_out: DeviceTensor,
    norm_ffn: DeviceTensor,
    w_up: DeviceTensor,
    w_down: DeviceTensor,
}

/// What mixes tokens: RetNet's state pool or the Transformer's KV caches.
enum Mixer {
    Retention {
        pool: Box<StatePool>,
        _slots: Vec<Slot>,
    },
    Attention {
        /// (keys, values) `[batch, H, context, head_dim]` per layer.
        caches: Vec<(DeviceTensor, DeviceTensor)>,
        /// Position of the new token (context − 1).
        pos: usize,
        workspace: DeviceTensor,
    },
}

/// A model whose step runs on one device; see the module docs.
pub struct DeviceNet {
    cfg: NetConfig,
    batch: usize,
    dtype: DeviceDtype,
    memory: MemoryPool,
    stream: Stream,
    ops: Retention,
    blas: Blas,
    layers: Vec<DeviceLayer>,
    mixer: Mixer,
    /// Pool bytes in use for the state or KV cache, and for the weights (measured: the
    /// pool's `in_use` after each was allocated).
    bytes: (u64, u64),
}

/// The device, its memory pool, a stream, the layer ops and the GEMMs.
struct Parts {
    memory: MemoryPool,
    stream: Stream,
    ops: Retention,
    blas: Blas,
}

fn parts(device: &Device, params: RetentionParams) -> Result<Parts, ModelError> {
    let stream = Stream::new(device)?;
    Ok(Parts {
        memory: MemoryPool::on(device, None)?,
        ops: Retention::new(device, params)?,
        blas: Blas::new(&stream)?,
        stream,
    })
}

fn upload<T: NetElement>(p: &Parts, h: &HostTensor<T>) -> Result<DeviceTensor, ModelError> {
    Ok(DeviceTensor::upload(&p.memory, h, &p.stream)?)
}

fn upload_layers<T: NetElement>(
    p: &Parts,
    layers: &[LayerWeights<T>],
) -> Result<Vec<DeviceLayer>, ModelError> {
    layers
        .iter()
        .map(|w| {
            Ok(DeviceLayer {
                norm_mix: upload(p, w.norm_mix.get())?,
                w_in: upload(p, w.w_in.get())?,
                w_out: upload(p, w.w_out.get())?,
                norm_ffn: upload(p, w.norm_ffn.get())?,
                w_up: upload(p, w.w_up.get())?,
                w_down: upload(p, w.w_down.get())?,
            })
        })
        .collect()
}

impl DeviceNet {
    /// `host`'s weights on `device`, serving `batch` new sequences (zero state).
    ///
    /// # Errors
    /// Device errors; out of device memory; a geometry the kernels do not serve.
    pub fn retnet<T: NetElement>(
        device: &Device,
        host: &RetNet<T>,
        batch: usize,
    ) -> Result<Self, ModelError> {
        let cfg = host.config().clone();
        let p = parts(device, host.params().clone())?;
        let state = StateConfig {
            heads: cfg.heads,
            dk: cfg.dk,
            dv: cfg.dv,
            params: host.params().clone(),
        };
        let mut pool = StatePool::new(device, &p.memory, &state, cfg.layers, batch)?;
        let slots = (0..batch)
            .map(|_| pool.alloc())
            .collect::<Result<Vec<_>, _>>()?;
        pool.stage(&slots, Some(&p.stream))?;
        let cache = p.memory.stats().in_use;
        let layers = upload_layers(&p, host.layers())?;
        let mixer = Mixer::Retention {
            pool: Box::new(pool),
            _slots: slots,
        };
        Ok(Self::assemble::<T>(cfg, batch, p, layers, (mixer, cache)))
    }

    /// `host`'s weights and KV caches (started: [`Transformer::start`]) on `device`; each
    /// step writes the new token at the caches' last position, as the host step does.
    ///
    /// # Errors
    /// Not started; device errors; out of device memory; head dims the kernels refuse.
    #[allow(
        dead_code,
        reason = "compared with the host step in tools/tests/model_device.rs"
    )]
    pub fn transformer<T: NetElement>(
        device: &Device,
        host: &Transformer<T>,
    ) -> Result<Self, ModelError> {
        let Some(first) = host.cache(0) else {
            return Err(ModelError::Config("transformer not started".into()));
        };
        let &[batch, _, context, _] = first.k.get().shape() else {
            return Err(ModelError::Config("KV cache of rank other than 4".into()));
        };
        Self::transformer_with(device, host, (batch, context), |p, l| {
            let c = host
                .cache(l)
                .ok_or_else(|| ModelError::Config(format!("transformer cache {l} missing")))?;
            Ok((upload(p, c.k.get())?, upload(p, c.v.get())?))
        })
    }

    /// `host`'s weights (`host` need not be started) on `device` with zero-filled KV caches
    /// of `batch` sequences at `context` tokens, allocated on the device only (no host copy
    /// of a cache that may not fit host memory); attention's cost does not depend on the
    /// cached values, so this is what the benchmark times.
    ///
    /// # Errors
    /// Device errors; out of device memory; head dims the kernels refuse.
    pub fn transformer_zeroed<T: NetElement>(
        device: &Device,
        host: &Transformer<T>,
        (batch, context): (usize, usize),
    ) -> Result<Self, ModelError> {
        let c = host.config();
        let shape = [batch, c.heads, context, c.dk];
        let dtype = DeviceDtype::of::<T>()?;
        Self::transformer_with(device, host, (batch, context), |p, _| {
            let zeros = || DeviceTensor::zeros(&p.memory, device, dtype, &shape);
            Ok((zeros()?, zeros()?))
        })
    }

    /// The Transformer on `device` with layer `l`'s (keys, values) cache from `cache(p, l)`.
    fn transformer_with<T: NetElement>(
        device: &Device,
        host: &Transformer<T>,
        (batch, context): (usize, usize),
        cache: impl Fn(&Parts, usize) -> Result<(DeviceTensor, DeviceTensor), ModelError>,
    ) -> Result<Self, ModelError> {
        let cfg = host.config().clone();
        if batch == 0 || context == 0 {
            return Err(ModelError::Config(format!(
                "batch {batch} and context {context} must be at least 1"
            )));
        }
        let params = RetentionParams::new(Gammas::retnet(1)?, None);
        let p = parts(device, params)?;
        let caches = (0..cfg.layers)
            .map(|l| cache(&p, l))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let dtype = T::DTYPE.ok_or_else(|| ModelError::Config("element type".into()))?;
        let geometry = ((batch, cfg.heads, context), (cfg.dk, cfg.dv));
        let floats = (p.ops).attention_workspace_floats(dtype, geometry.0, geometry.1)?;
        let workspace = DeviceTensor::zeros(&p.memory, device, DeviceDtype::F32, &[floats.max(1)])?;
        let cache = p.memory.stats().in_use;
        let layers = upload_layers(&p, host.layers())?;
        let mixer = Mixer::Attention {
            caches,
            pos: context - 1,
            workspace,
        };
        Ok(Self::assemble::<T>(cfg, batch, p, layers, (mixer, cache)))
    }

    fn assemble<T: NetElement>(
        cfg: NetConfig,
        batch: usize,
        p: Parts,
        layers: Vec<DeviceLayer>,
        (mixer, cache): (Mixer, usize),
    ) -> Self {
        let weights = p.memory.stats().in_use.saturating_sub(cache);
        Self {
            cfg,
            batch,
            dtype: DeviceDtype::of::<T>().unwrap_or(DeviceDtype::F32),
            memory: p.memory,
            stream: p.stream,
            ops: p.ops,
            blas: p.blas,
            layers,
            mixer,
            bytes: (cache as u64, weights as u64),
        }
    }

    /// Pool bytes of (state or KV cache, weights), measured when they were allocated.
    pub fn bytes(&self) -> (u64, u64) {
        self.bytes
    }

    /// The stream the step runs on.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The memory pool the model's tensors come from.
    pub fn memory(&self) -> &MemoryPool {
        &self.memory
    }

    /// One decode step of every sequence: x `[batch, d]` (on this device, the model's dtype)
    /// in, the residual stream after the last layer out (in place).
    ///
    /// # Errors
    /// x of the wrong shape, dtype or device; device errors.
    pub fn step(&mut self, x: &mut DeviceTensor) -> Result<(), ModelError> {
        let (n, d) = (self.batch, self.cfg.d_model);
        x.expect("x", self.stream.device(), self.dtype, &[n, d])?;
        for l in 0..self.layers.len() {
            let proj = self.mix_input(l, x)?;
            let y = match self.cfg.arch {
                Arch::Retnet => self.retention(l, &proj)?,
                Arch::Transformer => self.attention(l, &proj)?,
            };
            let w = &self.layers[l];
            self.blas
                .linear_into(&y, &w.w_out, x, GemmWrite::Accumulate)?;
            self.ffn(l, x)?;
        }
        Ok(())
    }

    fn zeros(&self, shape: &[usize]) -> Result<DeviceTensor, ModelError> {
        let device = self.stream.device();
        Ok(DeviceTensor::zeros(
            &self.memory,
            device,
            self.dtype,
            shape,
        )?)
    }

    /// `RMSNorm(x) · W_in`, `[batch, projection_width]`.
    fn mix_input(&self, l: usize, x: &DeviceTensor) -> Result<DeviceTensor, ModelError> {
        let (n, d, w) = (self.batch, self.cfg.d_model, &self.layers[l]);
        let s = Some(&self.stream);
        let mut xn = self.zeros(&[n, d])?;
        (self.ops).rms_norm_into(x, &w.norm_mix, f64::from(NORM_EPS), &mut xn, s)?;
        let mut proj = self.zeros(&[n, self.cfg.projection_width()])?;
        (self.blas).linear_into(&xn, &w.w_in, &mut proj, GemmWrite::Overwrite)?;
        Ok(proj)
    }

    /// Columns `[start, start + width)` of the projection, shaped `shape`.
    fn part(
        &self,
        proj: &DeviceTensor,
        (start, width): (usize, usize),
        shape: &[usize],
    ) -> Result<DeviceTensor, ModelError> {
        let mut t = self.zeros(shape)?;
        let copy = RowCopy {
            rows: self.batch,
            width,
            src: (self.cfg.projection_width(), start),
            dst: (width, 0),
        };
        (self.ops).copy_rows_into(proj, &mut t, copy, Some(&self.stream))?;
        Ok(t)
    }

    /// RetNet's mixer: retention decode then the gated epilogue, `[batch, value_width]`.
    fn retention(&mut self, l: usize, proj: &DeviceTensor) -> Result<DeviceTensor, ModelError> {
        let (n, h, dk, dv) = (self.batch, self.cfg.heads, self.cfg.dk, self.cfg.dv);
        let (kw, vw) = (self.cfg.key_width(), self.cfg.value_width());
        let q = self.part(proj, (0, kw), &[n, h, dk])?;
        let k = self.part(proj, (kw, kw), &[n, h, dk])?;
        let v = self.part(proj, (2 * kw, vw), &[n, h, dv])?;
        let g = self.part(proj, (2 * kw + vw, vw), &[n, 1, h, dv])?;
        let mut o = self.zeros(&[n, h, dv])?;
        let Mixer::Retention { pool, .. } = &mut self.mixer else {
            return Err(ModelError::Config(
                "RetNet step without a state pool".into(),
            ));
        };
        pool.step_into(l, (&q, &k, &v), &mut o, Some(&self.stream))?;
        let o = o.reshape(&[n, 1, h, dv])?;
        let mut y = self.zeros(&[n, 1, h, dv])?;
        (self.ops).msr_epilogue_into(&o, &g, HEAD_NORM_EPS, &mut y, Some(&self.stream))?;
        Ok(y.reshape(&[n, vw])?)
    }

    /// The Transformer's mixer: the new key and value into the cache, attention over it,
    /// `[batch, d]`.
    fn attention(&mut self, l: usize, proj: &DeviceTensor) -> Result<DeviceTensor, ModelError> {
        let (n, h, hd, d) = (self.batch, self.cfg.heads, self.cfg.dk, self.cfg.d_model);
        let q = self.part(proj, (0, d), &[n, h, hd])?;
        let k = self.part(proj, (d, d), &[n, h, hd])?;
        let v = self.part(proj, (2 * d, d), &[n, h, hd])?;
        let mut o = self.zeros(&[n, h, hd])?;
        let s = Some(&self.stream);
        let Mixer::Attention {
            caches,
            pos,
            workspace,
        } = &mut self.mixer
        else {
            return Err(ModelError::Config(
                "Transformer step without a KV cache".into(),
            ));
        };
        let (kc, vc) = &mut caches[l];
        self.ops.kv_append_into(&k, kc, *pos, s)?;
        self.ops.kv_append_into(&v, vc, *pos, s)?;
        (self.ops).attention_decode_into((&q, kc, vc), None, &mut o, Some(workspace), s)?;
        Ok(o.reshape(&[n, d])?)
    }

    /// `x += W_down · gelu(RMSNorm(x) · W_up)`.
    fn ffn(&self, l: usize, x: &mut DeviceTensor) -> Result<(), ModelError> {
        let (n, d, w) = (self.batch, self.cfg.d_model, &self.layers[l]);
        let s = Some(&self.stream);
        let mut xn = self.zeros(&[n, d])?;
        (self.ops).rms_norm_into(x, &w.norm_ffn, f64::from(NORM_EPS), &mut xn, s)?;
        let mut hidden = self.zeros(&[n, self.cfg.ffn])?;
        (self.blas).linear_into(&xn, &w.w_up, &mut hidden, GemmWrite::Overwrite)?;
        self.ops.gelu_in_place(&mut hidden, s)?;
        (self.blas).linear_into(&hidden, &w.w_down, x, GemmWrite::Accumulate)?;
        Ok(())
    }
}
