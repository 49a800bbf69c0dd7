//! The tensor-core DSL ops — `mma.sync.aligned.m16n8k16`, `ldmatrix`, `cp.async` and its
//! group commit/wait — emit the expected text, assemble with ptxas for sm_80 and sm_90, and
//! compute the right product in the emulator with the fragment addressing the chunkwise
//! kernel uses (row-major A by `ldmatrix`, B from `[n][k]` by `ldmatrix` and from `[k][n]`
//! by `ldmatrix.trans`).

use half::f16;
use kernel_gen::dsl::{Address, Axis, CpAsyncCache, KernelBuilder, Space, Sreg, Ty};
use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Module, Param};
use kernel_gen::ptxas::{assemble, find_ptxas};
use kernel_gen::{Arch, GenError};

fn assemble_both(ptx_for: impl Fn(Arch) -> String) {
    let Some(p) = find_ptxas() else {
        eprintln!("notice: ptxas not found (RETENTION_PTXAS / PATH); syntax not assembled");
        return;
    };
    for arch in Arch::ALL {
        let ptx = ptx_for(arch);
        if let Err(e) = assemble(&p, &ptx, arch) {
            panic!("ptxas rejected the {arch} module: {e}\n{ptx}");
        }
    }
}

fn text_kernel(arch: Arch) -> (String, Vec<String>) {
    let mut kb = KernelBuilder::new("tc_text", arch);
    let mut want = Vec::new();
    let p = kb.param("p_x", Ty::U64);
    let g = kb.global_ptr(&p);
    let s = kb.shared_array("s_tile", 1024, 128, "test tile");
    let base = kb.shared_addr(&s);
    let n = kb.mov(Ty::U32, 8u32);
    kb.cp_async(
        CpAsyncCache::Ca,
        4,
        Address::reg(base, 0),
        Address::reg(g, 0),
        None,
    );
    kb.cp_async(
        CpAsyncCache::Ca,
        8,
        Address::reg(base, 8),
        Address::reg(g, 8),
        None,
    );
    kb.cp_async(
        CpAsyncCache::Cg,
        16,
        Address::reg(base, 16),
        Address::reg(g, 16),
        Some(n.into()),
    );
    kb.cp_async_commit();
    kb.cp_async_wait(0);
    want.push(format!("cp.async.ca.shared.global [{base}], [{g}], 4;"));
    want.push(format!("cp.async.ca.shared.global [{base}+8], [{g}+8], 8;"));
    want.push(format!(
        "cp.async.cg.shared.global [{base}+16], [{g}+16], 16, {n};"
    ));
    want.push("cp.async.commit_group;".into());
    want.push("cp.async.wait_group 0;".into());
    kb.bar_sync(0);
    let a = kb.warp_ldmatrix(4, false, Ty::F16x2, Address::reg(base, 0));
    let b = kb.warp_ldmatrix(2, true, Ty::F16x2, Address::reg(base, 512));
    let one = kb.warp_ldmatrix(1, false, Ty::Bf16x2, Address::reg(base, 256));
    let ub = kb.warp_ldmatrix(4, true, Ty::Bf16x2, Address::reg(base, 128));
    let raw = kb.warp_ldmatrix(2, true, Ty::U32, Address::reg(base, 640));
    want.push(format!(
        "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {{{}, {}}}, [{base}+640];",
        raw[0], raw[1]
    ));
    want.push(format!(
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{}, {}, {}, {}}}, [{base}];",
        a[0], a[1], a[2], a[3]
    ));
    want.push(format!(
        "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {{{}, {}}}, [{base}+512];",
        b[0], b[1]
    ));
    want.push(format!(
        "ldmatrix.sync.aligned.m8n8.x1.shared.b16 {{{}}}, [{base}+256];",
        one[0]
    ));
    let zero: [_; 4] = std::array::from_fn(|_| kb.mov(Ty::F32, 0.0f32));
    let d = kb.warp_mma_m16n8k16(Ty::F16, [a[0], a[1], a[2], a[3]], [b[0], b[1]], zero);
    want.push(format!(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{}, {}, {}, {}}}, {{{}, {}, {}, {}}}, {{{}, {}}}, {{{}, {}, {}, {}}};",
        d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], b[0], b[1], zero[0], zero[1], zero[2],
        zero[3]
    ));
    kb.warp_mma_m16n8k16_into(
        Ty::Bf16,
        d,
        [ub[0], ub[1], ub[2], ub[3]],
        [one[0], one[0]],
        d,
    );
    want.push(format!(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{}, {}, {}, {}}}, {{{}, {}, {}, {}}}, {{{}, {}}}, {{{}, {}, {}, {}}};",
        d[0], d[1], d[2], d[3], ub[0], ub[1], ub[2], ub[3], one[0], one[0], d[0], d[1], d[2], d[3]
    ));
    let sum = kb.add(d[0], d[3]);
    kb.st(Space::Global, Address::reg(g, 0), sum);
    kb.ret();
    (kb.finish().expect("kernel builds").to_ptx(), want)
}

