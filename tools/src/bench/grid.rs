//! What each suite sweeps, in full and `--quick` form, and how long each point is timed.

use std::time::Duration;

use crate::timing::RepeatPlan;

use super::limits::LimitSizes;

/// Contexts of the paper's inference comparison.
pub const COMPARE_CONTEXTS: [usize; 3] = [2048, 8192, 32768];

/// The sweep of one `bench` run.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Decode batch sizes.
    pub decode_batches: Vec<usize>,
    /// Decode context lengths.
    pub decode_contexts: Vec<usize>,
    /// Prefill lengths T.
    pub prefill_lengths: Vec<usize>,
    /// Chunk sizes of the chunkwise prefill.
    pub prefill_chunks: Vec<usize>,
    /// The parallel form runs only up to this T (its cost grows as T²).
    pub parallel_max_len: usize,
    /// Contexts of the retention-vs-attention comparison (batch 1).
    pub compare_contexts: Vec<usize>,
    /// Bytes one measurement may allocate; larger points are skipped with a note.
    pub memory_budget: u64,
    /// Repetitions per point.
    pub plan: RepeatPlan,
    /// Sizes of the limit probes.
    pub limits: LimitSizes,
}

impl Grid {
    /// The default sweep: under two minutes for the 1.3b model on a 2-core CPU.
    pub fn full() -> Self {
        Self {
            decode_batches: vec![1, 4, 16, 64],
            decode_contexts: vec![1024, 4096, 16384, 65536],
            prefill_lengths: vec![1024, 4096],
            prefill_chunks: vec![32, 64, 128, 256],
            parallel_max_len: 1024,
            compare_contexts: COMPARE_CONTEXTS.to_vec(),
            memory_budget: 4 << 30,
            plan: RepeatPlan {
                min_runs: 3,
                max_runs: 200,
                budget: Duration::from_millis(400),
            },
            limits: LimitSizes::FULL,
        }
    }

    /// A fast sweep (seconds; what the tests run on tiny shapes).
    pub fn quick() -> Self {
        Self {
            decode_batches: vec![1, 4],
            decode_contexts: vec![1024, 16384],
            prefill_lengths: vec![256, 1024],
            prefill_chunks: vec![32, 64],
            parallel_max_len: 256,
            compare_contexts: COMPARE_CONTEXTS.to_vec(),
            memory_budget: 2 << 30,
            plan: RepeatPlan {
                min_runs: 2,
                max_runs: 20,
                budget: Duration::from_millis(30),
            },
            limits: LimitSizes::QUICK,
        }
    }

    /// The sweep on a GPU: the full CPU sweep's points plus batch 256 and 128k contexts and
    /// longer prefills (a GPU runs them in milliseconds); `quick` keeps the CPU quick sweep's
    /// points with fewer repetitions.
    pub fn gpu(quick: bool) -> Self {
        if quick {
            return Self {
                limits: LimitSizes::FULL,
                ..Self::quick()
            };
        }
        Self {
            decode_batches: vec![1, 4, 16, 64, 256],
            decode_contexts: vec![1024, 4096, 16384, 65536],
            prefill_lengths: vec![1024, 4096, 16384],
            prefill_chunks: vec![32, 64, 128, 256],
            parallel_max_len: 16384,
            memory_budget: 16 << 30,
            plan: RepeatPlan {
                min_runs: 5,
                max_runs: 50,
                budget: Duration::from_millis(200),
            },
            ..Self::full()
        }
    }

    /// The sweep on the emulated device: each point is one emulated launch (seconds of CPU
    /// for a paper-sized model), so one batch, one context, one prefill length.
    pub fn emulated() -> Self {
        Self {
            decode_batches: vec![1],
            decode_contexts: vec![1024],
            prefill_lengths: vec![256],
            prefill_chunks: vec![64],
            parallel_max_len: 256,
            compare_contexts: vec![2048],
            memory_budget: 1 << 30,
            plan: RepeatPlan {
                min_runs: 1,
                max_runs: 1,
                budget: Duration::from_millis(1),
            },
            limits: LimitSizes::QUICK,
        }
    }
}
