//! `shfl.sync`, `ldmatrix`, `mma.sync` and `cp.async` against the PTX ISA's definitions.
//!
//! Layout formulas below are transcribed independently from the ISA tables (groupID =
//! lane >> 2, threadID_in_group = lane % 4) and used by the tests to place and read
//! fragments; the emulator must agree with them.
mod common;
use common::{Rng, module, run};
use half::{bf16, f16};
use ptx_emu::{Buffer, Dtype, EmuError, Param};

/// Each lane writes `shfl(value = lane * 10 + 1000)` and the predicate.
fn shfl(mode: &str, b: &str, c: &str, mask: &str, block: u32) -> Result<Vec<u32>, EmuError> {
    let src = module(
        ".param .u64 pout",
        &format!(
            "ld.param.u64 %rd1, [pout];
             mov.u32 %r1, %tid.x;
             mad.lo.u32 %r2, %r1, 10, 1000;
             shfl.sync.{mode}.b32 %r3|%p1, %r2, {b}, {c}, {mask};
             selp.u32 %r4, 1, 0, %p1;
             mul.wide.u32 %rd2, %r1, 8;
             add.s64 %rd3, %rd1, %rd2;
             st.global.v2.u32 [%rd3], {{%r3, %r4}};
             ret;"
        ),
    );
    let (_, l) = run(
        &src,
        [1, 1, 1],
        [block, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, 2 * block as usize))],
    )?;
    Ok(l.buffer(0).unwrap().to_u32())
}

fn val(lane: u32) -> u32 {
    lane * 10 + 1000
}

#[test]
fn shfl_modes_follow_the_isa_pseudocode() {
    // Full-warp forms as __shfl_*_sync(width = 32) emit them.
    let out = shfl("down", "3", "0x1f", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        let ok = l + 3 <= 31;
        assert_eq!(
            out[2 * l as usize..2 * l as usize + 2],
            [val(if ok { l + 3 } else { l }), u32::from(ok)]
        );
    }
    let out = shfl("up", "5", "0", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        let ok = l >= 5;
        assert_eq!(
            out[2 * l as usize..2 * l as usize + 2],
            [val(if ok { l - 5 } else { l }), u32::from(ok)]
        );
    }
    let out = shfl("bfly", "6", "0x1f", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        assert_eq!(out[2 * l as usize], val(l ^ 6));
    }
    let out = shfl("idx", "%r1", "0x1f", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        assert_eq!(out[2 * l as usize], val(l));
    }
    let out = shfl("idx", "7", "0x1f", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        assert_eq!(out[2 * l as usize], val(7));
    }
}

#[test]
fn shfl_segments_of_width_eight() {
    // width 8: c = ((32 - 8) << 8) | 0x1f for idx/down/bfly, (32 - 8) << 8 for up.
    let out = shfl("idx", "2", "0x181f", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        assert_eq!(out[2 * l as usize], val((l & !7) + 2), "lane {l}");
    }
    let out = shfl("down", "1", "0x181f", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        let ok = (l % 8) + 1 < 8;
        assert_eq!(
            out[2 * l as usize..2 * l as usize + 2],
            [val(if ok { l + 1 } else { l }), u32::from(ok)],
            "lane {l}"
        );
    }
    let out = shfl("up", "2", "0x1800", "0xffffffff", 32).unwrap();
    for l in 0..32u32 {
        let ok = l % 8 >= 2;
        assert_eq!(
            out[2 * l as usize..2 * l as usize + 2],
            [val(if ok { l - 2 } else { l }), u32::from(ok)],
            "lane {l}"
        );
    }
}

#[test]
fn shfl_in_a_partial_warp_names_only_live_lanes() {
    // 16 threads: lanes 16..31 never exist, a full mask is still fine (they count as exited).
    let out = shfl("bfly", "1", "0x1f", "0xffffffff", 16).unwrap();
    for l in 0..16u32 {
        assert_eq!(out[2 * l as usize], val(l ^ 1));
    }
}

