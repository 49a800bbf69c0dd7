//! The tile vocabulary (`dsl::tiles`) on its own: one warp fills swizzled shared tiles with
//! `cp.async`, multiplies them with `ldmatrix` fragments into an `mma` accumulator tile, and
//! writes the accumulator back through a swizzled tile. The emulator must produce the exact
//! product with zero shared bank conflicts, and ptxas must accept the module.

use half::f16;
use kernel_gen::Arch;
use kernel_gen::dsl::tiles::{AccTileF32, LaneFragments, SharedTile16};
use kernel_gen::dsl::{Address, Axis, CpAsyncCache, KernelBuilder, Operand, Space, Sreg, Ty};
use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Module, Param};
use kernel_gen::ptxas::{assemble, find_ptxas};

const A: SharedTile16 = SharedTile16::new(0, 16, 64); // [m][k]
const B: SharedTile16 = SharedTile16::new(2048, 64, 64); // [k][n]
const O: SharedTile16 = SharedTile16::new(2048 + 8192, 16, 64); // [m][n]

/// D = A·B (16×64 · 64×64) for one warp; D as f32 and, through `O`, as f16.
fn tile_kernel(arch: Arch) -> String {
    let mut kb = KernelBuilder::new("tiles_test", arch);
    let p_a = kb.param("p_a", Ty::U64);
    let p_b = kb.param("p_b", Ty::U64);
    let p_d = kb.param("p_d", Ty::U64);
    let p_o = kb.param("p_o", Ty::U64);
    let (ga, gb, gd, go) = (
        kb.global_ptr(&p_a),
        kb.global_ptr(&p_b),
        kb.global_ptr(&p_d),
        kb.global_ptr(&p_o),
    );
    let s = kb.shared_array("s_tiles", O.offset + O.bytes(), 128, "A, B and O tiles");
    let base = kb.shared_addr(&s);
    let lane = kb.sreg(Sreg::Tid(Axis::X));
    let ch = kb.and(lane, 7u32);
    let row0 = kb.shr(lane, 3u32);
    let lane16 = kb.mul_wide(lane, 16u32);
    // 16-byte chunk `lane + 32 r` of a row-major tile with 8 chunks a row: row 4r + lane/8.
    for (tile, src) in [(A, ga), (B, gb)] {
        for r in 0..tile.rows / 4 {
            let row = kb.add(row0, 4 * r);
            let dst = tile.chunk_addr(&mut kb, base, row, ch);
            let at = kb.add(src, lane16);
            kb.cp_async(
                CpAsyncCache::Cg,
                16,
                Address::reg(dst, 0),
                Address::reg(at, i64::from(r * 512)),
                None,
            );
        }
    }
    kb.cp_async_commit();
    kb.cp_async_wait(0);
    kb.bar_sync(0);
    let lanes = LaneFragments::new(&mut kb, lane);
    let zero = kb.mov(Ty::U32, 0u32);
    let a_rows = A.lane_rows(&mut kb, base, zero, lanes.p1_row);
    let b_rows = B.lane_rows(&mut kb, base, zero, lanes.p1_row);
    let acc = AccTileF32::zeros(&mut kb, 64);
    for ks in 0..4 {
        let a = A.ldmatrix_x4(&mut kb, Ty::F16x2, false, a_rows, 0, 2 * ks, lanes.p1_x);
        for np in 0..4u32 {
            let b = B.ldmatrix_x4(
                &mut kb,
                Ty::F16x2,
                true,
                b_rows,
                16 * ks,
                2 * np,
                lanes.p1_x,
            );
            acc.mma(&mut kb, Ty::F16, 2 * np as usize, a, [b[0], b[1]]);
            acc.mma(&mut kb, Ty::F16, 2 * np as usize + 1, a, [b[2], b[3]]);
        }
    }
    // D (f32) straight from the fragments: rows g and g+8, columns 8nt + 2q.
    let g = kb.shr(lane, 2u32);
    let q = kb.and(lane, 3u32);
    let q2 = kb.shl(q, 1u32);
    let e = kb.mad_lo(g, 64u32, q2);
    let eb = kb.mul_wide(e, 4u32);
    let d_at = kb.add(gd, eb);
    for (nt, f) in acc.frags.iter().enumerate() {
        for half in 0..2usize {
            let off = (nt * 8 + half * 8 * 64) as i64 * 4;
            let vals: [Operand; 2] = [f[2 * half].into(), f[2 * half + 1].into()];
            kb.st_vec(Space::Global, Ty::F32, Address::reg(d_at, off), &vals);
        }
    }
    // D (f16) through the swizzled O tile, read back as whole 16-byte rows.
    O.store_acc(&mut kb, base, &acc, Ty::F16, zero, g, q, 0);
    kb.bar_sync(0);
    for r in 0..4u32 {
        let row = kb.add(row0, 4 * r);
        let src = O.chunk_addr(&mut kb, base, row, ch);
        let x = kb.ld_vec(Space::Shared, Ty::U32, 4, Address::reg(src, 0));
        let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
        let at = kb.add(go, lane16);
        kb.st_vec(
            Space::Global,
            Ty::U32,
            Address::reg(at, i64::from(r * 512)),
            &x,
        );
    }
    kb.ret();
    kb.finish().expect("kernel builds").to_ptx()
}

#[test]
fn swizzled_tiles_multiply_exactly_without_bank_conflicts() {
    if let Some(p) = find_ptxas() {
        for arch in Arch::ALL {
            let ptx = tile_kernel(arch);
            if let Err(e) = assemble(&p, &ptx, arch) {
                panic!("ptxas rejected the {arch} module: {e}\n{ptx}");
            }
        }
    }
    let a: Vec<f32> = (0..16 * 64)
        .map(|i| ((i * 7 % 19) as f32 - 9.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..64 * 64)
        .map(|i| ((i * 5 % 13) as f32 - 6.0) / 4.0)
        .collect();
    let h = |v: &[f32]| Buffer::from_f16(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>());
    let module = Module::parse(&tile_kernel(Arch::Sm80)).unwrap();
    let mut launch = Launch::new("tiles_test", [1, 1, 1], [32, 1, 1])
        .arg(Param::Buffer(h(&a)))
        .arg(Param::Buffer(h(&b)))
        .arg(Param::Buffer(
            Buffer::zeros(EmuDtype::F32, 16 * 64).output(),
        ))
        .arg(Param::Buffer(
            Buffer::zeros(EmuDtype::F16, 16 * 64).output(),
        ));
    let report = module.launch(&mut launch).unwrap();
    let d = launch.buffer(2).unwrap().to_f32();
    let o = launch.buffer(3).unwrap().to_u16();
    for m in 0..16 {
        for n in 0..64 {
            // Products of these values are exact in f32, and so are their sums.
            let want: f32 = (0..64).map(|k| a[m * 64 + k] * b[k * 64 + n]).sum();
            assert_eq!(d[m * 64 + n], want, "D[{m}][{n}]");
            assert_eq!(
                f16::from_bits(o[m * 64 + n]),
                f16::from_f32(want),
                "O[{m}][{n}]"
            );
        }
    }
    assert_eq!(report.mma_flops, 32 * 4096);
    assert_eq!(report.shared_bank_conflicts, 0, "{report:?}");
}
