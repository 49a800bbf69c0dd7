//! A launch-time *prediction* for a GPU from the emulator's counters: launch overhead, CTAs
//! per SM from registers, shared memory and threads, waves over the SMs, per-sub-partition
//! issue and tensor-core rates, and memory latency a small grid cannot hide. Nothing here is
//! measured; every figure it produces is *predicted*.
//!
//! # Model
//! A kernel is `ctas` identical CTAs, each described by a [`Workload`]'s per-CTA counters.
//! - **Occupancy**: CTAs per SM = the fewest allowed by threads, registers (allocated per warp
//!   in 256-register units, 8 per thread), shared memory (plus the driver's per-CTA reserve)
//!   and the CTA limit.
//! - **n CTAs on an SM** need `pipe(n)` cycles of throughput work — the busiest
//!   sub-partition's warp instructions (one issue per cycle, but with `n·warps/4` warps per
//!   scheduler below [`GpuModel::dependent_issue_cycles`] the scheduler idles in
//!   proportion), n × its `mma.sync`s × [`GpuModel::mma_cycles`], or n × the CTA's shared
//!   wavefronts (one per cycle per SM), whichever is most.
//! - **One CTA's chain** is `pipe(1) + rounds × latency`: the waits it cannot overlap with
//!   itself, where `rounds` is the number of times its slowest warp
//!   waits on global memory (`cp.async.wait_*`, and reads of `ld.global` results still in
//!   flight, per warp) plus one for its last stores.
//! - **n CTAs sharing an SM** take `max(pipe(n), chain)`: throughput when the others hide
//!   one CTA's waits, its own chain when they cannot.
//! - **Waves**: full waves of `sms × occupancy` CTAs, then a tail whose busiest SM holds
//!   `⌈rest / sms⌉` CTAs.
//! - **Memory**: the DRAM bytes (32-byte sectors) over the copy bandwidth, or over what the
//!   resident CTAs keep in flight divided by the latency (Little's law) when that is less —
//!   a grid of few CTAs cannot cover the bandwidth–latency product.
//! - **Time** = launch overhead + the larger of compute and memory.
//!
//! # Scaling
//! Emulating a full-size problem is slow, and its CTAs are alike: a [`Workload`] taken from a
//! small launch ([`Workload::from_report`]) can be given the full grid's CTA count
//! ([`Workload::with_ctas`]), and per-CTA counters that are affine in a length (chunks per
//! CTA, tokens per split) can be extrapolated from two small launches
//! ([`Workload::affine`]).

mod gpus;

use serde::Serialize;

pub use gpus::{A100_MODEL, GPU_MODELS, GpuModel, H100_MODEL, H200_MODEL};

use crate::EmuReport;

/// What a CTA occupies on an SM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelResources {
    /// Threads per CTA.
    pub threads: u32,
    /// Registers per thread: ptxas's count when known, else the PTX's declared registers in
    /// 32-bit units capped at 255 (an upper estimate: ptxas reuses registers).
    pub registers: u32,
    /// Shared memory per CTA, static plus dynamic, bytes.
    pub shared_bytes: u32,
}

impl KernelResources {
    /// The same kernel with ptxas's register count (from `ptxas -v` or the manifest).
    #[must_use]
    pub fn with_registers(self, registers: u32) -> KernelResources {
        KernelResources { registers, ..self }
    }
}

/// Per-CTA work of one kernel and the number of CTAs: what [`GpuModel::predict`] times.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Workload {
    /// CTAs in the grid.
    pub ctas: f64,
    /// Resources of one CTA.
    pub resources: KernelResources,
    /// Warp instructions of the busiest sub-partition (warp w issues from w mod 4), per CTA.
    pub issue: f64,
    /// `mma.sync` of the busiest sub-partition, per CTA.
    pub mma: f64,
    /// Shared-memory wavefronts, per CTA.
    pub shared_wavefronts: f64,
    /// DRAM bytes (32-byte sectors × 32), per CTA.
    pub dram_bytes: f64,
    /// Global round trips the CTA's slowest warp waits for: its waits on `cp.async` groups
    /// and on `ld.global` results, plus one for the last stores to land.
    pub rounds: f64,
}

impl Workload {
    /// The per-CTA averages of an emulated launch, with its own grid.
    pub fn from_report(r: &EmuReport) -> Workload {
        let ctas = r
            .grid
            .iter()
            .map(|&g| f64::from(g))
            .product::<f64>()
            .max(1.0);
        let max = |a: &[u64; 4]| a.iter().copied().max().unwrap_or(0) as f64;
        Workload {
            ctas,
            resources: r.resources,
            issue: max(&r.subpartition_instructions) / ctas,
            mma: max(&r.subpartition_mma) / ctas,
            shared_wavefronts: r.shared_wavefronts as f64 / ctas,
            dram_bytes: (r.global_sectors * 32) as f64 / ctas,
            rounds: 1.0 + r.slowest_warp_waits as f64 / ctas,
        }
    }

    /// The same CTAs, `ctas` of them (a full-size grid of the CTAs a small launch ran).
    #[must_use]
    pub fn with_ctas(self, ctas: f64) -> Workload {
        Workload { ctas, ..self }
    }

