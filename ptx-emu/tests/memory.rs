//! Loads and stores in every space, and the bounds / alignment / write-permission checks,
//! plus the coalescing and bank-conflict counters.
mod common;
use common::{module, run};
use ptx_emu::{AccessKind, Buffer, Dtype, EmuError, Param};

const PROLOGUE: &str = "
    ld.param.u64 %rd1, [pin];
    ld.param.u64 %rd2, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    mov.u32 %r1, %tid.x;
";

fn io(body: &str) -> String {
    module(
        ".param .u64 pin, .param .u64 pout",
        &format!("{PROLOGUE}{body}\n    ret;"),
    )
}

#[allow(clippy::needless_pass_by_value)] // call sites build the input inline
fn run_io(
    body: &str,
    input: Vec<f32>,
    out_len: usize,
    block: u32,
) -> Result<(ptx_emu::EmuReport, Vec<f32>), EmuError> {
    let (r, l) = run(
        &io(body),
        [1, 1, 1],
        [block, 1, 1],
        vec![
            Param::Buffer(Buffer::from_f32(&input)),
            Param::Buffer(Buffer::zeros(Dtype::F32, out_len)),
        ],
    )?;
    Ok((r, l.buffer(1).unwrap().to_f32()))
}

const INDEX4: &str =
    "mul.wide.u32 %rd3, %r1, 4; add.s64 %rd4, %rd1, %rd3; add.s64 %rd5, %rd2, %rd3;";

#[test]
fn vector_loads_and_stores_move_four_elements() {
    let input: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let (r, out) = run_io(
        "mul.wide.u32 %rd3, %r1, 16; add.s64 %rd4, %rd1, %rd3; add.s64 %rd5, %rd2, %rd3;
         ld.global.nc.v4.f32 {%f1, %f2, %f3, %f4}, [%rd4];
         st.global.v4.f32 [%rd5], {%f4, %f3, %f2, %f1};",
        input.clone(),
        128,
        32,
    )
    .unwrap();
    for i in 0..32 {
        assert_eq!(
            out[4 * i..4 * i + 4],
            [
                input[4 * i + 3],
                input[4 * i + 2],
                input[4 * i + 1],
                input[4 * i]
            ]
        );
    }
    // 512 contiguous bytes per warp request = 16 sectors each way.
    assert_eq!(r.global_requests, 2);
    assert_eq!(r.global_sectors, 32);
    assert_eq!(r.global_bytes_read, 512);
    assert_eq!(r.global_bytes_written, 512);
}

#[test]
fn strided_access_costs_one_sector_per_lane() {
    let (r, _) = run_io(
        "mul.wide.u32 %rd3, %r1, 128; add.s64 %rd4, %rd1, %rd3; ld.global.f32 %f1, [%rd4];
         mul.wide.u32 %rd3, %r1, 4; add.s64 %rd5, %rd2, %rd3; st.global.f32 [%rd5], %f1;",
        vec![1.0; 32 * 32],
        32,
        32,
    )
    .unwrap();
    assert_eq!(r.global_sectors, 32 + 4);
    assert!((r.sectors_per_request - 18.0).abs() < 1e-12);
}

