//! The Transformer baseline: per layer RMSNorm, the fused q/k/v projection, the new token's
//! key and value written into the KV cache, softmax attention over the cache
//! (`retention_kernels::cpu::attention_decode`), the output projection and the FFN, each
//! added to the residual stream. The caches are `[batch, H, context, head_dim]` per layer,
//! counted in the ledger; the `context − 1` tokens before the new one hold seeded values.
//! The prefill runs the same layers over a whole prompt with causal attention
//! (`retention_kernels::cpu::attention_prefill`), writing every prompt token into the cache.

use retention_core::HostTensor;
use retention_kernels::cpu::{attention_decode, attention_prefill};

use super::NetElement;
use super::config::NetConfig;
use super::error::ModelError;
use super::fill;
use super::layers::columns;
use super::ledger::{Kind, Ledger, Tracked};
use super::matmul::{Write, linear};
use super::retnet::check_rows;
use super::weights::{LayerWeights, stack};

/// One layer's KV cache.
#[derive(Debug)]
pub struct LayerCache<T: NetElement> {
    /// Keys `[batch, H, context, head_dim]`.
    pub k: Tracked<T>,
    /// Values `[batch, H, context, head_dim]`.
    pub v: Tracked<T>,
}

/// A Transformer decoder stack with seeded random weights.
#[derive(Debug)]
pub struct Transformer<T: NetElement> {
    cfg: NetConfig,
    ledger: Ledger,
    layers: Vec<LayerWeights<T>>,
    caches: Vec<LayerCache<T>>,
    batch: usize,
    context: usize,
}

