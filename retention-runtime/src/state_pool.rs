//! `StatePool`: the per-sequence recurrent state store that serving needs — the RetNet
//! counterpart of a paged KV cache, except each sequence's state has a fixed size
//! (layers × H × K × V f32) whatever its length.

use std::ops::Range;

use retention_core::{HostTensor, Result, RetentionError, RetentionShape, validate_scale};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;

use crate::device::Device;
use crate::gpu::{Gpu, StateRef};
use crate::gpu_chunkwise::{self, chunkwise_spec};
use crate::gpu_decode::{self, DecodeProblem};
use crate::memory_pool::{MemoryPool, PoolBuffer};
use crate::slot::{Slot, SlotTable};

/// The per-layer head geometry a pool serves.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// Heads H.
    pub heads: usize,
    /// Key head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
    /// Decays and scale.
    pub params: RetentionParams,
}

/// One sequence's state copied to the host: `[layers, H, K, V]` f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState(pub HostTensor<f32>);

/// Fixed-capacity store of recurrent states, `[capacity, layers, H, K, V]` f32, in the
/// memory of the device that steps them (host memory for the CPU and the emulator, GPU
/// memory for CUDA).
#[derive(Debug)]
pub struct StatePool {
    device: Device,
    gpu: Option<Gpu>,
    memory: MemoryPool,
    cfg: StateConfig,
    layers: usize,
    slots: SlotTable,
    states: PoolBuffer,
}

impl StatePool {
    /// Reserve `capacity` sequences × `layers` layers of state on `device` from `memory`
    /// (a pool of that device's memory: [`MemoryPool::on`]).
    ///
    /// # Errors
    /// Zero heads/dims/layers/capacity; gammas not matching H; out of memory; a CUDA device
    /// with a host-memory pool or the reverse; no such CUDA device.
    pub fn new(
        device: &Device,
        memory: &MemoryPool,
        cfg: &StateConfig,
        layers: usize,
        capacity: usize,
    ) -> Result<Self> {
        for (axis, n) in [
            ("H", cfg.heads),
            ("K", cfg.dk),
            ("V", cfg.dv),
            ("layers", layers),
            ("capacity", capacity),
        ] {
            if n == 0 {
                return Err(RetentionError::ZeroDim { axis });
            }
        }
        cfg.params.gammas.check_heads(cfg.heads)?;
        let on_gpu = matches!(device, Device::Cuda(_));
        if on_gpu != memory.is_device_memory() {
            return Err(RetentionError::Unsupported {
                what: "memory pool".into(),
                value: if on_gpu { "host memory" } else { "GPU memory" }.into(),
                reason: format!(
                    "a state pool on {device} needs a pool of that device's memory \
                     (MemoryPool::on)"
                ),
            });
        }
        let gpu = Gpu::of(device)?;
        let elems = [capacity, layers, cfg.heads, cfg.dk, cfg.dv, 4]
            .into_iter()
            .try_fold(1usize, usize::checked_mul)
            .ok_or(RetentionError::OutOfMemory {
                requested: usize::MAX,
                available: 0,
            })?
            / 4;
        let mut states = memory.alloc(elems * 4)?;
        states.fill_zero()?;
        Ok(Self {
            device: device.clone(),
            gpu,
            memory: memory.clone(),
            cfg: cfg.clone(),
            layers,
            slots: SlotTable::new(capacity),
            states,
        })
    }

    /// The device holding the states.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Sequences currently holding a slot.
    pub fn in_use(&self) -> usize {
        self.slots.in_use()
    }

    /// Bytes of state per sequence (all layers).
    pub fn bytes_per_sequence(&self) -> usize {
        self.layer_len() * self.layers * 4
    }

    fn layer_len(&self) -> usize {
        self.cfg.heads * self.cfg.dk * self.cfg.dv
    }

    fn range(&self, index: usize, layer: usize) -> std::ops::Range<usize> {
        let start = (index * self.layers + layer) * self.layer_len();
        start..start + self.layer_len()
    }

    fn seq_range(&self, index: usize) -> std::ops::Range<usize> {
        let start = index * self.layers * self.layer_len();
        start..start + self.layers * self.layer_len()
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer < self.layers {
            Ok(())
        } else {
            Err(RetentionError::Unsupported {
                what: "layer".into(),
                value: layer.to_string(),
                reason: format!("the pool holds {} layers", self.layers),
            })
        }
    }