#[test]
fn out_of_bounds_global_store_is_caught_with_its_thread() {
    // 33 threads write a 32-element buffer.
    let err = run_io(
        &format!("{INDEX4} st.global.f32 [%rd5], %f1;"),
        vec![0.0; 64],
        32,
        33,
    )
    .unwrap_err();
    match err {
        EmuError::GlobalOutOfBounds {
            site, kind, size, ..
        } => {
            assert_eq!(site.thread, [32, 0, 0]);
            assert_eq!(kind, AccessKind::Write);
            assert_eq!(size, 4);
            assert_eq!(site.kernel, "k");
            assert!(site.instruction.starts_with("st.global.f32"));
        }
        other => panic!("unexpected {other}"),
    }
    // Reading one element before a buffer is caught too (the guard gap is unmapped).
    let err = run_io("ld.global.f32 %f1, [%rd1+-4];", vec![0.0; 4], 4, 1).unwrap_err();
    assert!(
        matches!(
            err,
            EmuError::GlobalOutOfBounds {
                kind: AccessKind::Read,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn misaligned_access_is_caught() {
    let err = run_io("ld.global.f32 %f1, [%rd1+2];", vec![0.0; 4], 4, 1).unwrap_err();
    assert!(matches!(err, EmuError::Misaligned { size: 4, .. }), "{err}");
    let err = run_io(
        "ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd1+4];",
        vec![0.0; 8],
        4,
        1,
    )
    .unwrap_err();
    assert!(
        matches!(err, EmuError::Misaligned { size: 16, .. }),
        "{err}"
    );
}

#[test]
fn stores_into_inputs_are_caught() {
    let err = run_io(
        &format!("{INDEX4} st.global.f32 [%rd4], %f1;"),
        vec![0.0; 32],
        32,
        32,
    )
    .unwrap_err();
    assert!(
        matches!(err, EmuError::WriteToInput { param: 0, .. }),
        "{err}"
    );
}

#[test]
fn non_coherent_reads_of_a_written_buffer_are_caught() {
    // Thread i reads out[i] through the read-only path and writes out[i] + 1: the ISA
    // requires .nc data to stay unchanged for the whole launch.
    let src = io(&format!(
        "{INDEX4} ld.global.nc.f32 %f1, [%rd5]; add.f32 %f1, %f1, 0f3F800000; st.global.f32 [%rd5], %f1;"
    ));
    let err = run(
        &src,
        [1, 1, 1],
        [32, 1, 1],
        vec![
            Param::Buffer(Buffer::from_f32(&[0.0; 32])),
            Param::Buffer(Buffer::zeros(Dtype::F32, 32)),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(err, EmuError::NonCoherentWrittenBuffer { param: 1, .. }),
        "{err}"
    );
    // The coherent load of the same data is fine.
    let ok = src.replace("ld.global.nc.f32", "ld.global.f32");
    run(
        &ok,
        [1, 1, 1],
        [32, 1, 1],
        vec![
            Param::Buffer(Buffer::from_f32(&[0.0; 32])),
            Param::Buffer(Buffer::zeros(Dtype::F32, 32)),
        ],
    )
    .unwrap();
}

#[test]
fn failed_launch_leaves_buffers_unchanged() {
    let src = io(&format!(
        "{INDEX4} mov.f32 %f1, 0f40000000; st.global.f32 [%rd5], %f1;"
    ));
    let m = ptx_emu::Module::parse(&src).unwrap();
    let mut l = ptx_emu::Launch::new("k", [1, 1, 1], [40, 1, 1])
        .arg(Param::Buffer(Buffer::from_f32(&[0.0; 40])))
        .arg(Param::Buffer(Buffer::from_f32(&[7.0; 32]).output()));
    assert!(m.launch(&mut l).is_err());
    assert_eq!(l.buffer(1).unwrap().to_f32(), vec![7.0; 32]);
}

#[test]
fn shared_memory_round_trip_and_out_of_bounds() {
    let body = |off: &str| {
        format!(
            ".shared .align 16 .b8 smem[128];
             {INDEX4}
             ld.global.f32 %f1, [%rd4];
             mul.wide.u32 %rd6, %r1, 4;
             mov.u64 %rd7, smem;
             add.s64 %rd8, %rd7, %rd6;
             st.shared.f32 [%rd8{off}], %f1;
             bar.sync 0;
             xor.b32 %r5, %r1, 31;
             mul.wide.u32 %rd9, %r5, 4;
             add.s64 %rd10, %rd7, %rd9;
             ld.shared.f32 %f2, [%rd10];
             st.global.f32 [%rd5], %f2;"
        )
    };
    let input: Vec<f32> = (0..32).map(|i| i as f32 * 1.5).collect();
    let (r, out) = run_io(&body(""), input.clone(), 32, 32).unwrap();
    for i in 0..32 {
        assert_eq!(out[i], input[i ^ 31]);
    }
    assert_eq!(r.barriers, 1);
    assert_eq!(r.shared_bank_conflicts, 0);
    assert_eq!(r.shared_uninit_reads, 0);
    let err = run_io(&body("+4"), input, 32, 32).unwrap_err();
    match err {
        EmuError::SharedOutOfBounds {
            site,
            offset,
            shared_bytes,
            ..
        } => {
            assert_eq!(site.thread, [31, 0, 0]);
            assert_eq!(offset, 128);
            assert_eq!(shared_bytes, 128);
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn dynamic_shared_memory_is_sized_by_the_launch() {
    let src = module(
        ".param .u64 pout",
        ".extern .shared .align 16 .b8 dsmem[];
         ld.param.u64 %rd2, [pout];
         mov.u32 %r1, %tid.x;
         mul.wide.u32 %rd6, %r1, 4;
         mov.u64 %rd7, dsmem;
         add.s64 %rd8, %rd7, %rd6;
         st.shared.u32 [%rd8], %r1;
         bar.sync 0;
         ld.shared.u32 %r2, [%rd8];
         add.s64 %rd9, %rd2, %rd6;
         st.global.u32 [%rd9], %r2;
         ret;",
    );
    let m = ptx_emu::Module::parse(&src).unwrap();
    let mk = |dyn_bytes| {
        ptx_emu::Launch::new("k", [1, 1, 1], [64, 1, 1])
            .arg(Param::Buffer(Buffer::zeros(Dtype::U32, 64)))
            .dynamic_shared(dyn_bytes)
    };
    let mut ok = mk(256);
    m.launch(&mut ok).unwrap();
    assert_eq!(
        ok.buffer(0).unwrap().to_u32(),
        (0..64).collect::<Vec<u32>>()
    );
    let err = m.launch(&mut mk(128)).unwrap_err();
    assert!(matches!(err, EmuError::SharedOutOfBounds { .. }), "{err}");
}

#[test]
fn bank_conflicts_are_counted() {
    // Stride-32 words: all 32 lanes hit bank 0 → 32 wavefronts, 31 extra.
    let src = module(
        "",
        ".shared .align 4 .b8 smem[4096];
         mov.u32 %r1, %tid.x;
         mul.lo.u32 %r2, %r1, 128;
         mov.u32 %r3, smem;
         add.u32 %r4, %r3, %r2;
         st.shared.u32 [%r4], %r1;
         ret;",
    );
    let (r, _) = run(&src, [1, 1, 1], [32, 1, 1], vec![]).unwrap();
    assert_eq!(r.shared_requests, 1);
    assert_eq!(r.shared_wavefronts, 32);
    assert_eq!(r.shared_bank_conflicts, 31);
}

#[test]
fn local_memory_is_private_per_thread() {
    let (_, out) = run_io(
        &format!(
            ".local .align 4 .b8 scratch[16];
             {INDEX4}
             cvt.rn.f32.u32 %f1, %r1;
             st.local.f32 [scratch+8], %f1;
             bar.sync 0;
             ld.local.f32 %f2, [scratch+8];
             st.global.f32 [%rd5], %f2;"
        ),
        vec![0.0; 32],
        32,
        32,
    )
    .unwrap();
    assert_eq!(out, (0..32).map(|i| i as f32).collect::<Vec<_>>());
}

#[test]
fn generic_addresses_reach_shared_and_global() {
    let (_, out) = run_io(
        &format!(
            ".shared .align 4 .b8 smem[128];
             {INDEX4}
             mov.u64 %rd6, smem;
             cvta.shared.u64 %rd7, %rd6;
             mul.wide.u32 %rd8, %r1, 4;
             add.s64 %rd9, %rd7, %rd8;
             ld.f32 %f1, [%rd4];
             add.f32 %f1, %f1, 0f3F800000;
             st.f32 [%rd9], %f1;
             ld.f32 %f2, [%rd9];
             st.f32 [%rd5], %f2;"
        ),
        (0..32).map(|i| i as f32).collect(),
        32,
        32,
    )
    .unwrap();
    assert_eq!(out, (1..33).map(|i| i as f32).collect::<Vec<_>>());
}

#[test]
fn atomics_accumulate_across_blocks() {
    let src = module(
        ".param .u64 pout",
        "ld.param.u64 %rd1, [pout];
         mov.u32 %r1, %tid.x;
         cvt.rn.f32.u32 %f1, %r1;
         red.global.add.f32 [%rd1], %f1;
         atom.global.add.u32 %r2, [%rd1+4], 1;
         ret;",
    );
    let (r, l) = run(
        &src,
        [4, 1, 1],
        [64, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::F32, 2))],
    )
    .unwrap();
    let out = l.buffer(0).unwrap();
    // Sums of small integers are exact in f32 whatever the order.
    assert_eq!(out.to_f32()[0], 4.0 * (0..64).sum::<u32>() as f32);
    assert_eq!(out.to_u32()[1], 256);
    assert_eq!(r.instructions.atomic, 2 * 4 * 2);
}

#[test]
fn reads_of_never_written_shared_bytes_are_counted() {
    // Threads store words 0..32 of a 64-word tile, then every thread reads word t + 16:
    // threads 16..31 read words 32..47, which nothing wrote (one counted read each).
    let src = io(&format!(
        ".shared .align 16 .b8 smem[256];
         {INDEX4}
         ld.global.f32 %f1, [%rd4];
         mul.wide.u32 %rd6, %r1, 4;
         mov.u64 %rd7, smem;
         add.s64 %rd8, %rd7, %rd6;
         st.shared.f32 [%rd8], %f1;
         bar.sync 0;
         ld.shared.f32 %f2, [%rd8+64];
         st.global.f32 [%rd5], %f2;"
    ));
    let m = ptx_emu::Module::parse(&src).unwrap();
    let mut l = ptx_emu::Launch::new("k", [2, 1, 1], [32, 1, 1])
        .arg(Param::Buffer(Buffer::from_f32(&[1.0; 64])))
        .arg(Param::Buffer(Buffer::from_f32(&[0.0; 64]).output()));
    let r = m.launch(&mut l).unwrap();
    assert_eq!(r.shared_uninit_reads, 2 * 16);
}
