//! Element types: the three input dtypes and the conversions the oracle needs.

use half::{bf16, f16};
use std::fmt;
use std::str::FromStr;

use crate::RetentionError;
use crate::round::{f64_to_bf16_bits, f64_to_f16_bits};

/// Element type of q, k, v and o. State and accumulators are always f32 (ARCHITECTURE §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// Every dtype, in a fixed order.
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

    /// Bytes per element.
    pub const fn size_bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// Lower-case name (`f32`, `f16`, `bf16`).
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    /// Round an f64 to this dtype (round to nearest even) and back.
    pub fn round(self, x: f64) -> f64 {
        match self {
            Dtype::F32 => f64::from(x as f32),
            Dtype::F16 => f16::from_bits(f64_to_f16_bits(x)).to_f64(),
            Dtype::Bf16 => bf16::from_bits(f64_to_bf16_bits(x)).to_f64(),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dtype {
    type Err = RetentionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Dtype::F32),
            "f16" | "float16" | "half" => Ok(Dtype::F16),
            "bf16" | "bfloat16" => Ok(Dtype::Bf16),
            other => Err(RetentionError::Unsupported {
                what: "dtype".into(),
                value: other.into(),
                reason: "expected f32, f16 or bf16".into(),
            }),
        }
    }
}

/// A scalar type a host tensor can hold, convertible to and from f64 for the oracle.
pub trait Element:
    Copy + Send + Sync + bytemuck::Pod + Default + PartialEq + fmt::Debug + 'static
{
    /// The dtype tag, or `None` for f64 (the oracle's own type, never an input dtype).
    const DTYPE: Option<Dtype>;
    /// Widen to f64 exactly.
    fn to_f64(self) -> f64;
    /// Narrow from f64 with round-to-nearest-even, rounding exactly once.
    fn from_f64(x: f64) -> Self;
}

impl Element for f64 {
    const DTYPE: Option<Dtype> = None;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

impl Element for f32 {
    const DTYPE: Option<Dtype> = Some(Dtype::F32);
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Element for f16 {
    const DTYPE: Option<Dtype> = Some(Dtype::F16);
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(x: f64) -> Self {
        f16::from_bits(f64_to_f16_bits(x))
    }
}

impl Element for bf16 {
    const DTYPE: Option<Dtype> = Some(Dtype::Bf16);
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_bits(f64_to_bf16_bits(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_round() {
        assert_eq!("BF16".parse::<Dtype>().unwrap(), Dtype::Bf16);
        assert!("int8".parse::<Dtype>().is_err());
        // 1 + 2^-9 is not representable in bf16 (8 bits of mantissa): rounds to 1.
        assert_eq!(Dtype::Bf16.round(1.0 + 2f64.powi(-9)), 1.0);
        assert_eq!(Dtype::F16.round(1.0 + 2f64.powi(-10)), 1.0 + 2f64.powi(-10));
        assert_eq!(Dtype::F32.size_bytes() + Dtype::Bf16.size_bytes(), 6);
        // Just above a bf16 tie: the deciding bit is in the f64's low 32 bits.
        let x = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(Dtype::Bf16.round(x), 1.0 + 2f64.powi(-7));
        assert_eq!(<bf16 as Element>::from_f64(x).to_f64(), 1.0 + 2f64.powi(-7));
    }
}
