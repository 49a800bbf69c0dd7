//! The time model (`ptx_emu::time_model`): the counters it reads (round trips waited for,
//! per-sub-partition issue, the register estimate) on small PTX kernels, and its occupancy,
//! waves, latency, tensor-rate and scaling arithmetic on hand-built workloads.

use ptx_emu::{
    A100_MODEL, Bound, Buffer, GpuModel, H100_MODEL, H200_MODEL, KernelResources, Launch, Module,
    Param, Workload,
};

/// Each thread loads `x[tid]`, uses it, loads `x[tid + 32]`, uses it: two dependent round
/// trips per warp; then it stores once.
const TWO_ROUNDS: &str = r"
.version 8.0
.target sm_80
.address_size 64
.visible .entry two_rounds(.param .u64 x, .param .u64 y)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<6>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [x];
    ld.param.u64 %rd2, [y];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    add.f32 %f2, %f1, %f1;
    ld.global.f32 %f3, [%rd4+128];
    add.f32 %f4, %f3, %f2;
    add.s64 %rd5, %rd2, %rd3;
    st.global.f32 [%rd5], %f4;
    ret;
}
";

/// The same two loads issued back to back before either is used: one round trip.
const ONE_ROUND: &str = r"
.version 8.0
.target sm_80
.address_size 64
.visible .entry one_round(.param .u64 x, .param .u64 y)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<6>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [x];
    ld.param.u64 %rd2, [y];
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd3, %r1, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f1, [%rd4];
    ld.global.f32 %f3, [%rd4+128];
    add.f32 %f2, %f1, %f1;
    add.f32 %f4, %f3, %f2;
    add.s64 %rd5, %rd2, %rd3;
    st.global.f32 [%rd5], %f4;
    ret;
}
";

fn run(ptx: &str, entry: &str, ctas: u32, threads: u32) -> ptx_emu::EmuReport {
    let n = (ctas * threads) as usize;
    let module = Module::parse(ptx).unwrap();
    let mut launch = Launch::new(entry, [ctas, 1, 1], [threads, 1, 1])
        .arg(Param::Buffer(Buffer::from_f32(&vec![1.0; n + 32])))
        .arg(Param::Buffer(Buffer::from_f32(&vec![0.0; n]).output()));
    module.launch(&mut launch).unwrap()
}

#[test]
fn dependent_loads_count_as_round_trips_and_independent_ones_do_not() {
    let two = run(TWO_ROUNDS, "two_rounds", 1, 64);
    let one = run(ONE_ROUND, "one_round", 1, 64);
    // Two warps, each waiting twice (dependent loads) or once (loads issued together).
    assert_eq!(two.load_waits, 4);
    assert_eq!(one.load_waits, 2);
    assert_eq!(two.slowest_warp_waits, 2);
    assert_eq!(one.slowest_warp_waits, 1);
    assert_eq!(two.async_waits, 0);
    // Plus one round for the stores to land.
    assert_eq!(Workload::from_report(&two).rounds, 3.0);
    assert_eq!(Workload::from_report(&one).rounds, 2.0);
    // Warps 0 and 1 issue from sub-partitions 0 and 1; the instruction counts add up.
    let per_warp = two.instructions.total() / 2;
    assert_eq!(two.subpartition_instructions, [per_warp, per_warp, 0, 0]);
    assert_eq!(two.subpartition_mma, [0; 4]);
}

#[test]
fn resources_come_from_the_launch_and_a_live_range_register_estimate() {
    let r = run(TWO_ROUNDS, "two_rounds", 1, 64);
    assert_eq!(r.resources.threads, 64);
    assert_eq!(r.resources.shared_bytes, 0);
    // At most x, y, the offset, the address (2 words each) and two f32 are live at once,
    // far below the 16 declared registers; the estimate never goes under 16.
    assert_eq!(r.resources.registers, 16);
    assert_eq!(r.resources.with_registers(40).registers, 40);
}

fn workload(ctas: f64, resources: KernelResources) -> Workload {
    Workload {
        ctas,
        resources,
        issue: 10_000.0,
        mma: 0.0,
        shared_wavefronts: 0.0,
        dram_bytes: 64.0 * 1024.0,
        rounds: 4.0,
    }
}

const SMALL: KernelResources = KernelResources {
    threads: 256,
    registers: 32,
    shared_bytes: 8 * 1024,
};

#[test]
fn occupancy_is_the_tightest_of_threads_registers_and_shared_memory() {
    let h100 = H100_MODEL;
    // 256 threads: 8 by threads; 32 registers: 8 by registers; 8 KiB + 1 KiB: 25 by shared.
    assert_eq!(h100.ctas_per_sm(&SMALL), 8);
    // 128 registers × 256 threads = 32768 of 65536: 2.
    assert_eq!(h100.ctas_per_sm(&SMALL.with_registers(128)), 2);
    // 255 registers round up to 256 per thread: one CTA of 256 threads fills the file.
    assert_eq!(h100.ctas_per_sm(&SMALL.with_registers(255)), 1);
    let big_shared = KernelResources {
        shared_bytes: 100 * 1024,
        ..SMALL
    };
    // 228 KiB on the H100 holds two 101 KiB CTAs; 164 KiB on the A100 holds one.
    assert_eq!(h100.ctas_per_sm(&big_shared), 2);
    assert_eq!(A100_MODEL.ctas_per_sm(&big_shared), 1);
    let too_big = KernelResources {
        shared_bytes: 240 * 1024,
        ..SMALL
    };
    assert_eq!(h100.ctas_per_sm(&too_big), 0);
    assert!(h100.predict(&workload(1.0, too_big)).seconds.is_infinite());
}

