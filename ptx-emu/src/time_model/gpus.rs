//! Parameter sets of the GPUs the time model knows. Rates are the vendors' datasheet figures
//! unless a line says *measured* (on this workplace's device machines) or *assumed*.

/// One GPU as the time model sees it: resources that bound occupancy, issue and tensor-core
/// rates per SM, memory bandwidth and latency, and the fixed cost of a launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuModel {
    /// Short name used on the command line and in JSON (`a100`, `h100`, `h200`).
    pub name: &'static str,
    /// Marketing name, for labels.
    pub label: &'static str,
    /// Streaming multiprocessors.
    pub sms: u32,
    /// SM clock under sustained load, Hz.
    pub clock_hz: f64,
    /// Resident threads per SM.
    pub max_threads_per_sm: u32,
    /// Resident CTAs per SM.
    pub max_ctas_per_sm: u32,
    /// 32-bit registers per SM.
    pub registers_per_sm: u32,
    /// Shared memory per SM a kernel can use, bytes (the L1/shared carve-out at its maximum).
    pub shared_bytes_per_sm: u32,
    /// Shared memory the driver reserves per resident CTA, bytes.
    pub shared_reserved_per_cta: u32,
    /// HBM bandwidth by the datasheet, bytes/s (the old roofline's figure).
    pub hbm_spec_bytes_per_second: f64,
    /// Bandwidth a device-to-device copy reaches (read + written bytes per second): the
    /// ceiling a streaming kernel meets in practice.
    pub hbm_copy_bytes_per_second: f64,
    /// Loaded round-trip latency of a global access served by DRAM, cycles.
    pub memory_latency_cycles: f64,
    /// Launch and completion overhead of one kernel as device events see it, seconds.
    pub launch_seconds: f64,
    /// Cycles before a warp can issue an instruction that depends on its previous one (the
    /// fixed ALU latency): a scheduler with fewer warps than this idles between issues.
    pub dependent_issue_cycles: f64,
    /// Cycles one sub-partition's tensor core takes per `mma.sync.m16n8k16` (4096 FLOPs).
    pub mma_cycles: f64,
    /// Dense 16-bit tensor FLOP/s by the datasheet (wgmma on Hopper; `mma.sync` reaches
    /// `4096 × 4 × sms × clock / mma_cycles`).
    pub tensor_spec_flops: f64,
    /// f32 FLOP/s (FMA = 2).
    pub fp32_flops: f64,
}

/// A100-80GB SXM: 108 SMs at 1.41 GHz; 164 KB shared per SM; 2.04 TB/s HBM2e. The copy
/// ceiling is *assumed* at the fraction of spec the H100 measured (0.84); the A100 has not
/// been measured here.
pub const A100_MODEL: GpuModel = GpuModel {
    name: "a100",
    label: "A100-80GB SXM",
    sms: 108,
    clock_hz: 1.41e9,
    max_threads_per_sm: 2048,
    max_ctas_per_sm: 32,
    registers_per_sm: 65536,
    shared_bytes_per_sm: 167_936,
    shared_reserved_per_cta: 1024,
    hbm_spec_bytes_per_second: 2.039e12,
    hbm_copy_bytes_per_second: 1.71e12,
    memory_latency_cycles: 800.0,
    launch_seconds: 2.0e-6,
    dependent_issue_cycles: 4.0,
    // 312 TFLOP/s = 108 SMs × 4 tensor cores × 512 FLOP/cycle × 1.41 GHz.
    mma_cycles: 8.0,
    tensor_spec_flops: 312e12,
    fp32_flops: 19.5e12,
};

/// H100 SXM5 80GB: 132 SMs; 228 KB shared per SM; 3.35 TB/s HBM3, of which a copy
/// *measured* 2807 GB/s (2026-11-22, the run of the decode table). `mma.sync` (what
/// kernel-gen emits; no `wgmma`) is modelled at 5 cycles per m16n8k16 per sub-partition,
/// about 0.8 of the wgmma datasheet rate.
pub const H100_MODEL: GpuModel = GpuModel {
    name: "h100",
    label: "H100 SXM5 80GB",
    sms: 132,
    clock_hz: 1.755e9,
    max_threads_per_sm: 2048,
    max_ctas_per_sm: 32,
    registers_per_sm: 65536,
    shared_bytes_per_sm: 233_472,
    shared_reserved_per_cta: 1024,
    hbm_spec_bytes_per_second: 3.35e12,
    hbm_copy_bytes_per_second: 2.807e12,
    memory_latency_cycles: 1000.0,
    launch_seconds: 2.0e-6,
    dependent_issue_cycles: 4.0,
    mma_cycles: 5.0,
    tensor_spec_flops: 989e12,
    fp32_flops: 66.9e12,
};

/// H200 SXM 141GB: the H100's processor and rates with HBM3e at 4.8 TB/s (datasheet), of
/// which a copy *measured* about 4.3 TB/s on this workplace's H200 machines.
pub const H200_MODEL: GpuModel = GpuModel {
    name: "h200",
    label: "H200 SXM 141GB",
    hbm_spec_bytes_per_second: 4.8e12,
    hbm_copy_bytes_per_second: 4.3e12,
    ..H100_MODEL
};

/// Every model, for lookups by name.
pub const GPU_MODELS: [GpuModel; 3] = [A100_MODEL, H100_MODEL, H200_MODEL];

impl GpuModel {
    /// The model named `name` (`a100`, `h100`, `h200`; case-insensitive).
    pub fn by_name(name: &str) -> Option<GpuModel> {
        GPU_MODELS
            .into_iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
    }

    /// Peak `mma.sync` FLOP/s: 4096 FLOPs per m16n8k16, 4 sub-partitions per SM.
    pub fn mma_sync_flops(&self) -> f64 {
        4096.0 * 4.0 * f64::from(self.sms) * self.clock_hz / self.mma_cycles
    }

    /// Memory latency in seconds.
    pub fn memory_latency_seconds(&self) -> f64 {
        self.memory_latency_cycles / self.clock_hz
    }
}