#[test]
fn divergent_shfl_is_caught() {
    let src = module(
        "",
        "mov.u32 %r1, %tid.x;
         setp.lt.u32 %p1, %r1, 16;
         @%p1 bra SKIP;
         shfl.sync.bfly.b32 %r2, %r1, 1, 0x1f, 0xffffffff;
     SKIP:
         ret;",
    );
    match run(&src, [1, 1, 1], [32, 1, 1], vec![]).unwrap_err() {
        EmuError::DivergentCollective {
            site,
            needed,
            active,
        } => {
            assert_eq!(needed, u32::MAX);
            assert_eq!(active, 0xffff_0000);
            assert_eq!(site.thread, [16, 0, 0]);
        }
        other => panic!("unexpected {other}"),
    }
    // The same with a matching mask is fine.
    let ok = src.replace("0x1f, 0xffffffff", "0x1f, 0xffff0000");
    run(&ok, [1, 1, 1], [32, 1, 1], vec![]).unwrap();
}

#[test]
fn vote_and_activemask() {
    // Lanes 0..20 run; predicate = lane is odd.
    let src = module(
        ".param .u64 pout",
        "ld.param.u64 %rd1, [pout];
         mov.u32 %r1, %tid.x;
         setp.ge.u32 %p3, %r1, 20;
         @%p3 bra END;
         and.b32 %r2, %r1, 1;
         setp.eq.u32 %p1, %r2, 1;
         vote.sync.ballot.b32 %r3, %p1, 0x000fffff;
         vote.sync.any.pred %p2, !%p1, 0x000fffff;
         selp.u32 %r4, 1, 0, %p2;
         vote.sync.all.pred %p2, %p1, 0x000fffff;
         selp.u32 %r5, 1, 0, %p2;
         activemask.b32 %r6;
         mul.wide.u32 %rd2, %r1, 16;
         add.s64 %rd3, %rd1, %rd2;
         st.global.v4.u32 [%rd3], {%r3, %r4, %r5, %r6};
     END:
         ret;",
    );
    let (_, l) = run(
        &src,
        [1, 1, 1],
        [32, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, 128))],
    )
    .unwrap();
    let out = l.buffer(0).unwrap().to_u32();
    for lane in 0..20 {
        assert_eq!(
            out[lane * 4..lane * 4 + 4],
            [0x000a_aaaa, 1, 0, 0x000f_ffff],
            "lane {lane}"
        );
    }
    // A full mask while lanes 20..31 are elsewhere (not exited) is divergent.
    let bad = src
        .replace("@%p3 bra END;", "@%p3 bra SKIP;")
        .replace("END:", "SKIP: bar.sync 0;\n END:")
        .replace(
            "vote.sync.ballot.b32 %r3, %p1, 0x000fffff;",
            "vote.sync.ballot.b32 %r3, %p1, 0xffffffff;",
        );
    assert!(matches!(
        run(
            &bad,
            [1, 1, 1],
            [32, 1, 1],
            vec![Param::Buffer(Buffer::zeros(Dtype::U32, 128))]
        ),
        Err(EmuError::DivergentCollective { .. })
    ));
}

// ---- mma.m16n8k16 ----------------------------------------------------------------------

/// ISA: A fragment element i of lane → (row, col).
fn a_coord(lane: usize, i: usize) -> (usize, usize) {
    let (g, q) = (lane >> 2, lane % 4);
    let row = if i < 2 || (4..6).contains(&i) {
        g
    } else {
        g + 8
    };
    let col = q * 2 + (i & 1) + if i >= 4 { 8 } else { 0 };
    (row, col)
}
/// ISA: B fragment element i → (row k, col n).
fn b_coord(lane: usize, i: usize) -> (usize, usize) {
    let (g, q) = (lane >> 2, lane % 4);
    (q * 2 + (i & 1) + if i >= 2 { 8 } else { 0 }, g)
}
/// ISA: C/D fragment element i → (row, col).
fn c_coord(lane: usize, i: usize) -> (usize, usize) {
    let (g, q) = (lane >> 2, lane % 4);
    (if i < 2 { g } else { g + 8 }, q * 2 + (i & 1))
}

const MMA_KERNEL: &str = "
    ld.param.u64 %rd1, [pa];      // [32 lanes][4] b32 A fragments
    ld.param.u64 %rd2, [pb];      // [32][2] B fragments
    ld.param.u64 %rd3, [pc];      // [32][4] f32 C fragments
    ld.param.u64 %rd4, [pd];      // [32][4] f32 D fragments
    mov.u32 %r1, %tid.x;
    mul.wide.u32 %rd5, %r1, 16;
    mul.wide.u32 %rd6, %r1, 8;
    add.s64 %rd7, %rd1, %rd5;
    add.s64 %rd8, %rd2, %rd6;
    add.s64 %rd9, %rd3, %rd5;
    add.s64 %rd10, %rd4, %rd5;
    ld.global.v4.b32 {%r2, %r3, %r4, %r5}, [%rd7];
    ld.global.v2.b32 {%r6, %r7}, [%rd8];
    ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd9];
    mma.sync.aligned.m16n8k16.row.col.f32.TY.TY.f32 {%f5, %f6, %f7, %f8}, {%r2, %r3, %r4, %r5}, {%r6, %r7}, {%f1, %f2, %f3, %f4};
    st.global.v4.f32 [%rd10], {%f5, %f6, %f7, %f8};
    ret;";

