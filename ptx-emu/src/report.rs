//! What a launch cost: instruction mix, memory traffic, coalescing and bank conflicts, and a
//! roofline time *prediction* for A100 and H100 (ARCHITECTURE §5). Nothing here is measured on a
//! GPU; every time field says `predicted`.

use serde::Serialize;

use crate::decode::ops::Class;
use crate::time_model::{GpuModel, KernelResources, Prediction, Workload};

/// Warp-level instruction counts by class (one count per warp instruction issued, whatever
/// the number of active lanes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstructionCounts {
    /// Integer, logic, moves, compares and conversions between integers.
    pub int: u64,
    /// f32 (and f64) arithmetic, float compares and float conversions.
    pub fp32: u64,
    /// f16/bf16 arithmetic (scalar and packed).
    pub fp16: u64,
    /// Special-function unit: ex2, lg2, rcp, rsqrt, sqrt, sin, cos, tanh, f32 div.
    pub sfu: u64,
    /// Global loads (including `cp.async` issues).
    pub ld_global: u64,
    /// Global stores.
    pub st_global: u64,
    /// Shared loads (including `ldmatrix`).
    pub ld_shared: u64,
    /// Shared stores.
    pub st_shared: u64,
    /// Local and param loads/stores.
    pub ld_st_other: u64,
    /// `mma.sync`.
    pub mma: u64,
    /// Warp communication: `shfl.sync`, `vote.sync`, `activemask`.
    pub shfl: u64,
    /// Branches and exits.
    pub control: u64,
    /// `bar.sync`, fences.
    pub barrier: u64,
    /// Atomics and reductions.
    pub atomic: u64,
    /// `cp.async` group management.
    pub other: u64,
}

impl InstructionCounts {
    pub(crate) fn add(&mut self, class: Class) {
        let c = match class {
            Class::Int => &mut self.int,
            Class::Fp32 | Class::Fp64 => &mut self.fp32,
            Class::Fp16 => &mut self.fp16,
            Class::Sfu => &mut self.sfu,
            Class::LdGlobal => &mut self.ld_global,
            Class::StGlobal => &mut self.st_global,
            Class::LdShared => &mut self.ld_shared,
            Class::StShared => &mut self.st_shared,
            Class::LdLocal | Class::StLocal | Class::LdParam => &mut self.ld_st_other,
            Class::Mma => &mut self.mma,
            Class::Shfl => &mut self.shfl,
            Class::Control => &mut self.control,
            Class::Barrier => &mut self.barrier,
            Class::Atomic => &mut self.atomic,
            Class::Other => &mut self.other,
        };
        *c += 1;
    }

    fn merge(&mut self, o: &InstructionCounts) {
        self.int += o.int;
        self.fp32 += o.fp32;
        self.fp16 += o.fp16;
        self.sfu += o.sfu;
        self.ld_global += o.ld_global;
        self.st_global += o.st_global;
        self.ld_shared += o.ld_shared;
        self.st_shared += o.st_shared;
        self.ld_st_other += o.ld_st_other;
        self.mma += o.mma;
        self.shfl += o.shfl;
        self.control += o.control;
        self.barrier += o.barrier;
        self.atomic += o.atomic;
        self.other += o.other;
    }

    /// Sum over all classes.
    pub fn total(&self) -> u64 {
        self.int
            + self.fp32
            + self.fp16
            + self.sfu
            + self.ld_global
            + self.st_global
            + self.ld_shared
            + self.st_shared
            + self.ld_st_other
            + self.mma
            + self.shfl
            + self.control
            + self.barrier
            + self.atomic
            + self.other
    }
}

/// Counters of one block (merged into the launch total).
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub instructions: InstructionCounts,
    pub thread_instructions: u64,
    pub global_bytes_read: u64,
    pub global_bytes_written: u64,
    pub global_requests: u64,
    pub global_sectors: u64,
    pub shared_requests: u64,
    pub shared_wavefronts: u64,
    pub shared_bank_conflicts: u64,
    pub shared_uninit_reads: u64,
    pub barriers: u64,
    pub fp32_flops: u64,
    pub fp16_flops: u64,
    pub mma_flops: u64,
    pub subpartition_instructions: [u64; 4],
    pub subpartition_mma: [u64; 4],
    pub async_waits: u64,
    pub load_waits: u64,
    pub slowest_warp_waits: u64,
}