#[test]
fn a_grid_too_small_to_hide_latency_is_latency_bound_and_waves_add_up() {
    let m = H100_MODEL;
    let res = SMALL.with_registers(255); // one CTA per SM
    let one = m.predict(&workload(1.0, res));
    // One CTA alone: its issue (2 warps per scheduler against 4 cycles of dependent-issue
    // latency: half rate) plus 4 round trips of 1000 cycles, after the launch.
    let cycles = 10_000.0 * 2.0 + 4.0 * 1000.0;
    assert_eq!(one.bound, Bound::Latency);
    assert!((one.compute_seconds - cycles / m.clock_hz).abs() < 1e-15);
    assert!((one.seconds - (m.launch_seconds + cycles / m.clock_hz)).abs() < 1e-15);
    // A full wave of 132 CTAs costs the same as one CTA; a 133rd starts a second wave.
    let wave = m.predict(&workload(132.0, res));
    assert_eq!(wave.compute_seconds, one.compute_seconds);
    assert_eq!(wave.waves, 1.0);
    let more = m.predict(&workload(133.0, res));
    assert!((more.compute_seconds - 2.0 * one.compute_seconds).abs() < 1e-15);
    // With 8 CTAs per SM, 8 waves' worth of CTAs overlap each other's waits.
    let packed = m.predict(&workload(8.0 * 132.0, SMALL));
    assert_eq!(packed.ctas_per_sm, 8);
    // 8 CTAs x 8 warps give 16 warps per scheduler: full issue rate.
    assert!((packed.compute_seconds - 8.0 * 10_000.0 / m.clock_hz).abs() < 1e-15);
    assert_eq!(packed.bound, Bound::Issue);
}

#[test]
fn memory_time_is_the_copy_ceiling_or_what_the_grid_keeps_in_flight() {
    let m = H100_MODEL;
    let streaming = Workload {
        issue: 100.0,
        rounds: 2.0,
        ..workload(100_000.0, SMALL)
    };
    let p = m.predict(&streaming);
    assert_eq!(p.bound, Bound::Memory);
    let bytes = 100_000.0 * 64.0 * 1024.0;
    assert!((p.memory_seconds - bytes / m.hbm_copy_bytes_per_second).abs() < 1e-12);
    // The H200 streams the same bytes 4.3 / 2.807 times faster.
    let h200 = H200_MODEL.predict(&streaming);
    let ratio = p.memory_seconds / h200.memory_seconds;
    assert!((ratio - 4.3 / 2.807).abs() < 1e-9, "{ratio}");
    // Two CTAs with 32 KiB in flight each cannot cover 2.8 TB/s × 570 ns.
    let few = Workload {
        issue: 100.0,
        ..workload(2.0, SMALL)
    };
    let p = m.predict(&few);
    let in_flight = 2.0 * 64.0 * 1024.0 / 4.0;
    let expected = 2.0 * 64.0 * 1024.0 / (in_flight / m.memory_latency_seconds());
    assert!((p.memory_seconds - expected).abs() < 1e-15);
}

#[test]
fn mma_sync_rate_bounds_tensor_work() {
    let w = Workload {
        issue: 1000.0,
        mma: 10_000.0,
        rounds: 1.0,
        dram_bytes: 0.0,
        ..workload(264.0, SMALL.with_registers(128))
    };
    // Two CTAs per SM share its tensor cores: 2 × 10 000 mma at 5 cycles, which also
    // hides each CTA's single round trip.
    let p = H100_MODEL.predict(&w);
    assert_eq!(p.ctas_per_sm, 2);
    assert_eq!(p.bound, Bound::Tensor);
    let cycles = 2.0 * 10_000.0 * H100_MODEL.mma_cycles;
    assert!((p.compute_seconds - cycles / H100_MODEL.clock_hz).abs() < 1e-15);
    // The A100's mma.sync peak is its 312 TFLOP/s datasheet figure.
    assert!((A100_MODEL.mma_sync_flops() / 312e12 - 1.0).abs() < 0.001);
    assert!(H100_MODEL.mma_sync_flops() < H100_MODEL.tensor_spec_flops);
}

#[test]
fn affine_scaling_extrapolates_per_cta_counters_and_keeps_the_later_grid() {
    let at = |chunks: f64, ctas: f64| Workload {
        issue: 500.0 + 100.0 * chunks,
        mma: 8.0 * chunks,
        shared_wavefronts: 20.0 * chunks,
        dram_bytes: 1000.0 + 4096.0 * chunks,
        rounds: 1.0 + chunks,
        ..workload(ctas, SMALL)
    };
    let (a, b) = (at(2.0, 3.0), at(3.0, 3.0));
    let far = Workload::affine(&a, 2.0, &b, 3.0, 512.0);
    assert_eq!(far, at(512.0, 3.0));
    assert_eq!(far.with_ctas(4096.0).ctas, 4096.0);
    // Extrapolating down never gives negative work.
    let none = Workload::affine(&a, 2.0, &b, 3.0, -100.0);
    assert_eq!(none.issue, 0.0);
    assert_eq!(none.rounds, 1.0);
}

#[test]
fn models_are_found_by_name() {
    let names: Vec<&str> = ptx_emu::GPU_MODELS.iter().map(|m| m.name).collect();
    assert_eq!(names, ["a100", "h100", "h200"]);
    assert_eq!(GpuModel::by_name("H200"), Some(H200_MODEL));
    assert_eq!(GpuModel::by_name("v100"), None);
    // The H200 is the H100 with HBM3e.
    assert_eq!(
        GpuModel {
            name: "h100",
            label: H100_MODEL.label,
            hbm_spec_bytes_per_second: H100_MODEL.hbm_spec_bytes_per_second,
            hbm_copy_bytes_per_second: H100_MODEL.hbm_copy_bytes_per_second,
            ..H200_MODEL
        },
        H100_MODEL
    );
}