fn mma_case(ty: &str, to16: fn(f32) -> u16, from16: fn(u16) -> f32) {
    let mut rng = Rng(99);
    // Small integers and halves: every product and partial sum is exact in f32.
    let mut a = [[0f32; 16]; 16];
    let mut b = [[0f32; 8]; 16];
    let mut c = [[0f32; 8]; 16];
    for r in 0..16 {
        for k in 0..16 {
            a[r][k] = from16(to16(((rng.next_u32() % 17) as f32 - 8.0) * 0.5));
        }
        for n in 0..8 {
            c[r][n] = (rng.next_u32() % 100) as f32 - 50.0;
        }
    }
    for row in &mut b {
        for v in row.iter_mut() {
            *v = from16(to16((rng.next_u32() % 9) as f32 - 4.0));
        }
    }
    let mut fa = vec![0u32; 32 * 4];
    let mut fb = vec![0u32; 32 * 2];
    let mut fc = vec![0f32; 32 * 4];
    for lane in 0..32 {
        for i in 0..8 {
            let (r, k) = a_coord(lane, i);
            fa[lane * 4 + i / 2] |= (to16(a[r][k]) as u32) << (16 * (i % 2));
        }
        for i in 0..4 {
            let (k, n) = b_coord(lane, i);
            fb[lane * 2 + i / 2] |= (to16(b[k][n]) as u32) << (16 * (i % 2));
        }
        for i in 0..4 {
            let (r, n) = c_coord(lane, i);
            fc[lane * 4 + i] = c[r][n];
        }
    }
    let src = module(
        ".param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u64 pd",
        &MMA_KERNEL.replace("TY", ty),
    );
    let (report, l) = run(
        &src,
        [1, 1, 1],
        [32, 1, 1],
        vec![
            Param::Buffer(Buffer::from_u32(&fa)),
            Param::Buffer(Buffer::from_u32(&fb)),
            Param::Buffer(Buffer::from_f32(&fc)),
            Param::Buffer(Buffer::zeros(Dtype::F32, 128)),
        ],
    )
    .unwrap();
    let d = l.buffer(3).unwrap().to_f32();
    for lane in 0..32 {
        for i in 0..4 {
            let (r, n) = c_coord(lane, i);
            let want: f32 = c[r][n] + (0..16).map(|k| a[r][k] * b[k][n]).sum::<f32>();
            assert_eq!(
                d[lane * 4 + i],
                want,
                "{ty} D[{r}][{n}] lane {lane} elem {i}"
            );
        }
    }
    assert_eq!(report.instructions.mma, 1);
    assert_eq!(report.mma_flops, 4096);
}

#[test]
fn mma_m16n8k16_f16_matches_a_matmul_through_the_isa_fragment_layout() {
    mma_case(
        "f16",
        |x| f16::from_f32(x).to_bits(),
        |b| f16::from_bits(b).to_f32(),
    );
}

#[test]
fn mma_m16n8k16_bf16_matches_a_matmul_through_the_isa_fragment_layout() {
    mma_case(
        "bf16",
        |x| bf16::from_f32(x).to_bits(),
        |b| bf16::from_bits(b).to_f32(),
    );
}

#[test]
fn mma_in_a_divergent_warp_is_caught() {
    let src = module(
        "",
        "mov.u32 %r1, %tid.x;
         setp.eq.u32 %p1, %r1, 3;
         @%p1 bra SKIP;
         mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f5, %f6, %f7, %f8}, {%r2, %r3, %r4, %r5}, {%r6, %r7}, {%f1, %f2, %f3, %f4};
     SKIP:
         ret;",
    );
    let err = run(&src, [1, 1, 1], [32, 1, 1], vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            EmuError::DivergentCollective {
                active: 0xffff_fff7,
                ..
            }
        ),
        "{err}"
    );
}

// ---- ldmatrix ---------------------------------------------------------------------------

