//! `StatePool` for serving (ARCHITECTURE §6): per-sequence recurrent state in fixed slots,
//! decode steps for a batch of arbitrary slots, chunkwise prefill from a slot, snapshot and
//! restore — the runtime's [`retention_runtime::StatePool`] on the CPU or a CUDA device, its
//! slots generation-checked handles (a freed or foreign slot is a `ValueError`).
//!
//! On CUDA (and under the emulator test route) the decode step runs the device API on the
//! tensors' memory and torch's current stream (`stage` + `step_into`: no copy of q, k, v, o,
//! the states never leave the device), and so does prefill (`prefill_into`, which waits for
//! the stream before its scratch states go back to the pool); snapshot and restore are host
//! copies by nature (the snapshot waits for torch's stream first).

use pyo3::prelude::*;
use retention_core::HostTensor;
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, DeviceTensor, HostState, MemoryPool, Slot, StateConfig};

use crate::error::{IntoPy, PyResult};
use crate::problem::Decays;
use crate::raw::{Raw, cpu_device, torch_stream};

/// A handle to one sequence's state in a [`StatePool`].
#[pyclass(
    name = "Slot",
    module = "retention._native",
    frozen,
    skip_from_py_object
)]
#[derive(Debug, Clone, Copy)]
pub struct PySlot(Slot);

#[pymethods]
impl PySlot {
    /// Position of the slot in its pool.
    #[getter]
    fn index(&self) -> usize {
        self.0.index()
    }

    fn __repr__(&self) -> String {
        format!("Slot(index={})", self.0.index())
    }
}

/// Fixed-capacity store of recurrent states `[capacity, layers, H, K, V]` f32 on the CPU or
/// a CUDA device.
#[pyclass(name = "StatePool", module = "retention._native")]
#[derive(Debug)]
pub struct PyStatePool {
    pool: retention_runtime::StatePool,
    shape: [usize; 4],
}

