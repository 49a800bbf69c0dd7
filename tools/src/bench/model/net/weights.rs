//! One layer's parameters, seeded and scaled so activations stay of order one (uniform in
//! ±1/√fan-in; norm gains 1 ± 0.1), and the FFN sub-layer both architectures share.

use super::NetElement;
use super::config::NetConfig;
use super::error::ModelError;
use super::fill;
use super::layers::{gelu, rms_norm};
use super::ledger::{Kind, Ledger, Tracked};
use super::matmul::{Write, linear};

/// The parameters of one layer (row-major, `[in, out]`).
#[derive(Debug)]
pub struct LayerWeights<T: NetElement> {
    /// Gain of the norm before the mixer `[d]`.
    pub norm_mix: Tracked<T>,
    /// Fused input projection `[d, projection_width]`: q, k, v (and g).
    pub w_in: Tracked<T>,
    /// Output projection `[value_width, d]`.
    pub w_out: Tracked<T>,
    /// Gain of the norm before the FFN `[d]`.
    pub norm_ffn: Tracked<T>,
    /// FFN up `[d, ffn]`.
    pub w_up: Tracked<T>,
    /// FFN down `[ffn, d]`.
    pub w_down: Tracked<T>,
}

impl<T: NetElement> LayerWeights<T> {
    /// Layer `layer` of `cfg`, seeded from `seed`.
    ///
    /// # Errors
    /// [`ModelError::OutOfMemory`] when the weights do not fit.
    pub fn random(
        ledger: &Ledger,
        cfg: &NetConfig,
        seed: u64,
        layer: usize,
    ) -> Result<Self, ModelError> {
        let d = cfg.d_model;
        let base = 8 * layer as u64;
        let matrix = |i: u64, rows: usize, cols: usize, name: &str| {
            let mut t = ledger.tensor::<T>(Kind::Weights, name, &[rows, cols])?;
            fill::uniform(
                t.data_mut(),
                fill::derive(seed, base + i),
                (rows as f64).recip().sqrt(),
            );
            Ok::<_, ModelError>(t)
        };
        let gain = |i: u64, name: &str| {
            let mut t = ledger.tensor::<T>(Kind::Weights, name, &[d])?;
            fill::uniform(t.data_mut(), fill::derive(seed, base + i), 0.1);
            for g in t.data_mut() {
                *g = T::from_f64(1.0 + g.to_f64());
            }
            Ok::<_, ModelError>(t)
        };
        Ok(Self {
            norm_mix: gain(0, "norm gain")?,
            w_in: matrix(1, d, cfg.projection_width(), "input projection")?,
            w_out: matrix(2, cfg.value_width(), d, "output projection")?,
            norm_ffn: gain(3, "norm gain")?,
            w_up: matrix(4, d, cfg.ffn, "FFN up")?,
            w_down: matrix(5, cfg.ffn, d, "FFN down")?,
        })
    }

    /// The mixer's input: `RMSNorm(x) · W_in`, `[rows, projection_width]` (q, k, v and, for
    /// RetNet, g side by side), for `rows` rows of x `[rows, d]`.
    ///
    /// # Errors
    /// Out of memory for the activations.
    pub fn mix_input(
        &self,
        ledger: &Ledger,
        cfg: &NetConfig,
        x: &[T],
        rows: usize,
    ) -> Result<Tracked<T>, ModelError> {
        let (d, p) = (cfg.d_model, cfg.projection_width());
        let mut xn = ledger.tensor::<T>(Kind::Activations, "norm", &[rows, d])?;
        rms_norm(x, self.norm_mix.data(), xn.data_mut());
        let mut proj = ledger.tensor::<T>(Kind::Activations, "projection", &[rows, p])?;
        linear(
            xn.data(),
            self.w_in.data(),
            proj.data_mut(),
            (rows, d, p),
            Write::Overwrite,
        )?;
        Ok(proj)
    }

    /// `x += W_down · gelu(RMSNorm(x) · W_up)` for `rows` rows of x `[rows, d]`.
    ///
    /// # Errors
    /// Out of memory for the activations.
    pub fn ffn(
        &self,
        ledger: &Ledger,
        cfg: &NetConfig,
        x: &mut [T],
        rows: usize,
    ) -> Result<(), ModelError> {
        let d = cfg.d_model;
        let mut xn = ledger.tensor::<T>(Kind::Activations, "FFN norm", &[rows, d])?;
        rms_norm(x, self.norm_ffn.data(), xn.data_mut());
        let mut h = ledger.tensor::<T>(Kind::Activations, "FFN hidden", &[rows, cfg.ffn])?;
        linear(
            xn.data(),
            self.w_up.data(),
            h.data_mut(),
            (rows, d, cfg.ffn),
            Write::Overwrite,
        )?;
        gelu(h.data_mut());
        linear(
            h.data(),
            self.w_down.data(),
            x,
            (rows, cfg.ffn, d),
            Write::Accumulate,
        )
    }
}

/// Every layer of `cfg`, seeded from `seed`.
///
/// # Errors
/// [`ModelError::OutOfMemory`] when the weights do not fit.
pub fn stack<T: NetElement>(
    ledger: &Ledger,
    cfg: &NetConfig,
    seed: u64,
) -> Result<Vec<LayerWeights<T>>, ModelError> {
    (0..cfg.layers)
        .map(|l| LayerWeights::random(ledger, cfg, seed, l))
        .collect()
}