/// Shared holds 4 row-major 8×8 b16 matrices, element (m, r, c) = m*64 + r*8 + c, rows 16 B
/// apart. Lane l gives the address of row (l % 8) of matrix (l / 8); each lane writes what
/// it received.
fn ldmatrix(num: usize, trans: bool) -> Vec<u32> {
    let regs = ["%r10", "%r11", "%r12", "%r13"][..num].join(", ");
    let src = module(
        ".param .u64 pin, .param .u64 pout",
        &format!(
            ".shared .align 16 .b8 smem[512];
             ld.param.u64 %rd1, [pin];
             ld.param.u64 %rd2, [pout];
             mov.u32 %r1, %tid.x;
             // Copy 512 bytes into shared: 16 bytes per lane.
             mul.wide.u32 %rd3, %r1, 16;
             add.s64 %rd4, %rd1, %rd3;
             ld.global.v4.b32 {{%r2, %r3, %r4, %r5}}, [%rd4];
             mov.u32 %r6, smem;
             mul.lo.u32 %r7, %r1, 16;
             add.u32 %r8, %r6, %r7;
             st.shared.v4.b32 [%r8], {{%r2, %r3, %r4, %r5}};
             bar.sync 0;
             ldmatrix.sync.aligned.m8n8.x{num}{}.shared.b16 {{{regs}}}, [%r8];
             mul.wide.u32 %rd5, %r1, 16;
             add.s64 %rd6, %rd2, %rd5;
             st.global.v4.b32 [%rd6], {{%r10, %r11, %r12, %r13}};
             ret;",
            if trans { ".trans" } else { "" }
        ),
    );
    let elems: Vec<u32> = (0..128u32).map(|i| (2 * i) | ((2 * i + 1) << 16)).collect();
    let (r, l) = run(
        &src,
        [1, 1, 1],
        [32, 1, 1],
        vec![
            Param::Buffer(Buffer::from_u32(&elems)),
            Param::Buffer(Buffer::zeros(Dtype::U32, 128)),
        ],
    )
    .unwrap();
    // Each matrix: 8 rows × 16 contiguous bytes = conflict-free.
    assert_eq!(r.shared_bank_conflicts, 0);
    l.buffer(1).unwrap().to_u32()
}

#[test]
fn ldmatrix_gives_each_lane_the_isa_fragment() {
    for num in [1, 2, 4] {
        let out = ldmatrix(num, false);
        for lane in 0..32usize {
            for m in 0..num {
                // ISA: lane holds row lane/4, columns 2*(lane%4) and +1.
                let (r, c) = (lane / 4, 2 * (lane % 4));
                let e = |c: usize| (m * 64 + r * 8 + c) as u32;
                assert_eq!(
                    out[lane * 4 + m],
                    e(c) | (e(c + 1) << 16),
                    "x{num} lane {lane} matrix {m}"
                );
            }
        }
    }
}

#[test]
fn ldmatrix_trans_gives_each_lane_a_column_pair() {
    for num in [1, 2, 4] {
        let out = ldmatrix(num, true);
        for lane in 0..32usize {
            for m in 0..num {
                let (c, r) = (lane / 4, 2 * (lane % 4));
                let e = |r: usize| (m * 64 + r * 8 + c) as u32;
                assert_eq!(
                    out[lane * 4 + m],
                    e(r) | (e(r + 1) << 16),
                    "x{num}.trans lane {lane} matrix {m}"
                );
            }
        }
    }
}

