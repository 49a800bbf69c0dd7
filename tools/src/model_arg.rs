//! `--model 1.3b|2.7b|6.7b` or an explicit `--heads H --dk K --dv V [--layers L]`: the
//! per-layer retention geometry `bench` and `autotune` work on.

use clap::{Args, ValueEnum};
use serde::Serialize;

/// The RetNet paper's model sizes (K = 256, V = 512 per head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaperModel {
    /// 8 heads × 24 layers.
    #[value(name = "1.3b")]
    M1_3b,
    /// 10 heads × 32 layers.
    #[value(name = "2.7b")]
    M2_7b,
    /// 16 heads × 32 layers.
    #[value(name = "6.7b")]
    M6_7b,
}

/// Model flags shared by `bench` and `autotune`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A paper model (K=256, V=512 per head): 1.3b = 8 heads × 24 layers, 2.7b = 10 × 32,
    /// 6.7b = 16 × 32. Default 1.3b unless --heads/--dk/--dv are given.
    #[arg(long, value_enum, conflicts_with_all = ["heads", "dk", "dv", "layers"])]
    pub model: Option<PaperModel>,
    /// Heads per layer (with --dk and --dv instead of --model).
    #[arg(long, value_name = "H", value_parser = positive, requires_all = ["dk", "dv"])]
    pub heads: Option<usize>,
    /// Key head dimension K.
    #[arg(long, value_name = "K", value_parser = positive, requires = "heads")]
    pub dk: Option<usize>,
    /// Value head dimension V.
    #[arg(long, value_name = "V", value_parser = positive, requires = "heads")]
    pub dv: Option<usize>,
    /// Layers (default 1 with --heads).
    #[arg(long, value_name = "L", value_parser = positive, requires = "heads")]
    pub layers: Option<usize>,
}

/// A model's retention geometry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelShape {
    /// `1.3b`, `2.7b`, `6.7b` or `custom`.
    pub name: String,
    /// Heads per layer H.
    pub heads: usize,
    /// Key head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
    /// Layers L.
    pub layers: usize,
}

impl ModelArgs {
    /// The geometry the flags name (1.3b when none are given).
    pub fn shape(&self) -> ModelShape {
        if let (Some(heads), Some(dk), Some(dv)) = (self.heads, self.dk, self.dv) {
            return ModelShape {
                name: "custom".into(),
                heads,
                dk,
                dv,
                layers: self.layers.unwrap_or(1),
            };
        }
        let (name, heads, layers) = match self.model.unwrap_or(PaperModel::M1_3b) {
            PaperModel::M1_3b => ("1.3b", 8, 24),
            PaperModel::M2_7b => ("2.7b", 10, 32),
            PaperModel::M6_7b => ("6.7b", 16, 32),
        };
        ModelShape {
            name: name.into(),
            heads,
            dk: 256,
            dv: 512,
            layers,
        }
    }
}

impl ModelShape {
    /// `1.3b (H=8 K=256 V=512 L=24)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (H={} K={} V={} L={})",
            self.name, self.heads, self.dk, self.dv, self.layers
        )
    }
}

/// A count of at least 1 (a zero head count or dimension is rejected by the parser).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// [`positive`] for flags outside this module.
pub fn positive_count(s: &str) -> Result<usize, String> {
    positive(s)
}
