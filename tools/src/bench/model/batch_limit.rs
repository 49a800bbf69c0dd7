//! The exact largest batch that fits the memory limit, for one architecture at one context.
//!
//! Whether a batch fits is decided by running it — its state or KV cache and a decode step's
//! activations allocated through the ledger, RetNet's state through the state pool's
//! `MemoryPool` (whose size classes make its bytes a step function of the batch) — never by a
//! formula. The formula only picks which batches to try: memory is close to linear in the
//! batch, `total(b) ≈ total(lo) + (b − lo)·per_sequence`, with the slope measured between the
//! two largest batches that fitted, so the first guess is usually the answer and the second
//! try (its neighbour) proves it. A wrong guess falls back to bisection, so the result is
//! exact whatever the allocator does, as long as fitting is monotone in the batch.

/// Where the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The largest batch that fitted.
    pub largest: usize,
    /// True when `largest + 1` was run and did not fit (the memory limit); false when the
    /// search stopped at the batch cap.
    pub ran_out: bool,
}

/// The first batch to try above `lo`: where the line through the two measured points
/// `(b, total_bytes)` (`lo`'s and a smaller one's) meets `limit`. None without a usable slope.
pub fn guess(points: &[(usize, u64)], limit: u64) -> Option<usize> {
    let mut fitted: Vec<(usize, u64)> = points.to_vec();
    fitted.sort_unstable();
    let [.., (b0, t0), (b1, t1)] = fitted[..] else {
        return None;
    };
    if b1 <= b0 || t1 <= t0 || t1 > limit {
        return None;
    }
    let per_sequence = (t1 - t0) as f64 / (b1 - b0) as f64;
    let more = ((limit - t1) as f64 / per_sequence).floor();
    Some(b1.saturating_add(more.min(usize::MAX as f64 / 2.0) as usize))
}

/// The largest batch in `lo ..= cap` for which `fits` holds, given that `lo` fits and `hi`
/// (if known, `> lo`) does not, trying `guess` first and its neighbour second, then
/// bisecting. `fits` must be monotone (true up to some batch, false after).
///
/// # Errors
/// Whatever `fits` returns.
pub fn largest_fit<E>(
    lo: usize,
    hi: Option<usize>,
    guess: Option<usize>,
    cap: usize,
    mut fits: impl FnMut(usize) -> Result<bool, E>,
) -> Result<Limit, E> {
    let (mut lo, mut hi) = (lo, hi);
    // Candidates lie in lo+1 .. upper (exclusive): below the smallest failure and the cap.
    let upper = |hi: Option<usize>| hi.unwrap_or(usize::MAX).min(cap.saturating_add(1));
    let mut next = guess;
    while lo + 1 < upper(hi) {
        let b = next
            .unwrap_or(lo + (upper(hi) - lo) / 2)
            .clamp(lo + 1, upper(hi) - 1);
        let ok = fits(b)?;
        if ok {
            lo = b;
        } else {
            hi = Some(b);
        }
        // The guess's neighbour proves it right; after that, bisect.
        next = match (next == guess && guess.is_some(), ok) {
            (true, true) => Some(b + 1),
            (true, false) => Some(b - 1),
            (false, _) => None,
        };
        if next.is_some() && next == guess {
            next = None;
        }
    }
    Ok(Limit {
        largest: lo,
        ran_out: hi == Some(lo + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the search against "fits up to `max`", returning the limit and the batches tried.
    fn search(
        max: usize,
        lo: usize,
        hi: Option<usize>,
        guess: Option<usize>,
        cap: usize,
    ) -> (Limit, Vec<usize>) {
        let mut tried = Vec::new();
        let limit = largest_fit::<()>(lo, hi, guess, cap, |b| {
            tried.push(b);
            Ok(b <= max)
        })
        .unwrap();
        (limit, tried)
    }

    #[test]
    fn finds_the_exact_limit_from_any_guess() {
        for max in 1..=70 {
            for guess in [
                None,
                Some(1),
                Some(max),
                Some(max + 1),
                Some(3 * max),
                Some(500),
            ] {
                let hi = (max < 64).then_some(64);
                let (limit, tried) = search(max, 1, hi, guess, 100);
                assert_eq!(
                    limit,
                    Limit {
                        largest: max,
                        ran_out: true
                    },
                    "max {max}, guess {guess:?}, tried {tried:?}"
                );
                assert!(tried.contains(&(max + 1)) || hi == Some(max + 1));
                assert!(tried.len() <= 9, "{tried:?}");
            }
        }
    }

    #[test]
    fn a_right_guess_costs_two_runs() {
        let (limit, tried) = search(37, 4, None, Some(37), 1000);
        assert_eq!((limit.largest, limit.ran_out), (37, true));
        assert_eq!(tried, [37, 38]);
        let (_, tried) = search(37, 4, Some(64), Some(38), 1000);
        assert_eq!(tried, [38, 37]);
    }

    #[test]
    fn stops_at_the_cap_without_claiming_the_limit() {
        let (limit, tried) = search(500, 4, None, Some(10_000), 128);
        assert_eq!(
            limit,
            Limit {
                largest: 128,
                ran_out: false
            }
        );
        assert_eq!(tried, [128]);
        // Nothing to search: the failure is right above what fitted.
        let (limit, tried) = search(3, 3, Some(4), Some(10), 128);
        assert_eq!((limit.largest, limit.ran_out, tried.len()), (3, true, 0));
    }

    #[test]
    fn the_guess_follows_the_measured_slope() {
        // 100 bytes of weights, 10 a sequence: 1000 bytes hold 90 sequences.
        assert_eq!(guess(&[(1, 110), (4, 140)], 1000), Some(90));
        assert_eq!(guess(&[(4, 140), (1, 110), (2, 120)], 1000), Some(90));
        assert_eq!(guess(&[(4, 140)], 1000), None);
        assert_eq!(guess(&[(1, 110), (4, 110)], 1000), None);
    }
}
