//! RetNet: per layer RMSNorm, the fused q/k/v/g projection, retention through the runtime's
//! `StatePool` (decode: one recurrent step per sequence; prefill: the chunkwise form), the
//! gated epilogue RMSNorm_head(o) ⊙ swish(g), the output projection and the FFN, each added
//! to the residual stream. The state lives in the pool's `MemoryPool` (capped by what the
//! ledger has left); its high-water mark is charged to the ledger as the cache figure.

use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu::msr_epilogue;
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, MemoryPool, Slot, StateConfig, StatePool};

use super::NetElement;
use super::config::NetConfig;
use super::error::ModelError;
use super::layers::{HEAD_NORM_EPS, columns};
use super::ledger::{Charge, Kind, Ledger, Tracked};
use super::matmul::{Write, linear};
use super::weights::{LayerWeights, stack};

/// The sequences a RetNet is serving: their pool, slots and the ledger charge for the pool.
#[derive(Debug)]
struct Batch {
    pool: StatePool,
    slots: Vec<Slot>,
    _charge: Charge,
}

/// A RetNet decoder stack with seeded random weights.
#[derive(Debug)]
pub struct RetNet<T: NetElement> {
    cfg: NetConfig,
    ledger: Ledger,
    layers: Vec<LayerWeights<T>>,
    params: RetentionParams,
    batch: Option<Batch>,
}

/// q, k, v and g of one projection, shaped for the state pool and the epilogue.
struct Mixed<T: NetElement> {
    q: Tracked<T>,
    k: Tracked<T>,
    v: Tracked<T>,
    g: Tracked<T>,
}

impl<T: NetElement> RetNet<T> {
    /// Build the weights of `cfg` (a RetNet configuration) from `seed`, counted in `ledger`.
    ///
    /// # Errors
    /// Out of memory; γ or head counts the retention kernels refuse.
    pub fn new(cfg: &NetConfig, ledger: &Ledger, seed: u64) -> Result<Self, ModelError> {
        let params = RetentionParams::new(Gammas::retnet(cfg.heads)?, None);
        Ok(Self {
            cfg: cfg.clone(),
            ledger: ledger.clone(),
            layers: stack(ledger, cfg, seed)?,
            params,
            batch: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// The layers' weights.
    #[allow(
        dead_code,
        reason = "read by the f64 comparison in tools/tests/model_decode.rs"
    )]
    pub fn layers(&self) -> &[LayerWeights<T>] {
        &self.layers
    }

    /// Decays and scale of every layer.
    #[allow(
        dead_code,
        reason = "read by the f64 comparison in tools/tests/model_decode.rs"
    )]
    pub fn params(&self) -> &RetentionParams {
        &self.params
    }

    /// Serve `batch` new sequences (zero state), dropping any previous ones first. The pool's
    /// memory is capped by what the ledger has left.
    ///
    /// # Errors
    /// Out of memory (the state does not fit); pool errors.
    pub fn start(&mut self, batch: usize) -> Result<(), ModelError> {
        self.batch = None;
        let memory = MemoryPool::with_limit(Some(
            usize::try_from(self.ledger.available()).unwrap_or(usize::MAX),
        ));
        let cfg = StateConfig {
            heads: self.cfg.heads,
            dk: self.cfg.dk,
            dv: self.cfg.dv,
            params: self.params.clone(),
        };
        let mut pool = StatePool::new(&Device::Cpu, &memory, &cfg, self.cfg.layers, batch)?;
        let slots = (0..batch)
            .map(|_| pool.alloc())
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = memory.stats().high_water as u64;
        let charge = self.ledger.charge(Kind::Cache, "retention state", bytes)?;
        self.batch = Some(Batch {
            pool,
            slots,
            _charge: charge,
        });
        Ok(())
    }

    /// Release the sequences' state.
    pub fn stop(&mut self) {
        self.batch = None;
    }

    /// One decode step of every sequence: x `[batch, d]` in, the residual stream after the
    /// last layer out (in place).
    ///
    /// # Errors
    /// No batch started or x of the wrong length; out of memory; kernel errors.
    pub fn step(&mut self, x: &mut [T]) -> Result<(), ModelError> {
        let Some(batch) = self.batch.as_mut() else {
            return Err(ModelError::Config("step before start".into()));
        };
        let n = batch.slots.len();
        check_rows(x, n, self.cfg.d_model)?;
        let (h, dk, dv) = (self.cfg.heads, self.cfg.dk, self.cfg.dv);
        for (l, w) in self.layers.iter().enumerate() {
            let m = project(
                &self.ledger,
                &self.cfg,
                w,
                x,
                n,
                [&[n, h, dk], &[n, h, dk], &[n, h, dv], &[n, 1, h, dv]],
            )?;
            let o = batch
                .pool
                .step(l, &batch.slots, m.q.get(), m.k.get(), m.v.get())?;
            let o = HostTensor::new(vec![n, 1, h, dv], o.into_data())?;
            gate_and_project(&self.ledger, &self.cfg, w, &o, &m.g, x, n)?;
            drop(m);
            w.ffn(&self.ledger, &self.cfg, x, n)?;
        }
        Ok(())
    }

    /// Prefill one sequence (batch 1, started) with `tokens` tokens: x `[tokens, d]` in and
    /// out; retention in the chunkwise form with chunk `chunk`, state carried into the pool.
    ///
    /// # Errors
    /// Not started with batch 1; x of the wrong length; out of memory; kernel errors.
    pub fn prefill(&mut self, x: &mut [T], tokens: usize, chunk: usize) -> Result<(), ModelError> {
        let Some(batch) = self.batch.as_mut() else {
            return Err(ModelError::Config("prefill before start".into()));
        };
        let &[slot] = batch.slots.as_slice() else {
            return Err(ModelError::Config(format!(
                "prefill serves one sequence, the model holds {}",
                batch.slots.len()
            )));
        };
        check_rows(x, tokens, self.cfg.d_model)?;
        let (h, dk, dv) = (self.cfg.heads, self.cfg.dk, self.cfg.dv);
        for (l, w) in self.layers.iter().enumerate() {
            let t = tokens;
            let m = project(
                &self.ledger,
                &self.cfg,
                w,
                x,
                t,
                [
                    &[1, t, h, dk],
                    &[1, t, h, dk],
                    &[1, t, h, dv],
                    &[1, t, h, dv],
                ],
            )?;
            let o = batch
                .pool
                .prefill(l, slot, m.q.get(), m.k.get(), m.v.get(), chunk)?;
            gate_and_project(&self.ledger, &self.cfg, w, &o, &m.g, x, t)?;
            drop(m);
            w.ffn(&self.ledger, &self.cfg, x, t)?;
        }
        Ok(())
    }
}