impl Counters {
    pub(crate) fn merge(&mut self, o: &Counters) {
        self.instructions.merge(&o.instructions);
        self.thread_instructions += o.thread_instructions;
        self.global_bytes_read += o.global_bytes_read;
        self.global_bytes_written += o.global_bytes_written;
        self.global_requests += o.global_requests;
        self.global_sectors += o.global_sectors;
        self.shared_requests += o.shared_requests;
        self.shared_wavefronts += o.shared_wavefronts;
        self.shared_bank_conflicts += o.shared_bank_conflicts;
        self.shared_uninit_reads += o.shared_uninit_reads;
        self.barriers += o.barriers;
        self.fp32_flops += o.fp32_flops;
        self.fp16_flops += o.fp16_flops;
        self.mma_flops += o.mma_flops;
        for s in 0..4 {
            self.subpartition_instructions[s] += o.subpartition_instructions[s];
            self.subpartition_mma[s] += o.subpartition_mma[s];
        }
        self.async_waits += o.async_waits;
        self.load_waits += o.load_waits;
        self.slowest_warp_waits += o.slowest_warp_waits;
    }
}

/// Peak rates of one GPU for the roofline (ARCHITECTURE §5 table).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuPeaks {
    /// HBM bandwidth, bytes/s.
    pub hbm_bytes_per_second: f64,
    /// Dense bf16/f16 tensor-core FLOP/s.
    pub tensor_flops: f64,
    /// f32 FLOP/s (FMA = 2).
    pub fp32_flops: f64,
}

/// A100-80 SXM.
pub const A100: GpuPeaks = GpuPeaks {
    hbm_bytes_per_second: 2.04e12,
    tensor_flops: 312e12,
    fp32_flops: 19.5e12,
};

/// H100 SXM.
pub const H100: GpuPeaks = GpuPeaks {
    hbm_bytes_per_second: 3.35e12,
    tensor_flops: 989e12,
    fp32_flops: 66.9e12,
};

impl GpuPeaks {
    /// Roofline time: the slowest of moving the global bytes (sector bytes in reports), the f32 (+ f16 vector) FLOPs,
    /// and the tensor FLOPs. Launch overhead, latency and occupancy are ignored, so this is
    /// a lower bound.
    pub fn predicted_seconds(&self, bytes: u64, fp32_flops: u64, mma_flops: u64) -> f64 {
        let mem = bytes as f64 / self.hbm_bytes_per_second;
        let fp = fp32_flops as f64 / self.fp32_flops;
        let tc = mma_flops as f64 / self.tensor_flops;
        mem.max(fp).max(tc)
    }
}