    /// Take a free slot; its state starts at zero.
    ///
    /// # Errors
    /// [`RetentionError::Slot`] when the pool is full (never a silent eviction).
    pub fn alloc(&mut self) -> Result<Slot> {
        let slot = self.slots.alloc()?;
        let r = self.seq_range(slot.index());
        if let Err(e) = self.zero(r) {
            self.slots.free(slot)?;
            return Err(e);
        }
        Ok(slot)
    }

    /// Return a slot; its handle (and copies of it) become stale.
    ///
    /// # Errors
    /// [`RetentionError::Slot`] for a stale or foreign handle.
    pub fn free(&mut self, slot: Slot) -> Result<()> {
        self.slots.free(slot).map(|_| ())
    }

    /// Zero a slot's state in every layer.
    ///
    /// # Errors
    /// [`RetentionError::Slot`] for a stale or foreign handle.
    pub fn reset(&mut self, slot: Slot) -> Result<()> {
        let i = self.slots.check(slot)?;
        self.zero(self.seq_range(i))
    }

    /// Copy a slot's state (all layers) to the host.
    ///
    /// # Errors
    /// [`RetentionError::Slot`] for a stale or foreign handle.
    pub fn snapshot(&self, slot: Slot) -> Result<HostState> {
        let i = self.slots.check(slot)?;
        let data = self.read(self.seq_range(i))?;
        let c = &self.cfg;
        Ok(HostState(HostTensor::new(
            vec![self.layers, c.heads, c.dk, c.dv],
            data,
        )?))
    }

    /// Overwrite a slot's state (all layers) from the host (prefix reuse, migration).
    ///
    /// # Errors
    /// [`RetentionError::Slot`] for a stale or foreign handle; a shape mismatch.
    pub fn restore(&mut self, slot: Slot, state: &HostState) -> Result<()> {
        let i = self.slots.check(slot)?;
        let c = &self.cfg;
        state.0.expect_shape(
            "state",
            &["layers", "H", "K", "V"],
            &[self.layers, c.heads, c.dk, c.dv],
        )?;
        let r = self.seq_range(i);
        self.write(r, state.0.data())
    }