#[test]
fn ldmatrix_then_mma_multiplies_row_major_tiles() {
    // The conventional pairing: A (16×16, row-major) via ldmatrix.x4, B (16×8 stored k-major
    // row-major [k][n]) via ldmatrix.x2.trans, D via the C layout.
    let mut rng = Rng(7);
    let a: Vec<f32> = (0..256)
        .map(|_| ((rng.next_u32() % 9) as f32 - 4.0) * 0.25)
        .collect();
    let b: Vec<f32> = (0..128)
        .map(|_| (rng.next_u32() % 7) as f32 - 3.0)
        .collect();
    let a16: Vec<f16> = a.iter().map(|&x| f16::from_f32(x)).collect();
    let b16: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
    let src = module(
        ".param .u64 pa, .param .u64 pb, .param .u64 pd",
        ".shared .align 16 .b8 sA[512];
         .shared .align 16 .b8 sB[256];
         ld.param.u64 %rd1, [pa];
         ld.param.u64 %rd2, [pb];
         ld.param.u64 %rd3, [pd];
         mov.u32 %r1, %tid.x;
         // Stage A (512 B) and B (256 B) in shared with cp.async, 16 B per lane per copy.
         mov.u32 %r2, sA;
         mov.u32 %r3, sB;
         mul.lo.u32 %r4, %r1, 16;
         mul.wide.u32 %rd4, %r1, 16;
         add.u32 %r5, %r2, %r4;
         add.s64 %rd5, %rd1, %rd4;
         cp.async.cg.shared.global [%r5], [%rd5], 16;
         setp.lt.u32 %p1, %r1, 16;
         add.u32 %r6, %r3, %r4;
         add.s64 %rd6, %rd2, %rd4;
         @%p1 cp.async.ca.shared.global [%r6], [%rd6], 16;
         cp.async.commit_group;
         cp.async.wait_group 0;
         bar.sync 0;
         // A: lane l -> row l % 16, column block (l / 16) * 8.
         and.b32 %r7, %r1, 15;
         shr.u32 %r8, %r1, 4;
         mul.lo.u32 %r9, %r7, 32;
         mad.lo.u32 %r9, %r8, 16, %r9;
         add.u32 %r10, %r2, %r9;
         ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r20, %r21, %r22, %r23}, [%r10];
         // B: lane l (< 16) -> row k = l, 16 bytes per row.
         mad.lo.u32 %r11, %r7, 16, %r3;
         ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%r24, %r25}, [%r11];
         mov.f32 %f1, 0f00000000;
         mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f5, %f6, %f7, %f8}, {%r20, %r21, %r22, %r23}, {%r24, %r25}, {%f1, %f1, %f1, %f1};
         mul.wide.u32 %rd7, %r1, 16;
         add.s64 %rd8, %rd3, %rd7;
         st.global.v4.f32 [%rd8], {%f5, %f6, %f7, %f8};
         ret;",
    );
    let (report, l) = run(
        &src,
        [1, 1, 1],
        [32, 1, 1],
        vec![
            Param::Buffer(Buffer::from_f16(&a16)),
            Param::Buffer(Buffer::from_f16(&b16)),
            Param::Buffer(Buffer::zeros(Dtype::F32, 128)),
        ],
    )
    .unwrap();
    let d = l.buffer(2).unwrap().to_f32();
    for lane in 0..32 {
        for i in 0..4 {
            let (r, n) = c_coord(lane, i);
            let want: f32 = (0..16).map(|k| a[r * 16 + k] * b[k * 8 + n]).sum();
            assert_eq!(d[lane * 4 + i], want, "D[{r}][{n}]");
        }
    }
    assert_eq!(report.global_bytes_read, 512 + 256);
}

#[test]
fn cp_async_lands_only_at_wait() {
    // Reading the destination before waiting sees the old (zero) bytes; after waiting, the
    // copy. src-size 2 of 4 zero-fills the tail.
    let src = module(
        ".param .u64 pin, .param .u64 pout",
        ".shared .align 16 .b8 smem[256];
         ld.param.u64 %rd1, [pin];
         ld.param.u64 %rd2, [pout];
         mov.u32 %r1, %tid.x;
         mul.lo.u32 %r2, %r1, 4;
         mov.u32 %r3, smem;
         add.u32 %r4, %r3, %r2;
         mul.wide.u32 %rd3, %r1, 4;
         add.s64 %rd4, %rd1, %rd3;
         cp.async.ca.shared.global [%r4], [%rd4], 4, 2;
         cp.async.commit_group;
         ld.shared.u32 %r5, [%r4];
         cp.async.wait_all;
         ld.shared.u32 %r6, [%r4];
         mul.wide.u32 %rd5, %r1, 8;
         add.s64 %rd6, %rd2, %rd5;
         st.global.v2.u32 [%rd6], {%r5, %r6};
         ret;",
    );
    let input: Vec<u32> = (0..32).map(|i| 0xabcd_0000 | i).collect();
    let (_, l) = run(
        &src,
        [1, 1, 1],
        [32, 1, 1],
        vec![
            Param::Buffer(Buffer::from_u32(&input)),
            Param::Buffer(Buffer::zeros(Dtype::U32, 64)),
        ],
    )
    .unwrap();
    let out = l.buffer(1).unwrap().to_u32();
    for i in 0..32 {
        assert_eq!(out[2 * i], 0);
        assert_eq!(out[2 * i + 1], i as u32);
    }
}