#[test]
fn tensor_core_ops_emit_exact_text_and_assemble() {
    for arch in Arch::ALL {
        let (ptx, want) = text_kernel(arch);
        for w in &want {
            assert!(
                ptx.lines().any(|l| l.trim() == w.as_str()),
                "missing `{w}` in\n{ptx}"
            );
        }
    }
    assemble_both(|arch| text_kernel(arch).0);
}

fn dsl_error(build: impl FnOnce(&mut KernelBuilder)) -> String {
    let mut kb = KernelBuilder::new("bad", Arch::Sm80);
    build(&mut kb);
    match kb.finish() {
        Err(GenError::Dsl { message, .. }) => message,
        other => panic!("expected a DSL error, got {other:?}"),
    }
}

#[test]
fn ill_formed_tensor_core_calls_are_typed_errors() {
    let m = dsl_error(|kb| {
        let f = kb.mov(Ty::F32, 0.0f32);
        let u = kb.mov(Ty::U32, 0u32);
        kb.warp_mma_m16n8k16(Ty::F16, [u; 4], [u; 2], [f; 4]);
    });
    assert!(m.contains("packed"), "{m}");
    let m = dsl_error(|kb| {
        let u = kb.mov(Ty::U32, 0u32);
        kb.warp_mma_m16n8k16(Ty::F32, [u; 4], [u; 2], [u; 4]);
    });
    assert!(m.contains("not f16/bf16"), "{m}");
    let m = dsl_error(|kb| {
        let u = kb.mov(Ty::U32, 0u32);
        kb.warp_ldmatrix(3, false, Ty::U32, Address::reg(u, 0));
    });
    assert!(m.contains("x3"), "{m}");
    let m = dsl_error(|kb| {
        let u = kb.mov(Ty::U32, 0u32);
        let g = kb.mov(Ty::U64, 0u64);
        kb.cp_async(
            CpAsyncCache::Cg,
            8,
            Address::reg(u, 0),
            Address::reg(g, 0),
            None,
        );
    });
    assert!(m.contains(".cg only 16"), "{m}");
    let m = dsl_error(|kb| {
        let u = kb.mov(Ty::U32, 0u32);
        kb.cp_async(
            CpAsyncCache::Ca,
            16,
            Address::reg(u, 0),
            Address::reg(u, 0),
            None,
        );
    });
    assert!(m.contains("not .u64"), "{m}");
}