/// `x += W_O · (RMSNorm_head(o) ⊙ swish(g))` for `rows` rows; o and g `[·, ·, H, V]`.
fn gate_and_project<T: NetElement>(
    ledger: &Ledger,
    cfg: &NetConfig,
    w: &LayerWeights<T>,
    o: &HostTensor<T>,
    g: &Tracked<T>,
    x: &mut [T],
    rows: usize,
) -> Result<(), ModelError> {
    let gated = msr_epilogue(o, g.get(), HEAD_NORM_EPS)?;
    // The kernels' outputs are held next to the step's other activations.
    let elem = std::mem::size_of::<T>() as u64;
    ledger.transient(
        Kind::Activations,
        (o.data().len() + gated.data().len()) as u64 * elem,
    );
    linear(
        gated.data(),
        w.w_out.data(),
        x,
        (rows, cfg.value_width(), cfg.d_model),
        Write::Accumulate,
    )
}

/// RMSNorm, the fused input projection, and q, k, v, g split out in the given shapes.
fn project<T: NetElement>(
    ledger: &Ledger,
    cfg: &NetConfig,
    w: &LayerWeights<T>,
    x: &[T],
    rows: usize,
    [qs, ks, vs, gs]: [&[usize]; 4],
) -> Result<Mixed<T>, ModelError> {
    let p = cfg.projection_width();
    let (kw, vw) = (cfg.key_width(), cfg.value_width());
    let proj = w.mix_input(ledger, cfg, x, rows)?;
    let part = |shape: &[usize], start: usize, width: usize, name: &str| {
        let mut t = ledger.tensor::<T>(Kind::Activations, name, shape)?;
        columns(proj.data(), p, start, width, t.data_mut());
        Ok::<_, ModelError>(t)
    };
    Ok(Mixed {
        q: part(qs, 0, kw, "q")?,
        k: part(ks, kw, kw, "k")?,
        v: part(vs, 2 * kw, vw, "v")?,
        g: part(gs, 2 * kw + vw, vw, "g")?,
    })
}

/// x must hold `rows` rows of width `d`.
pub(super) fn check_rows<T>(x: &[T], rows: usize, d: usize) -> Result<(), ModelError> {
    if x.len() == rows * d {
        Ok(())
    } else {
        Err(ModelError::Config(format!(
            "x has {} elements, expected [{rows}, {d}]",
            x.len()
        )))
    }
}