impl<T: NetElement> Transformer<T> {
    /// Build the weights of `cfg` (a Transformer configuration) from `seed`.
    ///
    /// # Errors
    /// Out of memory.
    pub fn new(cfg: &NetConfig, ledger: &Ledger, seed: u64) -> Result<Self, ModelError> {
        Ok(Self {
            cfg: cfg.clone(),
            ledger: ledger.clone(),
            layers: stack(ledger, cfg, seed)?,
            caches: Vec::new(),
            batch: 0,
            context: 0,
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

    /// Layer `layer`'s cache.
    #[allow(
        dead_code,
        reason = "read by the f64 comparison in tools/tests/model_decode.rs"
    )]
    pub fn cache(&self, layer: usize) -> Option<&LayerCache<T>> {
        self.caches.get(layer)
    }

    /// Serve `batch` sequences whose next step sees `context` tokens (the new one included),
    /// dropping any previous caches first; the earlier `context − 1` positions are filled
    /// from `seed`.
    ///
    /// # Errors
    /// Out of memory; a zero batch or context.
    pub fn start(&mut self, batch: usize, context: usize, seed: u64) -> Result<(), ModelError> {
        self.caches.clear();
        if batch == 0 || context == 0 {
            return Err(ModelError::Config(format!(
                "batch {batch}, context {context}: each must be at least 1"
            )));
        }
        let shape = [batch, self.cfg.heads, context, self.cfg.dk];
        // Every layer's cache is allocated before any is filled, so a batch that does not fit
        // fails before touching its memory (the batch-limit search probes such batches).
        for _ in 0..self.cfg.layers {
            let k = self.ledger.tensor::<T>(Kind::Cache, "key cache", &shape)?;
            let v = self
                .ledger
                .tensor::<T>(Kind::Cache, "value cache", &shape)?;
            self.caches.push(LayerCache { k, v });
        }
        for (l, c) in self.caches.iter_mut().enumerate() {
            fill::uniform(c.k.data_mut(), fill::derive(seed, 2 * l as u64), 1.0);
            fill::uniform(c.v.data_mut(), fill::derive(seed, 2 * l as u64 + 1), 1.0);
        }
        self.batch = batch;
        self.context = context;
        Ok(())
    }

    /// Release the KV caches.
    pub fn stop(&mut self) {
        self.caches.clear();
    }

    /// One decode step of every sequence at position `context − 1`: x `[batch, d]` in, the
    /// residual stream after the last layer out (in place).
    ///
    /// # Errors
    /// Not started; x of the wrong length; out of memory; kernel errors.
    pub fn step(&mut self, x: &mut [T]) -> Result<(), ModelError> {
        if self.caches.is_empty() {
            return Err(ModelError::Config("step before start".into()));
        }
        let (n, d, p) = (self.batch, self.cfg.d_model, self.cfg.projection_width());
        check_rows(x, n, d)?;
        let (h, hd, pos, ctx) = (self.cfg.heads, self.cfg.dk, self.context - 1, self.context);
        for (w, cache) in self.layers.iter().zip(&mut self.caches) {
            let proj = w.mix_input(&self.ledger, &self.cfg, x, n)?;
            let mut q = self
                .ledger
                .tensor::<T>(Kind::Activations, "q", &[n, h, hd])?;
            columns(proj.data(), p, 0, d, q.data_mut());
            for (b, row) in proj.data().chunks(p).enumerate() {
                for head in 0..h {
                    let at = ((b * h + head) * ctx + pos) * hd;
                    let kv = |part: usize| part * d + head * hd..part * d + (head + 1) * hd;
                    cache.k.data_mut()[at..at + hd].copy_from_slice(&row[kv(1)]);
                    cache.v.data_mut()[at..at + hd].copy_from_slice(&row[kv(2)]);
                }
            }
            drop(proj);
            let o = attention_decode(q.get(), cache.k.get(), cache.v.get(), None)?;
            self.ledger
                .transient(Kind::Activations, std::mem::size_of_val(o.data()) as u64);
            drop(q);
            linear(o.data(), w.w_out.data(), x, (n, d, d), Write::Accumulate)?;
            w.ffn(&self.ledger, &self.cfg, x, n)?;
        }
        Ok(())
    }

    /// Prefill one sequence (started with batch 1 and context `tokens`) with a `tokens`-token
    /// prompt: x `[tokens, d]` in, the residual stream after the last layer out (in place);
    /// every prompt token's key and value are written into the cache.
    ///
    /// # Errors
    /// Not started with batch 1 at context `tokens`; x of the wrong length; out of memory;
    /// kernel errors.
    pub fn prefill(&mut self, x: &mut [T], tokens: usize) -> Result<(), ModelError> {
        if self.caches.is_empty() || self.batch != 1 || self.context != tokens {
            return Err(ModelError::Config(format!(
                "prefill of {tokens} tokens needs start(1, {tokens}); started with batch {}, \
                 context {}",
                self.batch, self.context
            )));
        }
        let (d, p, h, hd) = (
            self.cfg.d_model,
            self.cfg.projection_width(),
            self.cfg.heads,
            self.cfg.dk,
        );
        check_rows(x, tokens, d)?;
        for (w, cache) in self.layers.iter().zip(&mut self.caches) {
            let proj = w.mix_input(&self.ledger, &self.cfg, x, tokens)?;
            let part = |i: usize, name: &str| {
                let mut t =
                    self.ledger
                        .tensor::<T>(Kind::Activations, name, &[1, tokens, h, hd])?;
                columns(proj.data(), p, i * d, d, t.data_mut());
                Ok::<_, ModelError>(t)
            };
            let (q, k, v) = (part(0, "q")?, part(1, "k")?, part(2, "v")?);
            drop(proj);
            to_cache(k.get(), cache.k.data_mut(), h, hd);
            to_cache(v.get(), cache.v.data_mut(), h, hd);
            let o = attention_prefill(q.get(), k.get(), v.get(), None)?;
            self.ledger
                .transient(Kind::Activations, std::mem::size_of_val(o.data()) as u64);
            drop((q, k, v));
            linear(
                o.data(),
                w.w_out.data(),
                x,
                (tokens, d, d),
                Write::Accumulate,
            )?;
            w.ffn(&self.ledger, &self.cfg, x, tokens)?;
        }
        Ok(())
    }
}

/// Prompt rows `[1, T, H, D]` into the head-major cache `[1, H, T, D]` of one sequence.
fn to_cache<T: NetElement>(rows: &HostTensor<T>, cache: &mut [T], h: usize, hd: usize) {
    let t = rows.shape()[1];
    for (pos, row) in rows.data().chunks_exact(h * hd).enumerate() {
        for (head, src) in row.chunks_exact(hd).enumerate() {
            let at = (head * t + pos) * hd;
            cache[at..at + hd].copy_from_slice(src);
        }
    }
}
