//! `StatePool`: the per-sequence recurrent state store that serving needs — the RetNet
//! counterpart of a paged KV cache, except each sequence's state has a fixed size
//! (layers × H × K × V f32) whatever its length.

use std::ops::Range;

use retention_core::{HostTensor, Result, RetentionError};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;

use crate::device::Device;
use crate::kernel_launch::Region;
use crate::memory_pool::MemoryPool;
use crate::retention::Retention;
use crate::slot::{Slot, SlotTable};
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

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
/// memory of the device that steps them (host memory for the CPU, the emulator's memory for
/// the emulator, GPU memory for CUDA).
///
/// A decode step on device tensors is two calls: [`StatePool::stage`] uploads the batch's slot
/// rows (4·N bytes), then [`StatePool::step_into`] runs each layer on device q, k, v and writes
/// device o — no other host traffic, so a whole step (all layers) can be captured into a
/// [`crate::Graph`] and replayed after re-staging.
#[derive(Debug)]
pub struct StatePool {
    rt: Retention,
    cfg: StateConfig,
    layers: usize,
    slots: SlotTable,
    states: DeviceTensor,
    /// Staged slot indices × layers (u32, `[capacity]`) and their host copy.
    rows: DeviceTensor,
    staged: Vec<u32>,
    stream: Stream,
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
        let state_rows = capacity
            .checked_mul(layers)
            .ok_or(RetentionError::OutOfMemory {
                requested: usize::MAX,
                available: 0,
            })?;
        let shape = [state_rows, cfg.heads, cfg.dk, cfg.dv];
        let states = DeviceTensor::zeros(memory, device, DeviceDtype::F32, &shape)?;
        // Slot rows and scratch come from the retention's own pool: `memory` holds state only.
        let rt = Retention::new(device, cfg.params.clone())?;
        let rows = DeviceTensor::zeros(rt.memory(), device, DeviceDtype::U32, &[capacity])?;
        Ok(Self {
            rt,
            cfg: cfg.clone(),
            layers,
            slots: SlotTable::new(capacity),
            states,
            rows,
            staged: Vec::with_capacity(capacity),
            stream: Stream::default_for(device)?,
        })
    }

    /// The stream the pool's host-tensor methods and copies use (the device's default); its
    /// [`Stream::transfers`] count the pool's host↔device bytes.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// The device holding the states.
    pub fn device(&self) -> &Device {
        self.rt.device()
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

    /// Validates `slots` (live, distinct, of this pool) and uploads their rows for the next
    /// [`StatePool::step_into`] calls: 4·N bytes on `stream` (the pool's stream when `None`).
    ///
    /// # Errors
    /// Stale/foreign/duplicate slots; more slots than capacity; a copy during capture.
    pub fn stage(&mut self, slots: &[Slot], stream: Option<&Stream>) -> Result<()> {
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
        // Row of (slot, layer) = slot · layers + layer; the layer offsets the state pointer.
        self.staged.clear();
        self.staged
            .extend(indices.iter().map(|&i| (i * self.layers) as u32));
        let stream = stream.unwrap_or(&self.stream).clone();
        self.rows
            .write_bytes(0, bytemuck::cast_slice(&self.staged), &stream)
    }

    /// One decode step of `layer` for the staged slots ([`StatePool::stage`]): device q, k
    /// `[N, H, K]`, v `[N, H, V]` advance the slots' states in place and write device o
    /// `[N, H, V]`, enqueued on `stream` (the pool's when `None`) with no host traffic.
    /// On CUDA, synchronise a caller stream before reading the states through the pool's own
    /// stream ([`StatePool::snapshot`]): no hidden synchronisation orders the two.
    ///
    /// # Errors
    /// A bad layer; tensors of another device, dtype or shape; nothing staged.
    pub fn step_into(
        &mut self,
        layer: usize,
        (q, k, v): (&DeviceTensor, &DeviceTensor, &DeviceTensor),
        o: &mut DeviceTensor,
        stream: Option<&Stream>,
    ) -> Result<()> {
        self.check_layer(layer)?;
        let (n, c) = (self.staged.len(), &self.cfg);
        if n == 0 {
            return Err(RetentionError::Slot("no slots staged for this step".into()));
        }
        let dtype = q
            .dtype()
            .float()
            .ok_or_else(|| RetentionError::DtypeMismatch {
                tensor: "q".into(),
                expected: "f32, f16 or bf16".into(),
                got: q.dtype().to_string(),
            })?;
        let d = self.rt.device().clone();
        q.expect("q", &d, dtype.into(), &[n, c.heads, c.dk])?;
        k.expect("k", &d, dtype.into(), &[n, c.heads, c.dk])?;
        v.expect("v", &d, dtype.into(), &[n, c.heads, c.dv])?;
        o.expect("o", &d, dtype.into(), &[n, c.heads, c.dv])?;
        let stream = stream.unwrap_or(&self.stream).clone();
        let Some((exec, log2)) = self.rt.gpu() else {
            return self.step_cpu(layer, dtype, (q, k, v), o);
        };
        let state = Region::of_mut(&mut self.states);
        let skip = layer * self.layer_len() * 4;
        let cx = crate::device_launch::Ctx {
            exec,
            stream: &stream,
            gammas: &c.params.gammas,
            log2_gamma: &log2,
            scale: retention_core::validate_scale(c.params.scale, c.dk)? as f32,
            dtype,
        };
        let args = crate::device_launch::DecodeArgs {
            q: Region::of(q),
            k: Region::of(k),
            v: Region::of(v),
            state: state.sub(skip, state.bytes - skip)?,
            slots: Region::of(&self.rows).sub(0, 4 * n)?,
            o: Region::of_mut(o),
        };
        crate::device_launch::decode(&cx, c.heads, (c.dk, c.dv), n, args)
    }

    /// The CPU step, in place on the pool's host memory.
    fn step_cpu(
        &mut self,
        layer: usize,
        dtype: retention_core::Dtype,
        (q, k, v): (&DeviceTensor, &DeviceTensor, &DeviceTensor),
        o: &mut DeviceTensor,
    ) -> Result<()> {
        use half::{bf16, f16};
        use retention_core::Dtype;
        fn run<T: CpuElement>(
            pool: &mut StatePool,
            rows: &[usize],
            (q, k, v): (&DeviceTensor, &DeviceTensor, &DeviceTensor),
            o: &mut DeviceTensor,
        ) -> Result<()> {
            use crate::host_view::{check_disjoint, view, view_mut};
            check_disjoint(&[("o", o)], &[("q", q), ("k", k), ("v", v)])?;
            let (q, k, v) = (view::<T>(q, "q")?, view::<T>(k, "k")?, view::<T>(v, "v")?);
            let states = host_states(&pool.rt, &mut pool.states)?;
            let o = view_mut::<T>(o, "o")?;
            cpu::decode_step_into(q, k, v, states, rows, &pool.cfg.params, o)
        }
        let rows: Vec<usize> = self.staged.iter().map(|&r| r as usize + layer).collect();
        match dtype {
            Dtype::F32 => run::<f32>(self, &rows, (q, k, v), o),
            Dtype::F16 => run::<f16>(self, &rows, (q, k, v), o),
            Dtype::Bf16 => run::<bf16>(self, &rows, (q, k, v), o),
        }
    }

    /// The pool's state as host f32s (CPU pools only).
    fn host_states(&mut self) -> Result<&mut [f32]> {
        host_states(&self.rt, &mut self.states)
    }

    /// One decode step of `layer` for a batch whose rows belong to arbitrary slots
    /// (continuous batching) on host tensors: q, k `[N, H, K]`, v `[N, H, V]`; returns o
    /// `[N, H, V]`. On a GPU-like device: stage, upload, [`StatePool::step_into`], download.
    ///
    /// # Errors
    /// Stale/foreign/duplicate slots, a bad layer, shape mismatches, a head geometry no
    /// decode kernel serves.
    pub fn step<T: CpuElement>(
        &mut self,
        layer: usize,
        slots: &[Slot],
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> Result<HostTensor<T>> {
        self.check_layer(layer)?;
        let c = &self.cfg;
        let n = slots.len();
        q.expect_shape("q", &["N", "H", "K"], &[n, c.heads, c.dk])?;
        k.expect_shape("k", &["N", "H", "K"], &[n, c.heads, c.dk])?;
        v.expect_shape("v", &["N", "H", "V"], &[n, c.heads, c.dv])?;
        self.stage(slots, None)?;
        if self.rt.device() == &Device::Cpu {
            let rows: Vec<usize> = self.staged.iter().map(|&r| r as usize + layer).collect();
            let params = self.cfg.params.clone();
            return cpu::decode_step_in(q, k, v, self.host_states()?, &rows, &params);
        }
        let (stream, memory) = (self.stream.clone(), self.rt.memory().clone());
        let up = |t: &HostTensor<T>| DeviceTensor::upload(&memory, t, &stream);
        let (dq, dk, dv) = (up(q)?, up(k)?, up(v)?);
        let shape = [n, self.cfg.heads, self.cfg.dv];
        let mut o =
            DeviceTensor::zeros(&memory, self.rt.device(), DeviceDtype::of::<T>()?, &shape)?;
        self.step_into(layer, (&dq, &dk, &dv), &mut o, None)?;
        o.download(&stream)
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
        one_sequence(q.shape())?;
        let c = &self.cfg;
        let r = self.range(i, layer);
        if self.rt.device() == &Device::Cpu {
            let h0 = HostTensor::new(vec![1, c.heads, c.dk, c.dv], self.read(r.clone())?)?;
            let (o, ht) = cpu::chunkwise(q, k, v, &c.params, chunk, Some(&h0))?;
            self.write(r, ht.data())?;
            return Ok(o);
        }
        self.prefill_device((layer, slot), (q, k, v), chunk)
    }

    /// [`StatePool::prefill`] on device tensors of a GPU-like pool: q, k `[1, T, H, K]`, v and
    /// o `[1, T, H, V]` on the pool's device, enqueued on `stream` (the pool's when `None`),
    /// with no host traffic: H0 is copied from the slot into a scratch state (the kernel
    /// reads H0 while it writes H_T) and H_T copied back, on the device. On CUDA it waits for
    /// `stream` before its two scratch states go back to the pool.
    ///
    /// # Errors
    /// As [`StatePool::prefill`]; tensors of another device, dtype or shape;
    /// [`RetentionError::Unsupported`] on the CPU (whose [`StatePool::prefill`] copies nothing
    /// it need not).
    pub fn prefill_into(
        &mut self,
        (layer, slot): (usize, Slot),
        qkv: (&DeviceTensor, &DeviceTensor, &DeviceTensor),
        o: &mut DeviceTensor,
        chunk: usize,
        stream: Option<&Stream>,
    ) -> Result<()> {
        self.check_layer(layer)?;
        let i = self.slots.check(slot)?;
        one_sequence(qkv.0.shape())?;
        let Some((exec, _)) = self.rt.gpu() else {
            return Err(RetentionError::Unsupported {
                what: "StatePool::prefill_into".into(),
                value: self.rt.device().name(),
                reason: "a CPU pool prefills through StatePool::prefill".into(),
            });
        };
        let exec = exec.clone();
        let stream = stream.unwrap_or(&self.stream).clone();
        let (memory, device) = (self.rt.memory().clone(), self.rt.device().clone());
        let c = &self.cfg;
        let state_shape = [1, c.heads, c.dk, c.dv];
        let mut h0 = DeviceTensor::zeros(&memory, &device, DeviceDtype::F32, &state_shape)?;
        let mut ht = DeviceTensor::zeros(&memory, &device, DeviceDtype::F32, &state_shape)?;
        let r = self.range(i, layer);
        let slot = Region::of_mut(&mut self.states).sub(r.start * 4, r.len() * 4)?;
        exec.copy(&slot, &Region::of_mut(&mut h0), &stream)?;
        self.rt
            .chunkwise_into(qkv, Some(&h0), (o, &mut ht), chunk, Some(&stream))?;
        exec.copy(&Region::of(&ht), &slot, &stream)?;
        if matches!(device, Device::Cuda(_)) {
            stream.synchronize()?;
        }
        Ok(())
    }

    /// Prefill of host tensors on a GPU-like device: upload, [`StatePool::prefill_into`] on
    /// the pool's stream, download o.
    fn prefill_device<T: CpuElement>(
        &mut self,
        at: (usize, Slot),
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        chunk: usize,
    ) -> Result<HostTensor<T>> {
        let (stream, memory) = (self.stream.clone(), self.rt.memory().clone());
        let up = |t: &HostTensor<T>| DeviceTensor::upload(&memory, t, &stream);
        let (dq, dk, dv) = (up(q)?, up(k)?, up(v)?);
        let t = q.shape().get(1).copied().unwrap_or(0);
        let dt = DeviceDtype::of::<T>()?;
        let o_shape = [1, t, self.cfg.heads, self.cfg.dv];
        let mut o = DeviceTensor::zeros(&memory, self.rt.device(), dt, &o_shape)?;
        self.prefill_into(at, (&dq, &dk, &dv), &mut o, chunk, Some(&stream))?;
        o.download(&stream)
    }

    /// Sets `range` (f32 elements) of the state to zero where it lives (no host traffic).
    fn zero(&mut self, range: Range<usize>) -> Result<()> {
        let Some((exec, _)) = self.rt.gpu() else {
            self.host_states()?[range].fill(0.0);
            return Ok(());
        };
        let region = Region::of_mut(&mut self.states).sub(range.start * 4, range.len() * 4)?;
        exec.zero(&region, &self.stream)
    }

    /// A host copy of `range` (f32 elements) of the state.
    fn read(&self, range: Range<usize>) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; range.len()];
        self.states.read_bytes(
            range.start * 4,
            bytemuck::cast_slice_mut(&mut out),
            &self.stream,
        )?;
        Ok(out)
    }

    /// Overwrites `range` (f32 elements) of the state with `data`.
    fn write(&mut self, range: Range<usize>, data: &[f32]) -> Result<()> {
        self.states
            .write_bytes(range.start * 4, bytemuck::cast_slice(data), &self.stream)
    }
}

/// The pool's states as host f32s: `states` of a pool on `rt`'s device, which must be the CPU.
fn host_states<'a>(rt: &Retention, states: &'a mut DeviceTensor) -> Result<&'a mut [f32]> {
    if rt.device() != &Device::Cpu {
        return Err(RetentionError::NoDevice(
            "the state is in device memory".into(),
        ));
    }
    // SAFETY: a CPU tensor is host memory of `len()` f32s (4-byte aligned pool block), alive
    // as long as `states`, and `&mut states` makes this the only access.
    Ok(unsafe { std::slice::from_raw_parts_mut(states.address() as *mut f32, states.len()) })
}

/// `Ok` when q's shape `[B, T, H, K]` holds one sequence (B = 1).
fn one_sequence(q_shape: &[usize]) -> Result<()> {
    if q_shape.first() == Some(&1) {
        return Ok(());
    }
    Err(RetentionError::ShapeMismatch {
        tensor: "q".into(),
        expected: "[B=1, T, H, K] (one sequence)".into(),
        got: format!("{q_shape:?}"),
    })
}