/// One warp: cp.async A (16×16, row-major) and B into shared memory, ldmatrix the
/// fragments, one mma, store D (16×8 f32, row-major). `b_trans`: B is stored `[k][n]` and
/// read with `.trans`; otherwise it is stored `[n][k]`.
fn mma_kernel(b_trans: bool) -> String {
    let mut kb = KernelBuilder::new("mma_test", Arch::Sm80);
    let p_a = kb.param("p_a", Ty::U64);
    let p_b = kb.param("p_b", Ty::U64);
    let p_d = kb.param("p_d", Ty::U64);
    let (a, b, d) = (
        kb.global_ptr(&p_a),
        kb.global_ptr(&p_b),
        kb.global_ptr(&p_d),
    );
    let s = kb.shared_array("s_ab", 768, 128, "A [16][16] f16 then B (256 B)");
    let base = kb.shared_addr(&s);
    let lane = kb.sreg(Sreg::Tid(Axis::X));
    // 48 16-byte pieces: lane l copies pieces l and l + 32 (A is pieces 0..32, B 32..48).
    let off = kb.shl(lane, 4u32);
    let off64 = kb.cvt(Ty::U64, off, None);
    let src_a = kb.add(a, off64);
    let dst = kb.add(base, off);
    kb.cp_async(
        CpAsyncCache::Cg,
        16,
        Address::reg(dst, 0),
        Address::reg(src_a, 0),
        None,
    );
    let src_b = kb.add(b, off64);
    let in_b = kb.setp(kernel_gen::dsl::Cmp::Lt, lane, 16u32);
    kb.guarded(in_b, false, |kb| {
        kb.cp_async(
            CpAsyncCache::Ca,
            16,
            Address::reg(dst, 512),
            Address::reg(src_b, 0),
            None,
        );
    });
    kb.cp_async_commit();
    kb.cp_async_wait(0);
    kb.bar_sync(0);
    // A: matrix i = lane / 8 covers rows 8(i mod 2).., columns 8(i div 2)..; row pitch 32 B.
    let r8 = kb.and(lane, 15u32);
    let row_off = kb.shl(r8, 5u32);
    let hi = kb.shr(lane, 4u32);
    let col_off = kb.shl(hi, 4u32);
    let a_row = kb.add(row_off, col_off);
    let a_at = kb.add(base, a_row);
    let fa = kb.warp_ldmatrix(4, false, Ty::F16x2, Address::reg(a_at, 0));
    // B: lanes 0..16 give rows; [n][k]: matrix i = rows n 0..8, k 8i..; [k][n]: rows k 0..16.
    let b_at = if b_trans {
        let r = kb.and(lane, 15u32);
        let o = kb.shl(r, 4u32); // [k][n] row pitch 16 B
        kb.add(base, o)
    } else {
        let r = kb.and(lane, 7u32);
        let o = kb.shl(r, 5u32); // [n][k] row pitch 32 B
        let m = kb.shr(lane, 3u32);
        let m1 = kb.and(m, 1u32);
        let c = kb.shl(m1, 4u32);
        let o = kb.add(o, c);
        kb.add(base, o)
    };
    let fb = kb.warp_ldmatrix(2, b_trans, Ty::F16x2, Address::reg(b_at, 512));
    let zero: [_; 4] = std::array::from_fn(|_| kb.mov(Ty::F32, 0.0f32));
    let acc = kb.warp_mma_m16n8k16(Ty::F16, [fa[0], fa[1], fa[2], fa[3]], [fb[0], fb[1]], zero);
    // D: c0,c1 at row g, columns 2q, 2q+1; c2,c3 at row g + 8.
    let g = kb.shr(lane, 2u32);
    let q = kb.and(lane, 3u32);
    let e = kb.shl(g, 3u32);
    let q2 = kb.shl(q, 1u32);
    let e = kb.add(e, q2);
    let eb = kb.mul_wide(e, 4u32);
    let at = kb.add(d, eb);
    kb.st_vec(
        Space::Global,
        Ty::F32,
        Address::reg(at, 0),
        &[acc[0].into(), acc[1].into()],
    );
    kb.st_vec(
        Space::Global,
        Ty::F32,
        Address::reg(at, 8 * 8 * 4),
        &[acc[2].into(), acc[3].into()],
    );
    kb.ret();
    kb.finish().unwrap().to_ptx()
}

#[test]
fn ldmatrix_and_mma_fragments_compute_the_product_in_the_emulator() {
    for b_trans in [false, true] {
        let ptx = mma_kernel(b_trans);
        assemble_both(|_| ptx.clone());
        let a: Vec<f32> = (0..256)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
            .collect();
        // B as [k][n] (16×8).
        let bkn: Vec<f32> = (0..128)
            .map(|i| ((i * 5 % 17) as f32 - 8.0) / 4.0)
            .collect();
        let stored: Vec<f32> = if b_trans {
            bkn.clone()
        } else {
            (0..128).map(|i| bkn[(i % 16) * 8 + i / 16]).collect()
        };
        let h =
            |v: &[f32]| Buffer::from_f16(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>());
        let module = Module::parse(&ptx).unwrap();
        let mut launch = Launch::new("mma_test", [1, 1, 1], [32, 1, 1])
            .arg(Param::Buffer(h(&a)))
            .arg(Param::Buffer(h(&stored)))
            .arg(Param::Buffer(Buffer::zeros(EmuDtype::F32, 128).output()));
        let report = module.launch(&mut launch).unwrap();
        let got = launch.buffer(2).unwrap().to_f32();
        for m in 0..16 {
            for n in 0..8 {
                let want: f32 = (0..16).map(|k| a[m * 16 + k] * bkn[k * 8 + n]).sum();
                assert_eq!(got[m * 8 + n], want, "trans {b_trans}: D[{m}][{n}]");
            }
        }
        assert_eq!(report.mma_flops, 4096);
    }
}
