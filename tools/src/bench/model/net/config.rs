//! Model geometries: the RetNet paper's 1.3B, 2.7B and 6.7B (as torchscale's `retnet_xl`,
//! `retnet_3b` and `retnet_7b` define them at the paper's release: value and FFN width 2d) and
//! the Transformer with the same width, depth and parameter count.

use serde::Serialize;

use super::error::ModelError;

/// Which architecture a configuration describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Gated multi-scale retention, recurrent state per sequence.
    Retnet,
    /// Multi-head softmax attention, KV cache per sequence.
    Transformer,
}

impl Arch {
    /// `retnet` or `transformer`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Retnet => "retnet",
            Arch::Transformer => "transformer",
        }
    }
}

/// The geometry of one decoder stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetConfig {
    /// `1.3b`, `2.7b`, `6.7b` or `custom`.
    pub name: String,
    /// The architecture.
    pub arch: Arch,
    /// Model width d.
    pub d_model: usize,
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Query/key head dimension.
    pub dk: usize,
    /// Value head dimension.
    pub dv: usize,
    /// FFN hidden width.
    pub ffn: usize,
}

/// Head dimension of the Transformer twin whenever the width allows it (GPT-3, LLaMA).
const TRANSFORMER_HEAD_DIM: usize = 128;

impl NetConfig {
    /// A paper RetNet: `1.3b` (d 2048, 24 layers, 8 heads), `2.7b` (2560, 32, 10) or `6.7b`
    /// (4096, 32, 16); K = d/heads = 256, V = 2K = 512, FFN 2d.
    ///
    /// # Errors
    /// [`ModelError::Config`] for another name.
    pub fn paper(name: &str) -> Result<Self, ModelError> {
        let (d_model, layers, heads) = match name {
            "1.3b" => (2048, 24, 8),
            "2.7b" => (2560, 32, 10),
            "6.7b" => (4096, 32, 16),
            other => {
                return Err(ModelError::Config(format!(
                    "no paper model `{other}` (1.3b, 2.7b or 6.7b)"
                )));
            }
        };
        let dk = d_model / heads;
        Ok(Self {
            name: name.into(),
            arch: Arch::Retnet,
            d_model,
            layers,
            heads,
            dk,
            dv: 2 * dk,
            ffn: 2 * d_model,
        })
    }

    /// A RetNet of the given head geometry: d = heads·K, value width heads·V, FFN 2d.
    ///
    /// # Errors
    /// [`ModelError::Config`] for a zero dimension.
    pub fn custom(heads: usize, dk: usize, dv: usize, layers: usize) -> Result<Self, ModelError> {
        if heads == 0 || dk == 0 || dv == 0 || layers == 0 {
            return Err(ModelError::Config(format!(
                "heads {heads}, K {dk}, V {dv}, layers {layers}: each must be at least 1"
            )));
        }
        Ok(Self {
            name: "custom".into(),
            arch: Arch::Retnet,
            d_model: heads * dk,
            layers,
            heads,
            dk,
            dv,
            ffn: 2 * heads * dk,
        })
    }

    /// The Transformer of the same width, depth and parameter count: heads of 128 when d
    /// allows (else this model's head count), q/k/v/o of d, and the FFN width that makes the
    /// parameter counts equal (4d for the paper's models).
    pub fn transformer_twin(&self) -> Self {
        let d = self.d_model;
        let heads = if d.is_multiple_of(TRANSFORMER_HEAD_DIM) {
            d / TRANSFORMER_HEAD_DIM
        } else {
            self.heads
        };
        let head_dim = d / heads;
        let attention = 4 * d * d;
        let ffn = (self.layer_params().saturating_sub(attention + 2 * d) / (2 * d)).max(1);
        Self {
            name: self.name.clone(),
            arch: Arch::Transformer,
            d_model: d,
            layers: self.layers,
            heads,
            dk: head_dim,
            dv: head_dim,
            ffn,
        }
    }

    /// Width of the attention/retention values (heads·V).
    pub fn value_width(&self) -> usize {
        self.heads * self.dv
    }

    /// Width of the queries and keys (heads·K).
    pub fn key_width(&self) -> usize {
        self.heads * self.dk
    }

    /// Outputs of the fused input projection: q, k, v (and g for RetNet).
    pub fn projection_width(&self) -> usize {
        match self.arch {
            Arch::Retnet => 2 * self.key_width() + 2 * self.value_width(),
            Arch::Transformer => 2 * self.key_width() + self.value_width(),
        }
    }

    /// Weights of one layer: input projection, output projection, FFN and two norm gains.
    pub fn layer_params(&self) -> usize {
        let d = self.d_model;
        d * self.projection_width() + self.value_width() * d + 2 * d * self.ffn + 2 * d
    }

    /// Weights of the whole stack.
    pub fn params(&self) -> usize {
        self.layers * self.layer_params()
    }
}