#[pymethods]
impl PyStatePool {
    /// A pool of `capacity` sequences × `layers` layers of H × K × V state, on CUDA device
    /// `cuda` or (`None`) the CPU.
    #[new]
    #[pyo3(signature = (heads, dk, dv, layers, capacity, gammas=None, head_offset=0, scale=None, cuda=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        heads: usize,
        dk: usize,
        dv: usize,
        layers: usize,
        capacity: usize,
        gammas: Option<Vec<f64>>,
        head_offset: usize,
        scale: Option<f64>,
        cuda: Option<usize>,
    ) -> PyResult<Self> {
        let device = match cuda {
            Some(ordinal) => Device::cuda(ordinal).py()?,
            None => cpu_device(),
        };
        let decays = Decays {
            gammas,
            head_offset,
            scale,
        };
        let params: RetentionParams = decays.retention(&device, heads)?.params().clone();
        let cfg = StateConfig {
            heads,
            dk,
            dv,
            params,
        };
        let memory = MemoryPool::on(&device, None).py()?;
        let pool =
            retention_runtime::StatePool::new(&device, &memory, &cfg, layers, capacity).py()?;
        Ok(Self {
            pool,
            shape: [layers, heads, dk, dv],
        })
    }

    /// Sequences holding a slot.
    #[getter]
    fn in_use(&self) -> usize {
        self.pool.in_use()
    }

    /// Bytes of state per sequence (all layers).
    #[getter]
    fn bytes_per_sequence(&self) -> usize {
        self.pool.bytes_per_sequence()
    }

    /// `[layers, H, K, V]`: the shape of one sequence's state.
    #[getter]
    fn state_shape(&self) -> Vec<usize> {
        self.shape.to_vec()
    }

    /// A fresh zeroed slot.
    fn alloc(&mut self) -> PyResult<PySlot> {
        self.pool.alloc().py().map(PySlot)
    }

    /// Gives a slot back; the handle is stale afterwards.
    fn free(&mut self, slot: &PySlot) -> PyResult<()> {
        self.pool.free(slot.0).py()
    }

    /// Zeroes a slot's state.
    fn reset(&mut self, slot: &PySlot) -> PyResult<()> {
        self.pool.reset(slot.0).py()
    }

    /// Copies a slot's state into the CPU tensor `out` (`[layers, H, K, V]` f32), after
    /// torch's current stream on CUDA (steps were enqueued there).
    fn snapshot(&self, py: Python<'_>, slot: &PySlot, out: Raw) -> PyResult<()> {
        if let Some(s) = torch_stream(py, self.pool.device())? {
            s.synchronize().py()?;
        }
        let HostState(t) = self.pool.snapshot(slot.0).py()?;
        out.write("state", &t)
    }

    /// Overwrites a slot's state from `state` (`[layers, H, K, V]` f32).
    fn restore(&mut self, slot: &PySlot, state: Raw) -> PyResult<()> {
        let t = state.host::<f32>("state")?;
        self.pool.restore(slot.0, &HostState(t)).py()
    }

    /// One decode step of `layer` for rows of `slots`: q, k `[N, H, K]`, v, o `[N, H, V]`,
    /// on the pool's device (there: in place, on torch's current stream).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        py: Python<'_>,
        layer: usize,
        slots: Vec<PyRef<'_, PySlot>>,
        q: Raw,
        k: Raw,
        v: Raw,
        o: Raw,
    ) -> PyResult<()> {
        let slots: Vec<Slot> = slots.iter().map(|s| s.0).collect();
        let device = self.pool.device().clone();
        if device != Device::Cpu {
            let stream = torch_stream(py, &device)?;
            let ([tq, tk, tv], mut to) = views(&device, [&q, &k, &v, &o])?;
            let s = stream.as_ref();
            self.pool.stage(&slots, s).py()?;
            return self.pool.step_into(layer, (&tq, &tk, &tv), &mut to, s).py();
        }
        let pool = &mut self.pool;
        crate::by_dtype!(
            q.float("q")?,
            step::<T>(pool, layer, &slots, [&q, &k, &v, &o])
        )
    }

    /// Chunkwise prefill of `layer` of one sequence from its slot's state, writing the final
    /// state back: q, k `[1, T, H, K]`, v, o `[1, T, H, V]`.
    #[pyo3(signature = (layer, slot, q, k, v, o, chunk_size=64))]
    #[allow(clippy::too_many_arguments)]
    fn prefill(
        &mut self,
        py: Python<'_>,
        layer: usize,
        slot: &PySlot,
        q: Raw,
        k: Raw,
        v: Raw,
        o: Raw,
        chunk_size: usize,
    ) -> PyResult<()> {
        let device = self.pool.device().clone();
        if device != Device::Cpu {
            let stream = torch_stream(py, &device)?;
            let ([tq, tk, tv], mut to) = views(&device, [&q, &k, &v, &o])?;
            let (qkv, s) = ((&tq, &tk, &tv), stream.as_ref());
            return self
                .pool
                .prefill_into((layer, slot.0), qkv, &mut to, chunk_size, s)
                .py();
        }
        let (pool, io) = (&mut self.pool, [&q, &k, &v, &o]);
        crate::by_dtype!(
            q.float("q")?,
            prefill::<T>(pool, layer, slot.0, io, chunk_size)
        )
    }
}

/// Borrowed views of q, k, v and o on the pool's `device` (no copy).
fn views(device: &Device, [q, k, v, o]: [&Raw; 4]) -> PyResult<([DeviceTensor; 3], DeviceTensor)> {
    Ok((
        [
            q.view("q", device)?,
            k.view("k", device)?,
            v.view("v", device)?,
        ],
        o.view("o", device)?,
    ))
}

fn inputs<T: CpuElement>(
    [q, k, v, _]: [&Raw; 4],
) -> PyResult<(HostTensor<T>, HostTensor<T>, HostTensor<T>)> {
    Ok((q.host("q")?, k.host("k")?, v.host("v")?))
}

fn step<T: CpuElement>(
    pool: &mut retention_runtime::StatePool,
    layer: usize,
    slots: &[Slot],
    io: [&Raw; 4],
) -> PyResult<()> {
    let (q, k, v) = inputs::<T>(io)?;
    let o = pool.step(layer, slots, &q, &k, &v).py()?;
    io[3].write("o", &o)
}

fn prefill<T: CpuElement>(
    pool: &mut retention_runtime::StatePool,
    layer: usize,
    slot: Slot,
    io: [&Raw; 4],
    chunk: usize,
) -> PyResult<()> {
    let (q, k, v) = inputs::<T>(io)?;
    let o = pool.prefill(layer, slot, &q, &k, &v, chunk).py()?;
    io[3].write("o", &o)
}
