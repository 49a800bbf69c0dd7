//! Problem shapes (B, T, H, K, V), variable-length batches and the scale on q.

use crate::{Result, RetentionError};

/// The dimensions of one retention problem. Layouts are token-major (ARCHITECTURE §1):
/// q, k `[B, T, H, K]`; v, o `[B, T, H, V]`; states `[B, H, K, V]` (f32 on devices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetentionShape {
    /// Batch rows B (for a packed variable-length batch: 1).
    pub batch: usize,
    /// Tokens per row T (packed: ΣT).
    pub seq_len: usize,
    /// Heads H.
    pub heads: usize,
    /// Key/query head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
}

impl RetentionShape {
    /// A validated shape; every dimension must be at least 1.
    ///
    /// # Errors
    /// [`RetentionError::ZeroDim`] naming the zero axis.
    pub fn new(batch: usize, seq_len: usize, heads: usize, dk: usize, dv: usize) -> Result<Self> {
        for (axis, n) in [
            ("B", batch),
            ("T", seq_len),
            ("H", heads),
            ("K", dk),
            ("V", dv),
        ] {
            if n == 0 {
                return Err(RetentionError::ZeroDim { axis });
            }
        }
        Ok(Self {
            batch,
            seq_len,
            heads,
            dk,
            dv,
        })
    }

    /// Shape of q and k: `[B, T, H, K]`.
    pub fn qk_shape(&self) -> [usize; 4] {
        [self.batch, self.seq_len, self.heads, self.dk]
    }

    /// Shape of v and o: `[B, T, H, V]`.
    pub fn vo_shape(&self) -> [usize; 4] {
        [self.batch, self.seq_len, self.heads, self.dv]
    }

    /// Shape of a state tensor for `rows` sequences: `[rows, H, K, V]`.
    pub fn state_shape(&self, rows: usize) -> [usize; 4] {
        [rows, self.heads, self.dk, self.dv]
    }

    /// Elements in one head's state, K·V.
    pub fn state_len(&self) -> usize {
        self.dk * self.dv
    }
}

/// Describe a shape with named axes for error messages, e.g. `[B=2, T=5, H=4, K=8]`.
fn named(axes: &[&str], dims: &[usize]) -> String {
    if axes.len() == dims.len() {
        let parts: Vec<String> = axes
            .iter()
            .zip(dims)
            .map(|(a, d)| format!("{a}={d}"))
            .collect();
        format!("[{}]", parts.join(", "))
    } else {
        format!("{dims:?}")
    }
}

/// Check that tensor `name` has shape `want`, naming its axes in the error.
///
/// # Errors
/// [`RetentionError::ShapeMismatch`] with both shapes described axis by axis.
pub fn check_shape(name: &str, axes: &[&str], got: &[usize], want: &[usize]) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(RetentionError::ShapeMismatch {
            tensor: name.into(),
            expected: named(axes, want),
            got: named(axes, got),
        })
    }
}

/// The scale applied to q when none is given: K^(-1/2).
pub fn default_scale(dk: usize) -> f64 {
    1.0 / (dk as f64).sqrt()
}

/// Resolve an optional scale to a checked finite value (default K^(-1/2)).
///
/// # Errors
/// [`RetentionError::InvalidScale`] for NaN or infinity.
pub fn validate_scale(scale: Option<f64>, dk: usize) -> Result<f64> {
    let s = scale.unwrap_or_else(|| default_scale(dk));
    if s.is_finite() {
        Ok(s)
    } else {
        Err(RetentionError::InvalidScale(s))
    }
}

/// Validated sequence boundaries of a packed variable-length batch: `[0, t0, t0+t1, …, ΣT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CuSeqlens(Vec<usize>);

impl CuSeqlens {
    /// Check boundaries against the packed token count.
    ///
    /// # Errors
    /// [`RetentionError::InvalidCuSeqlens`] unless the list has at least two entries, starts
    /// at 0, never decreases and ends at `total_tokens`.
    pub fn new(bounds: Vec<usize>, total_tokens: usize) -> Result<Self> {
        if bounds.len() < 2 {
            return Err(RetentionError::InvalidCuSeqlens(format!(
                "need at least 2 entries (N+1 for N sequences), got {}",
                bounds.len()
            )));
        }
        if bounds[0] != 0 {
            return Err(RetentionError::InvalidCuSeqlens(format!(
                "must start at 0, starts at {}",
                bounds[0]
            )));
        }
        if let Some(i) = bounds.windows(2).position(|w| w[1] < w[0]) {
            return Err(RetentionError::InvalidCuSeqlens(format!(
                "not monotone: entry {} ({}) < entry {} ({})",
                i + 1,
                bounds[i + 1],
                i,
                bounds[i]
            )));
        }
        let last = *bounds.last().unwrap_or(&0);
        if last != total_tokens {
            return Err(RetentionError::InvalidCuSeqlens(format!(
                "ends at {last} but the packed batch has {total_tokens} tokens"
            )));
        }
        Ok(Self(bounds))
    }

    /// From signed integers as files store them (i64/i32); negatives are errors.
    ///
    /// # Errors
    /// As [`CuSeqlens::new`], plus a negative entry.
    pub fn from_i64(bounds: &[i64], total_tokens: usize) -> Result<Self> {
        let conv: Result<Vec<usize>> = bounds
            .iter()
            .map(|&b| {
                usize::try_from(b)
                    .map_err(|_| RetentionError::InvalidCuSeqlens(format!("negative entry {b}")))
            })
            .collect();
        Self::new(conv?, total_tokens)
    }

    /// Number of sequences N.
    pub fn num_seqs(&self) -> usize {
        self.0.len() - 1
    }

    /// Token range of sequence `n` in the packed batch.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        self.0[n]..self.0[n + 1]
    }

    /// The raw boundaries.
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_dims_are_named() {
        assert!(matches!(
            RetentionShape::new(1, 0, 1, 1, 1),
            Err(RetentionError::ZeroDim { axis: "T" })
        ));
        assert!(matches!(
            RetentionShape::new(1, 1, 1, 1, 0),
            Err(RetentionError::ZeroDim { axis: "V" })
        ));
        let s = RetentionShape::new(2, 3, 4, 5, 6).unwrap();
        assert_eq!(s.qk_shape(), [2, 3, 4, 5]);
        assert_eq!(s.vo_shape(), [2, 3, 4, 6]);
        assert_eq!(s.state_shape(7), [7, 4, 5, 6]);
    }

    #[test]
    fn cu_seqlens_validation() {
        assert!(CuSeqlens::new(vec![0, 3, 3, 7], 7).is_ok());
        for (b, t) in [
            (vec![0], 0),
            (vec![1, 4], 4),
            (vec![0, 5, 4], 4),
            (vec![0, 3], 4),
        ] {
            assert!(matches!(
                CuSeqlens::new(b, t),
                Err(RetentionError::InvalidCuSeqlens(_))
            ));
        }
        assert!(CuSeqlens::from_i64(&[0, -1, 2], 2).is_err());
        let c = CuSeqlens::from_i64(&[0, 2, 5], 5).unwrap();
        assert_eq!((c.num_seqs(), c.range(1)), (2, 2..5));
    }

    #[test]
    fn scale_defaults_and_validation() {
        assert_eq!(validate_scale(None, 64).unwrap(), 0.125);
        assert_eq!(validate_scale(Some(2.0), 64).unwrap(), 2.0);
        assert!(matches!(
            validate_scale(Some(f64::NAN), 4),
            Err(RetentionError::InvalidScale(_))
        ));
    }
}