    /// Per-CTA counters extrapolated to length `x` from `a` measured at length `xa` and `b`
    /// at `xb` (counters affine in the length: chunks per CTA, tokens per split); the CTA
    /// count and resources are `b`'s.
    ///
    /// # Panics
    /// When `xa == xb`.
    #[must_use]
    pub fn affine(a: &Workload, xa: f64, b: &Workload, xb: f64, x: f64) -> Workload {
        assert!(xa != xb, "two distinct lengths are needed to extrapolate");
        let at = |fa: f64, fb: f64| (fa + (fb - fa) * (x - xa) / (xb - xa)).max(0.0);
        Workload {
            ctas: b.ctas,
            resources: b.resources,
            issue: at(a.issue, b.issue),
            mma: at(a.mma, b.mma),
            shared_wavefronts: at(a.shared_wavefronts, b.shared_wavefronts),
            dram_bytes: at(a.dram_bytes, b.dram_bytes),
            rounds: at(a.rounds, b.rounds).max(1.0),
        }
    }
}

/// What bounds a predicted launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// DRAM bandwidth (the copy ceiling).
    Memory,
    /// Too few bytes in flight to cover the bandwidth–latency product.
    MemoryLatency,
    /// Warp-instruction issue on the busiest sub-partition.
    Issue,
    /// Tensor-core `mma.sync` rate.
    Tensor,
    /// Shared-memory wavefronts.
    Shared,
    /// One CTA's own chain of global round trips, not hidden by other CTAs.
    Latency,
}

/// One *predicted* launch time and how it was reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// The GPU model's short name.
    pub gpu: &'static str,
    /// Predicted seconds: launch + max(compute, memory). Not a measurement.
    pub seconds: f64,
    /// The launch overhead included.
    pub launch_seconds: f64,
    /// SM time over all waves.
    pub compute_seconds: f64,
    /// DRAM time at the achievable bandwidth.
    pub memory_seconds: f64,
    /// Resident CTAs per SM (0: the CTA does not fit an SM).
    pub ctas_per_sm: u32,
    /// CTAs over the CTAs resident at once (1.0 is exactly one full wave).
    pub waves: f64,
    /// What bounds the time.
    pub bound: Bound,
}

impl GpuModel {
    /// CTAs of `r` resident on one SM at once (0 when one does not fit).
    pub fn ctas_per_sm(&self, r: &KernelResources) -> u32 {
        let threads = r.threads.max(1);
        let warps = threads.div_ceil(32);
        let by_threads = self.max_threads_per_sm / threads;
        let regs_per_warp = (r.registers.max(1).div_ceil(8) * 8 * 32).div_ceil(256) * 256;
        let by_regs = self.registers_per_sm / (regs_per_warp * warps);
        let by_shared = if r.shared_bytes == 0 {
            u32::MAX
        } else {
            self.shared_bytes_per_sm / (r.shared_bytes + self.shared_reserved_per_cta)
        };
        self.max_ctas_per_sm
            .min(by_threads)
            .min(by_regs)
            .min(by_shared)
    }

    /// The *predicted* time of `w` on this GPU (see the module docs for the model).
    pub fn predict(&self, w: &Workload) -> Prediction {
        let occupancy = self.ctas_per_sm(&w.resources);
        let launch = self.launch_seconds;
        if occupancy == 0 || w.ctas <= 0.0 {
            return Prediction {
                gpu: self.name,
                seconds: if occupancy == 0 {
                    f64::INFINITY
                } else {
                    launch
                },
                launch_seconds: launch,
                compute_seconds: 0.0,
                memory_seconds: 0.0,
                ctas_per_sm: occupancy,
                waves: 0.0,
                bound: Bound::Issue,
            };
        }
        let sms = f64::from(self.sms);
        let resident = sms * f64::from(occupancy);
        let latency = w.rounds * self.memory_latency_cycles;
        let warps = f64::from(w.resources.threads.div_ceil(32).max(1));
        // n CTAs give each of the 4 schedulers n·warps/4 warps; fewer than the dependent-issue
        // latency leave it idle between issues.
        let issue =
            |n: f64| n * w.issue * (self.dependent_issue_cycles * 4.0 / (n * warps)).max(1.0);
        let (tensor, shared) = (w.mma * self.mma_cycles, w.shared_wavefronts);
        let pipe = |n: f64| issue(n).max(n * tensor).max(n * shared);
        let sm_cycles = |n: f64| pipe(n).max(pipe(1.0) + latency);
        let full = (w.ctas / resident).floor();
        let rest = w.ctas - full * resident;
        let tail = if rest > 0.0 {
            sm_cycles((rest / sms).ceil())
        } else {
            0.0
        };
        let cycles = full * sm_cycles(f64::from(occupancy)) + tail;
        let compute = cycles / self.clock_hz;
        let total_bytes = w.dram_bytes * w.ctas;
        let in_flight = w.ctas.min(resident) * w.dram_bytes / w.rounds;
        let latency_bw = in_flight / self.memory_latency_seconds();
        let bandwidth = self.hbm_copy_bytes_per_second.min(latency_bw);
        let memory = total_bytes / bandwidth;
        let bound = if memory >= compute {
            if latency_bw < self.hbm_copy_bytes_per_second {
                Bound::MemoryLatency
            } else {
                Bound::Memory
            }
        } else {
            let n = f64::from(occupancy).min((w.ctas / sms).ceil());
            let p = pipe(n);
            if p < pipe(1.0) + latency {
                Bound::Latency
            } else if p == n * tensor {
                Bound::Tensor
            } else if p == issue(n) {
                Bound::Issue
            } else {
                Bound::Shared
            }
        };
        Prediction {
            gpu: self.name,
            seconds: launch + compute.max(memory),
            launch_seconds: launch,
            compute_seconds: compute,
            memory_seconds: memory,
            ctas_per_sm: occupancy,
            waves: w.ctas / resident,
            bound,
        }
    }

    /// Sum of the predictions of several launches run one after another (a two-phase
    /// forward, a split pass and its combine).
    pub fn predict_sequence(&self, launches: &[Workload]) -> f64 {
        launches.iter().map(|w| self.predict(w).seconds).sum()
    }
}
