//! `retention run --demo`: a random problem through every reference form, and a table of how
//! far apart they are. The forms are algebraically equal (ARCHITECTURE §1), so in f64 every
//! difference must be rounding noise.

use retention_core::{Gammas, HostTensor, RetentionShape, SplitMix64};
use retention_kernels::reference::{
    RetentionParams, chunkwise, max_abs_diff, max_rel_diff, parallel, recurrent,
};

use crate::error::CliError;

/// Largest relative difference (to the reference's largest magnitude) the demo accepts.
const TOLERANCE: f64 = 1e-12;

/// Chunk sizes: token-by-token, a non-divisor of T, powers of two, exactly T, and beyond T.
const CHUNKS: [usize; 6] = [1, 7, 16, 64, 100, 128];

/// One line of the table.
struct Row {
    what: String,
    tensor: &'static str,
    abs: f64,
    rel: f64,
}

impl Row {
    fn new(what: String, tensor: &'static str, actual: &[f64], reference: &[f64]) -> Self {
        Self {
            what,
            tensor,
            abs: max_abs_diff(actual, reference),
            rel: max_rel_diff(actual, reference),
        }
    }

    fn ok(&self) -> bool {
        self.rel <= TOLERANCE
    }
}

/// Generate the problem from `seed`, compare the forms, print the table.
///
/// # Errors
/// [`CliError::DemoMismatch`] when any difference exceeds [`TOLERANCE`].
pub fn run(seed: u64) -> Result<(), CliError> {
    let shape = RetentionShape::new(2, 100, 4, 32, 48)?;
    let mut rng = SplitMix64::new(seed);
    let q = HostTensor::new(shape.qk_shape(), rng.vec(shape.qk_shape().iter().product()))?;
    let k = HostTensor::new(shape.qk_shape(), rng.vec(shape.qk_shape().iter().product()))?;
    let v = HostTensor::new(shape.vo_shape(), rng.vec(shape.vo_shape().iter().product()))?;
    let h0_shape = shape.state_shape(shape.batch);
    let h0 = HostTensor::new(h0_shape, rng.vec(h0_shape.iter().product()))?;
    let params = RetentionParams::new(Gammas::retnet(shape.heads)?, None);

    let mut rows = Vec::new();
    // Without an initial state all three forms must agree on o.
    let o_par = parallel(&q, &k, &v, &params)?;
    let (o_rec0, _) = recurrent(&q, &k, &v, &params, None)?;
    rows.push(Row::new(
        "recurrent vs parallel (h0 = 0)".into(),
        "o",
        o_rec0.data(),
        o_par.data(),
    ));
    for c in CHUNKS {
        let (o, _) = chunkwise(&q, &k, &v, &params, c, None)?;
        rows.push(Row::new(
            format!("chunkwise C={c} vs parallel (h0 = 0)"),
            "o",
            o.data(),
            o_par.data(),
        ));
    }
    // With a random initial state, recurrent is the reference for o and the final state.
    let (o_rec, ht_rec) = recurrent(&q, &k, &v, &params, Some(&h0))?;
    for c in CHUNKS {
        let (o, ht) = chunkwise(&q, &k, &v, &params, c, Some(&h0))?;
        let what = format!("chunkwise C={c} vs recurrent (random h0)");
        rows.push(Row::new(what.clone(), "o", o.data(), o_rec.data()));
        rows.push(Row::new(what, "ht", ht.data(), ht_rec.data()));
    }

    println!(
        "retention run --demo (seed {seed}): B={} T={} H={} K={} V={}, retnet gammas, scale K^-1/2, f64 reference on cpu",
        shape.batch, shape.seq_len, shape.heads, shape.dk, shape.dv
    );
    println!(
        "{:<44} {:<6} {:>12} {:>12}  check",
        "comparison", "tensor", "max abs", "max rel"
    );
    for r in &rows {
        println!(
            "{:<44} {:<6} {:>12.3e} {:>12.3e}  {}",
            r.what,
            r.tensor,
            r.abs,
            r.rel,
            if r.ok() { "ok" } else { "FAIL" }
        );
    }
    let failed = rows.iter().filter(|r| !r.ok()).count();
    if failed == 0 {
        println!(
            "all {} comparisons within {TOLERANCE:e} relative",
            rows.len()
        );
        Ok(())
    } else {
        Err(CliError::DemoMismatch(format!(
            "{failed} of {} comparisons exceed {TOLERANCE:e} relative",
            rows.len()
        )))
    }
}
