//! Per-head decays γ_h ∈ (0, 1).

use crate::{Result, RetentionError};

/// The decay of every head of a problem, validated finite and strictly inside (0, 1).
///
/// `retnet` follows the paper: γ_h = 1 − 2^(−5−h) over the **global** head index, so a shard
/// holding heads `offset..offset+H` of a tensor-parallel model gets that shard's decays
/// (PITFALLS #9). Values are kept in f64; kernels take `log2 γ` (see [`Gammas::log2`]), never γ
/// in a 16-bit type (PITFALLS #5).
#[derive(Debug, Clone, PartialEq)]
pub struct Gammas {
    values: Vec<f64>,
    head_offset: usize,
    retnet: bool,
}

impl Gammas {
    /// The RetNet decays of heads `0..heads`.
    ///
    /// # Errors
    /// [`RetentionError::ZeroDim`] for zero heads; [`RetentionError::InvalidGamma`] when a
    /// head index is so large that 1 − 2^(−5−h) rounds to 1 in f64.
    pub fn retnet(heads: usize) -> Result<Self> {
        Self::retnet_sharded(heads, 0)
    }

    /// The RetNet decays of global heads `head_offset..head_offset + heads`.
    ///
    /// # Errors
    /// As [`Gammas::retnet`].
    pub fn retnet_sharded(heads: usize, head_offset: usize) -> Result<Self> {
        if heads == 0 {
            return Err(RetentionError::ZeroDim { axis: "H" });
        }
        let values = (head_offset..head_offset + heads)
            .map(|h| 1.0 - (-5.0 - h as f64).exp2())
            .collect();
        let g = Self::from_list(values).map_err(|e| match e {
            RetentionError::InvalidGamma { head, value } => RetentionError::InvalidGamma {
                head: head + head_offset,
                value,
            },
            other => other,
        })?;
        Ok(Self {
            head_offset,
            retnet: true,
            ..g
        })
    }

    /// Arbitrary per-head decays.
    ///
    /// # Errors
    /// [`RetentionError::ZeroDim`] for an empty list; [`RetentionError::InvalidGamma`] for a
    /// value that is not finite or not strictly inside (0, 1).
    pub fn from_list(values: Vec<f64>) -> Result<Self> {
        if values.is_empty() {
            return Err(RetentionError::ZeroDim { axis: "H" });
        }
        for (head, &value) in values.iter().enumerate() {
            if !(value.is_finite() && value > 0.0 && value < 1.0) {
                return Err(RetentionError::InvalidGamma { head, value });
            }
        }
        Ok(Self {
            values,
            head_offset: 0,
            retnet: false,
        })
    }

    /// Number of heads.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: a `Gammas` holds at least one head.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// γ of local head `h`.
    pub fn get(&self, h: usize) -> f64 {
        self.values[h]
    }

    /// All decays, local head order.
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// Global index of local head 0 (non-zero only for sharded RetNet decays).
    pub fn head_offset(&self) -> usize {
        self.head_offset
    }

    /// Whether these are the RetNet schedule (possibly sharded) rather than an explicit list.
    pub fn is_retnet(&self) -> bool {
        self.retnet
    }

    /// log2 γ_h in f64, accurate even when γ is within 2^-40 of 1 (computed from 1 − γ, which
    /// is exact in f64 for γ ≥ 1/2). This is what kernels bake into f32 immediates.
    pub fn log2(&self, h: usize) -> f64 {
        let g = self.values[h];
        if g > 0.5 {
            (-(1.0 - g)).ln_1p() / std::f64::consts::LN_2
        } else {
            g.log2()
        }
    }

    /// Check that these decays serve a problem with `heads` heads.
    ///
    /// # Errors
    /// [`RetentionError::GammaCount`] when the counts differ.
    pub fn check_heads(&self, heads: usize) -> Result<()> {
        if self.values.len() == heads {
            Ok(())
        } else {
            Err(RetentionError::GammaCount {
                heads,
                got: self.values.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retnet_schedule_uses_global_head_index() {
        let full = Gammas::retnet(16).unwrap();
        let shard = Gammas::retnet_sharded(4, 8).unwrap();
        assert_eq!(shard.as_slice(), &full.as_slice()[8..12]);
        assert_eq!(full.get(0), 1.0 - 1.0 / 32.0);
        assert_eq!(full.get(15), 1.0 - 2f64.powi(-20));
        assert_eq!(shard.head_offset(), 8);
        assert!(shard.is_retnet());
    }

    #[test]
    fn log2_is_accurate_near_one() {
        let g = Gammas::retnet(32).unwrap();
        // log2(1 - x) = -x/ln2 - x^2/(2 ln2) - ...; for x = 2^-36 the first term is exact enough.
        let x = 2f64.powi(-36);
        let expect = -x / std::f64::consts::LN_2 * (1.0 + x / 2.0);
        assert!((g.log2(31) - expect).abs() <= expect.abs() * 1e-15);
        // The same computed naively in f32 would be exactly 0: gamma rounds to 1 (PITFALLS #5).
        assert_eq!((g.get(31) as f32).log2(), 0.0);
        let small = Gammas::from_list(vec![0.25]).unwrap();
        assert_eq!(small.log2(0), -2.0);
    }

    #[test]
    fn invalid_gammas_are_rejected() {
        for bad in [0.0, 1.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let err = Gammas::from_list(vec![0.9, bad]).unwrap_err();
            assert!(
                matches!(err, RetentionError::InvalidGamma { head: 1, .. }),
                "{bad}"
            );
        }
        assert!(matches!(
            Gammas::from_list(vec![]),
            Err(RetentionError::ZeroDim { axis: "H" })
        ));
        assert!(matches!(
            Gammas::retnet(0),
            Err(RetentionError::ZeroDim { .. })
        ));
        // Head 48 gives 1 - 2^-53 (still < 1); head 49 rounds to exactly 1.
        assert!(Gammas::retnet_sharded(1, 48).is_ok());
        assert!(matches!(
            Gammas::retnet_sharded(1, 49),
            Err(RetentionError::InvalidGamma { head: 49, .. })
        ));
        assert!(matches!(
            Gammas::retnet(4).unwrap().check_heads(5),
            Err(RetentionError::GammaCount { heads: 5, got: 4 })
        ));
    }
}