/// Counters of one emulated launch plus predicted GPU times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmuReport {
    /// Entry that ran.
    pub kernel: String,
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// Warp instructions by class.
    pub instructions: InstructionCounts,
    /// Sum of active lanes over all executed warp instructions.
    pub thread_instructions: u64,
    /// Bytes loaded from global memory (including `cp.async` sources and atomics).
    pub global_bytes_read: u64,
    /// Bytes stored to global memory (including atomics).
    pub global_bytes_written: u64,
    /// Warp-level global memory requests.
    pub global_requests: u64,
    /// Distinct 32-byte sectors summed over requests (perfect coalescing of 4-byte
    /// accesses is 4 sectors per full-warp request).
    pub global_sectors: u64,
    /// `global_sectors / global_requests` (0 when there were none).
    pub sectors_per_request: f64,
    /// Warp-level shared memory requests (`ldmatrix` counts one per matrix).
    pub shared_requests: u64,
    /// Shared wavefronts (32 banks × 4 bytes per wavefront).
    pub shared_wavefronts: u64,
    /// Extra wavefronts caused by bank conflicts (0 is conflict-free).
    pub shared_bank_conflicts: u64,
    /// Thread reads of shared memory that touched a byte no thread of the block had
    /// written since launch (stale data from nowhere: 0 in a kernel that stages what it
    /// reads).
    pub shared_uninit_reads: u64,
    /// Block-wide barrier releases.
    pub barriers: u64,
    /// f32/f64 FLOPs (FMA = 2), per thread.
    pub fp32_flops: u64,
    /// f16/bf16 FLOPs outside tensor cores.
    pub fp16_flops: u64,
    /// Tensor-core FLOPs (`mma.m16n8k16` = 4096 per warp instruction).
    pub mma_flops: u64,
    /// Roofline prediction for A100-80 SXM, seconds: max of `global_sectors × 32` bytes over
    /// HBM bandwidth, f32+f16 FLOPs over the f32 peak, and mma FLOPs over the tensor peak.
    /// Not a measurement.
    pub predicted_a100_seconds: f64,
    /// Roofline prediction for H100 SXM, seconds. Not a measurement.
    pub predicted_h100_seconds: f64,
    /// Warp instructions issued per sub-partition (warp w of a CTA on w mod 4), all CTAs.
    pub subpartition_instructions: [u64; 4],
    /// `mma.sync` per sub-partition, all CTAs.
    pub subpartition_mma: [u64; 4],
    /// Warp-level `cp.async.wait_group`/`wait_all` executions: global round trips waited on.
    pub async_waits: u64,
    /// Warp-level waits on `ld.global` results: instructions that read a register a global
    /// load wrote which no earlier instruction of the warp had waited on.
    pub load_waits: u64,
    /// Per CTA, the global round trips its slowest warp waited for (`cp.async` waits plus
    /// load-result waits), summed over CTAs: the latency chain the time model charges.
    pub slowest_warp_waits: u64,
    /// What one CTA occupies on an SM (registers estimated from the PTX's declarations).
    pub resources: KernelResources,
}

impl EmuReport {
    pub(crate) fn new(
        kernel: &str,
        (grid, block): ([u32; 3], [u32; 3]),
        resources: KernelResources,
        c: &Counters,
    ) -> EmuReport {
        // DRAM traffic is counted at sector granularity (what a warp request moves), with no
        // reuse across requests: broadcasts cost one sector, scattered lanes one each.
        let bytes = c.global_sectors * 32;
        let flops = c.fp32_flops + c.fp16_flops;
        EmuReport {
            kernel: kernel.to_string(),
            grid,
            block,
            instructions: c.instructions.clone(),
            thread_instructions: c.thread_instructions,
            global_bytes_read: c.global_bytes_read,
            global_bytes_written: c.global_bytes_written,
            global_requests: c.global_requests,
            global_sectors: c.global_sectors,
            sectors_per_request: if c.global_requests == 0 {
                0.0
            } else {
                c.global_sectors as f64 / c.global_requests as f64
            },
            shared_requests: c.shared_requests,
            shared_wavefronts: c.shared_wavefronts,
            shared_bank_conflicts: c.shared_bank_conflicts,
            shared_uninit_reads: c.shared_uninit_reads,
            barriers: c.barriers,
            fp32_flops: c.fp32_flops,
            fp16_flops: c.fp16_flops,
            mma_flops: c.mma_flops,
            predicted_a100_seconds: A100.predicted_seconds(bytes, flops, c.mma_flops),
            predicted_h100_seconds: H100.predicted_seconds(bytes, flops, c.mma_flops),
            subpartition_instructions: c.subpartition_instructions,
            subpartition_mma: c.subpartition_mma,
            async_waits: c.async_waits,
            load_waits: c.load_waits,
            slowest_warp_waits: c.slowest_warp_waits,
            resources,
        }
    }

    /// The launch's *predicted* time on `gpu` by the time model (launch overhead, occupancy,
    /// waves, issue and tensor rates, exposed latency; see [`crate::time_model`]), for this
    /// launch's own grid. Not a measurement.
    pub fn predict(&self, gpu: &GpuModel) -> Prediction {
        gpu.predict(&Workload::from_report(self))
    }
}