    /// One decode step of `layer` for a batch whose rows belong to arbitrary slots
    /// (continuous batching): q, k `[N, H, K]`, v `[N, H, V]`; returns o `[N, H, V]`.
    ///
    /// # Errors
    /// Stale/foreign/duplicate slots, a bad layer, shape mismatches, a head geometry no
    /// decode kernel serves (emulated device).
    pub fn step<T: CpuElement>(
        &mut self,
        layer: usize,
        slots: &[Slot],
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> Result<HostTensor<T>> {
        self.check_layer(layer)?;
        let indices = slots
            .iter()
            .map(|&s| self.slots.check(s))
            .collect::<Result<Vec<_>>>()?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = indices.iter().find(|&&i| !seen.insert(i)) {
            return Err(RetentionError::Slot(format!(
                "slot {dup} appears twice in one step"
            )));
        }
        let c = &self.cfg;
        let n = slots.len();
        q.expect_shape("q", &["N", "H", "K"], &[n, c.heads, c.dk])?;
        k.expect_shape("k", &["N", "H", "K"], &[n, c.heads, c.dk])?;
        v.expect_shape("v", &["N", "H", "V"], &[n, c.heads, c.dv])?;
        // The pool is [capacity · layers, H, K, V]: row (slot, layer) = slot · layers + layer.
        let rows: Vec<usize> = indices.iter().map(|&i| i * self.layers + layer).collect();
        match &self.gpu {
            Some(gpu) => {
                let problem = DecodeProblem {
                    arch: gpu.arch(),
                    gammas: &c.params.gammas,
                    scale: c.params.scale,
                    heads: c.heads,
                    dk: c.dk,
                    dv: c.dv,
                };
                let rows: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                let states = state_ref(&mut self.states)?;
                gpu_decode::decode_step(gpu, &problem, states, &rows, (q, k, v))
            }
            None => self.step_cpu(&rows, q, k, v),
        }
    }

    /// The CPU decode step over pool rows `rows`, in place on the pool's own storage.
    fn step_cpu<T: CpuElement>(
        &mut self,
        rows: &[usize],
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> Result<HostTensor<T>> {
        let states = host_mut(&mut self.states)?;
        cpu::decode_step_in(q, k, v, states, rows, &self.cfg.params)
    }

    /// Prefill `layer` of one sequence with the chunkwise form: H0 from the slot, H_T written
    /// back. q, k `[1, T, H, K]`, v `[1, T, H, V]`; returns o `[1, T, H, V]`.
    ///
    /// # Errors
    /// A stale/foreign slot, a bad layer, chunk 0, shape mismatches.
    pub fn prefill<T: CpuElement>(
        &mut self,
        layer: usize,
        slot: Slot,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
        chunk: usize,
    ) -> Result<HostTensor<T>> {
        self.check_layer(layer)?;
        let i = self.slots.check(slot)?;
        if chunk == 0 {
            return Err(RetentionError::ZeroChunk);
        }
        if self.gpu.is_some() {
            return self.prefill_gpu(i, slot, layer, (q, k, v), chunk);
        }
        let c = &self.cfg;
        let r = self.range(i, layer);
        if q.shape().first() != Some(&1) {
            return Err(RetentionError::ShapeMismatch {
                tensor: "q".into(),
                expected: "[B=1, T, H, K] (one sequence)".into(),
                got: format!("{:?}", q.shape()),
            });
        }
        let h0 = HostTensor::new(vec![1, c.heads, c.dk, c.dv], self.read(r.clone())?)?;
        let (o, ht) = cpu::chunkwise(q, k, v, &c.params, chunk, Some(&h0))?;
        self.write(r, ht.data())?;
        Ok(o)
    }

    /// Prefill on a GPU-like device: the catalog's chunkwise kernel with H0 from the slot and
    /// H_T written back, or — for a (K, V, chunk, dtype) no chunkwise kernel serves — one
    /// decode launch per token (the same math; DESIGN §1).
    fn prefill_gpu<T: CpuElement>(
        &mut self,
        index: usize,
        slot: Slot,
        layer: usize,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        chunk: usize,
    ) -> Result<HostTensor<T>> {
        let c = self.cfg.clone();
        let Some(gpu) = self.gpu.clone() else {
            return Err(RetentionError::NoDevice("the pool has no GPU".into()));
        };
        let t = q.shape().get(1).copied().unwrap_or(0);
        q.expect_shape("q", &["B", "T", "H", "K"], &[1, t, c.heads, c.dk])?;
        let shape = RetentionShape::new(1, t, c.heads, c.dk, c.dv)?;
        let dtype = gpu_decode::dtype_of::<T>()?;
        let Some(spec) = chunkwise_spec(&c.params.gammas, &shape, chunk, dtype, gpu.arch()) else {
            return self.prefill_by_steps(slot, layer, q, k, v);
        };
        k.expect_shape("k", &["B", "T", "H", "K"], &shape.qk_shape())?;
        v.expect_shape("v", &["B", "T", "H", "V"], &shape.vo_shape())?;
        let r = self.range(index, layer);
        let scale = validate_scale(c.params.scale, c.dk)? as f32;
        let run = |h0: StateRef<'_>, ht: StateRef<'_>| {
            gpu_chunkwise::chunkwise(
                &gpu,
                gpu_chunkwise::TwoPhaseMode::Heuristic,
                &spec,
                &shape,
                &c.params.gammas,
                scale,
                (q, k, v),
                Some(h0),
                ht,
            )
        };
        if let Some(states) = self.states.as_mut_slice::<f32>() {
            let mut h0 = states[r.clone()].to_vec();
            return run(StateRef::Host(&mut h0), StateRef::Host(&mut states[r]));
        }
        // GPU memory: H0 and H_T go through two scratch blocks of the pool (the kernel
        // reads H0 while it writes H_T), then H_T is copied into the slot on the device.
        let (mut h0, mut ht) = (
            self.memory.alloc(r.len() * 4)?,
            self.memory.alloc(r.len() * 4)?,
        );
        let Gpu::Cuda(target) = &gpu else {
            return Err(RetentionError::NoDevice(
                "device memory without a CUDA device".into(),
            ));
        };
        let stream = target.stream();
        let states = device_mut(&mut self.states)?;
        let (h0_dev, ht_dev) = (device_mut(&mut h0)?, device_mut(&mut ht)?);
        stream.copy_on_device((states, r.start), (h0_dev, 0), r.len())?;
        let o = run(StateRef::Device(h0_dev), StateRef::Device(ht_dev))?;
        stream.copy_on_device((ht_dev, 0), (states, r.start), r.len())?;
        Ok(o)
    }

    /// Sets `range` of the state to zero, wherever it lives.
    fn zero(&mut self, range: Range<usize>) -> Result<()> {
        if let Some(s) = self.states.as_mut_slice::<f32>() {
            s[range].fill(0.0);
            return Ok(());
        }
        let stream = self.cuda_stream()?;
        stream.zero_range(device_mut(&mut self.states)?, range.start, range.len())
    }

    /// A host copy of `range` of the state.
    fn read(&self, range: Range<usize>) -> Result<Vec<f32>> {
        if let Some(s) = self.states.as_slice::<f32>() {
            return Ok(s[range].to_vec());
        }
        let mut out = vec![0.0; range.len()];
        let stream = self.cuda_stream()?;
        let Some(dev) = self.states.device() else {
            return Err(RetentionError::NoDevice(
                "the pool's state has no memory".into(),
            ));
        };
        stream.copy_to_host_from(dev, range.start, &mut out)?;
        Ok(out)
    }

    /// Overwrites `range` of the state with `data`.
    fn write(&mut self, range: Range<usize>, data: &[f32]) -> Result<()> {
        if let Some(s) = self.states.as_mut_slice::<f32>() {
            s[range].copy_from_slice(data);
            return Ok(());
        }
        let stream = self.cuda_stream()?;
        stream.copy_to_device_at(data, device_mut(&mut self.states)?, range.start)
    }

    fn cuda_stream(&self) -> Result<crate::cuda::Stream> {
        match &self.gpu {
            Some(Gpu::Cuda(target)) => Ok(target.stream().clone()),
            _ => Err(RetentionError::NoDevice(format!(
                "{}: the state is not in GPU memory",
                self.device
            ))),
        }
    }

    /// Prefill one decode launch per token (the recurrent form).
    fn prefill_by_steps<T: CpuElement>(
        &mut self,
        slot: Slot,
        layer: usize,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> Result<HostTensor<T>> {
        let c = self.cfg.clone();
        let t = q.shape().get(1).copied().unwrap_or(0);
        q.expect_shape("q", &["B", "T", "H", "K"], &[1, t, c.heads, c.dk])?;
        k.expect_shape("k", &["B", "T", "H", "K"], &[1, t, c.heads, c.dk])?;
        v.expect_shape("v", &["B", "T", "H", "V"], &[1, t, c.heads, c.dv])?;
        let token = |x: &HostTensor<T>, i: usize, d: usize| {
            HostTensor::new(
                vec![1, c.heads, d],
                x.data()[i * c.heads * d..(i + 1) * c.heads * d].to_vec(),
            )
        };
        let mut out = Vec::with_capacity(t * c.heads * c.dv);
        for i in 0..t {
            let o = self.step(
                layer,
                &[slot],
                &token(q, i, c.dk)?,
                &token(k, i, c.dk)?,
                &token(v, i, c.dv)?,
            )?;
            out.extend_from_slice(o.data());
        }
        HostTensor::new(vec![1, t, c.heads, c.dv], out)
    }
}

/// The state argument of a launch: host slice or device buffer, whichever holds the pool.
fn state_ref(states: &mut PoolBuffer) -> Result<StateRef<'_>> {
    if states.device_mut().is_some() {
        return device_mut(states).map(StateRef::Device);
    }
    host_mut(states).map(StateRef::Host)
}

fn host_mut(buffer: &mut PoolBuffer) -> Result<&mut [f32]> {
    buffer
        .as_mut_slice::<f32>()
        .ok_or_else(|| RetentionError::NoDevice("the state is in GPU memory".into()))
}

fn device_mut(buffer: &mut PoolBuffer) -> Result<&mut crate::cuda::DeviceBuffer<f32>> {
    buffer
        .device_mut()
        .ok_or_else(|| RetentionError::NoDevice("the state is in host memory".into()))
}
