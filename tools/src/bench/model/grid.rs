//! What the model suite sweeps: contexts at batch 1 (memory and latency against length),
//! batches at the paper's 2k, 8k and 32k contexts (throughput and latency against batch, up
//! to the exact largest batch that fits), and one prefill — in full and `--quick` form.

use std::time::Duration;

use serde::Serialize;

use crate::timing::RepeatPlan;

/// The context of the suite's summary (the paper's Figure 1: 8k tokens).
pub const SUMMARY_CONTEXT: usize = 8192;

/// The sweep of one run (recorded in the report, so it says what was run).
#[derive(Debug, Clone, Serialize)]
pub struct ModelGrid {
    /// Contexts of the memory and latency sweep at batch 1.
    pub contexts: Vec<usize>,
    /// Contexts of the batch sweep.
    pub batch_contexts: Vec<usize>,
    /// Batches tried in order; each architecture stops at the first that does not fit, then
    /// searches for the exact largest batch that fits, up to `batch_cap`.
    pub batches: Vec<usize>,
    /// The largest batch the limit search tries (a model whose memory allows more reports
    /// this, with `ran_out` false).
    pub batch_cap: usize,
    /// Prefill length (time to first token), one sequence.
    pub prefill_tokens: usize,
    /// Chunk size of RetNet's chunkwise prefill.
    pub chunk: usize,
    /// Untimed decode steps before timing a point of the context sweep.
    pub context_warmup: usize,
    /// Untimed decode steps before timing a point of the batch sweep (0 on the CPU: a large
    /// batch's step takes seconds, and its state or cache was just written).
    pub batch_warmup: usize,
    /// Timed decode steps per point at most.
    pub max_runs: usize,
    /// Time spent timing a point before it stops (at least one run).
    #[serde(skip)]
    pub plan: RepeatPlan,
}

impl ModelGrid {
    /// The CPU sweep: six contexts, batches 1 to 64 and then each model's exact limit (up to
    /// 1024 sequences), a 64-token prefill.
    pub fn full() -> Self {
        Self::with(
            vec![1024, 2048, 4096, 8192, 16384, 32768],
            vec![2048, 8192, 32768],
            (vec![1, 2, 4, 8, 16, 32, 64], 1024),
            64,
            (1, 0),
            RepeatPlan {
                min_runs: 1,
                max_runs: 3,
                budget: Duration::from_millis(600),
            },
        )
    }

    /// The CI sweep: two contexts, batches 1 and 4 at 8k and then each model's exact limit
    /// (up to 128 sequences), a 16-token prefill, one timed step per point and no warm-up.
    pub fn quick() -> Self {
        Self::with(
            vec![2048, SUMMARY_CONTEXT],
            vec![SUMMARY_CONTEXT],
            (vec![1, 4], 128),
            16,
            (0, 0),
            RepeatPlan {
                min_runs: 1,
                max_runs: 1,
                budget: Duration::ZERO,
            },
        )
    }

    fn with(
        contexts: Vec<usize>,
        batch_contexts: Vec<usize>,
        (batches, batch_cap): (Vec<usize>, usize),
        prefill_tokens: usize,
        (context_warmup, batch_warmup): (usize, usize),
        plan: RepeatPlan,
    ) -> Self {
        Self {
            contexts,
            batch_contexts,
            batches,
            batch_cap,
            prefill_tokens,
            chunk: 64,
            context_warmup,
            batch_warmup,
            max_runs: plan.max_runs,
            plan,
        }
    }

    /// Points of one architecture (for the progress bar).
    pub fn points(&self) -> usize {
        self.contexts.len() + self.batch_contexts.len() * self.batches.len() + 1
    }
}
