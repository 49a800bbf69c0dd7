//! Wall-clock timing by the median of repeated calls, after warm-up calls that also fault in
//! freshly allocated memory.

use std::time::{Duration, Instant};

/// How many times to call a measured function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepeatPlan {
    /// Timed calls at least.
    pub min_runs: usize,
    /// Timed calls at most.
    pub max_runs: usize,
    /// Keep calling (up to `max_runs`) until this much time was spent timing.
    pub budget: Duration,
}

/// The median of a set of timed calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median seconds per call.
    pub median: f64,
    /// Timed calls.
    pub runs: usize,
}

impl RepeatPlan {
    /// Call `f` `warmup` times untimed, then time it call by call per the plan; the first
    /// error stops the measurement and is returned.
    ///
    /// # Errors
    /// Whatever `f` returns first.
    pub fn measure<E>(
        &self,
        warmup: usize,
        mut f: impl FnMut() -> Result<(), E>,
    ) -> Result<Timing, E> {
        for _ in 0..warmup {
            f()?;
        }
        let mut samples = Vec::with_capacity(self.min_runs);
        let start = Instant::now();
        while samples.len() < self.min_runs.max(1)
            || (samples.len() < self.max_runs && start.elapsed() < self.budget)
        {
            let t = Instant::now();
            f()?;
            samples.push(t.elapsed().as_secs_f64());
        }
        Ok(Timing {
            median: median(&mut samples),
            runs: samples.len(),
        })
    }
}

/// The median of `xs` (mean of the middle two for an even count); `xs` must not be empty.
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn runs_at_least_min_and_at_most_max_and_stops_on_error() {
        let plan = RepeatPlan {
            min_runs: 3,
            max_runs: 5,
            budget: Duration::from_secs(60),
        };
        let mut calls = 0;
        let t = plan
            .measure::<()>(2, || {
                calls += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!((t.runs, calls), (5, 7));
        let quick = RepeatPlan {
            budget: Duration::ZERO,
            ..plan
        };
        assert_eq!(quick.measure::<()>(0, || Ok(())).unwrap().runs, 3);
        let mut n = 0;
        let failed = plan.measure(1, || {
            n += 1;
            if n == 3 { Err("boom") } else { Ok(()) }
        });
        assert_eq!(failed.unwrap_err(), "boom");
    }
}
