//! Integer, logic, compare/select and predication instructions against Rust arithmetic.
mod common;
use common::{Rng, binary_u32, module, run};
use ptx_emu::{Buffer, Dtype, Param};

fn inputs(n: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut r = Rng(seed);
    let mut a: Vec<u32> = (0..n).map(|_| r.next_u32()).collect();
    let mut b: Vec<u32> = (0..n).map(|_| r.next_u32()).collect();
    // Edge values in the first lanes.
    let edges = [0u32, 1, u32::MAX, 0x8000_0000, 0x7fff_ffff, 31, 32, 5];
    for (i, e) in edges.iter().enumerate() {
        a[i] = *e;
        b[edges.len() - 1 - i] = *e;
    }
    b[0] = 7;
    (a, b)
}

fn check(body: &str, f: impl Fn(u32, u32) -> u32) {
    let (a, b) = inputs(64, 0x1234);
    check_on(body, &a, &b, f);
}

fn check_on(body: &str, a: &[u32], b: &[u32], f: impl Fn(u32, u32) -> u32) {
    let out = binary_u32(body, a, b).unwrap();
    for i in 0..a.len() {
        assert_eq!(
            out[i],
            f(a[i], b[i]),
            "`{body}` lane {i}: a={:#x} b={:#x}",
            a[i],
            b[i]
        );
    }
}

#[test]
fn add_sub_mul_lo_hi() {
    check("add.s32 %r4, %r2, %r3;", u32::wrapping_add);
    check("sub.u32 %r4, %r2, %r3;", u32::wrapping_sub);
    check("mul.lo.s32 %r4, %r2, %r3;", u32::wrapping_mul);
    check("mul.hi.u32 %r4, %r2, %r3;", |a, b| {
        ((a as u64 * b as u64) >> 32) as u32
    });
    check("mul.hi.s32 %r4, %r2, %r3;", |a, b| {
        ((a as i32 as i64 * b as i32 as i64) >> 32) as u32
    });
    check("add.sat.s32 %r4, %r2, %r3;", |a, b| {
        (a as i32).saturating_add(b as i32) as u32
    });
    check("mad.lo.s32 %r4, %r2, %r3, 5;", |a, b| {
        a.wrapping_mul(b).wrapping_add(5)
    });
}

#[test]
fn wide_multiplies_produce_64_bits() {
    check(
        "mul.wide.u32 %rd10, %r2, %r3; shr.u64 %rd11, %rd10, 32; cvt.u32.u64 %r4, %rd11;",
        |a, b| ((a as u64 * b as u64) >> 32) as u32,
    );
    check(
        "mul.wide.s32 %rd10, %r2, %r3; shr.s64 %rd11, %rd10, 32; cvt.u32.u64 %r4, %rd11;",
        |a, b| ((a as i32 as i64 * b as i32 as i64) >> 32) as u32,
    );
    check(
        "mad.wide.u32 %rd10, %r2, %r3, 0x100000000; shr.u64 %rd11, %rd10, 32; cvt.u32.u64 %r4, %rd11;",
        |a, b| ((a as u64 * b as u64 + (1 << 32)) >> 32) as u32,
    );
}

#[test]
fn sixty_four_bit_high_products() {
    // Operands near 2^64: the full product needs 128 unsigned bits.
    let src = common::module(
        ".param .u64 pout",
        "ld.param.u64 %rd1, [pout];
         mov.u64 %rd2, 0xfffffffffffffff1;
         mov.u64 %rd3, 0xfffffffffffffff3;
         mul.hi.u64 %rd4, %rd2, %rd3;
         mul.hi.s64 %rd5, %rd2, %rd3;
         mad.hi.u64 %rd6, %rd2, %rd3, 7;
         mul.lo.u64 %rd7, %rd2, %rd3;
         st.global.v2.u64 [%rd1], {%rd4, %rd5};
         st.global.v2.u64 [%rd1+16], {%rd6, %rd7};
         ret;",
    );
    let (_, l) = run(
        &src,
        [1, 1, 1],
        [1, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U64, 4))],
    )
    .unwrap();
    let b = &l.buffer(0).unwrap().bytes;
    let word = |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
    let (x, y) = (0xffff_ffff_ffff_fff1u64, 0xffff_ffff_ffff_fff3u64);
    assert_eq!(word(0), ((x as u128 * y as u128) >> 64) as u64);
    assert_eq!(
        word(1),
        ((x as i64 as i128 * y as i64 as i128) >> 64) as u64
    );
    assert_eq!(
        word(2),
        (((x as u128 * y as u128) >> 64) as u64).wrapping_add(7)
    );
    assert_eq!(word(3), x.wrapping_mul(y));
}

#[test]
fn division_min_max() {
    let (a, mut b) = inputs(64, 0x1234);
    for v in &mut b {
        if *v == 0 {
            *v = 3;
        }
    }
    let check = |body: &str, f: fn(u32, u32) -> u32| check_on(body, &a, &b, f);
    check("div.u32 %r4, %r2, %r3;", |a, b| a / b);
    check("rem.u32 %r4, %r2, %r3;", |a, b| a % b);
    check("div.s32 %r4, %r2, %r3;", |a, b| {
        (a as i32).wrapping_div(b as i32) as u32
    });
    check("rem.s32 %r4, %r2, %r3;", |a, b| {
        (a as i32).wrapping_rem(b as i32) as u32
    });
    check("min.s32 %r4, %r2, %r3;", |a, b| {
        (a as i32).min(b as i32) as u32
    });
    check("max.u32 %r4, %r2, %r3;", u32::max);
}

#[test]
fn integer_division_by_zero_is_an_error_naming_the_thread() {
    let err = binary_u32("div.u32 %r4, %r2, %r3;", &[1, 2, 3], &[1, 0, 1]).unwrap_err();
    match err {
        ptx_emu::EmuError::Undefined { site, reason } => {
            assert_eq!(site.thread, [1, 0, 0]);
            assert_eq!(site.instruction, "div.u32 %r4, %r2, %r3;");
            assert!(reason.contains("division by zero"));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn logic_and_shifts() {
    check("and.b32 %r4, %r2, %r3;", |a, b| a & b);
    check("or.b32 %r4, %r2, %r3;", |a, b| a | b);
    check("xor.b32 %r4, %r2, %r3;", |a, b| a ^ b);
    check("not.b32 %r4, %r2;", |a, _| !a);
    check(
        "shl.b32 %r4, %r2, %r3;",
        |a, b| if b >= 32 { 0 } else { a << b },
    );
    check(
        "shr.u32 %r4, %r2, %r3;",
        |a, b| if b >= 32 { 0 } else { a >> b },
    );
    check("shr.s32 %r4, %r2, %r3;", |a, b| {
        ((a as i32) >> b.min(31)) as u32
    });
    check("neg.s32 %r4, %r2;", |a, _| (a as i32).wrapping_neg() as u32);
    check("abs.s32 %r4, %r2;", |a, _| (a as i32).wrapping_abs() as u32);
    check("popc.b32 %r4, %r2;", |a, _| a.count_ones());
    check("clz.b32 %r4, %r2;", |a, _| a.leading_zeros());
    check("brev.b32 %r4, %r2;", |a, _| a.reverse_bits());
}

#[test]
fn bit_field_and_permute_instructions() {
    check("lop3.b32 %r4, %r2, %r3, 0x0f0f0f0f, 0x96;", |a, b| {
        a ^ b ^ 0x0f0f_0f0f
    });
    check("lop3.b32 %r4, %r2, %r3, 0x0f0f0f0f, 0xe8;", |a, b| {
        let c = 0x0f0f_0f0f;
        (a & b) | (a & c) | (b & c)
    });
    check("lop3.b32 %r4, %r2, %r3, 0x12345678, 0xf8;", |a, b| {
        a | (b & 0x1234_5678)
    });
    check("bfe.u32 %r4, %r2, 4, 9;", |a, _| (a >> 4) & 0x1ff);
    check("bfe.s32 %r4, %r2, 20, 12;", |a, _| {
        ((a as i32) >> 20) as u32
    });
    check("bfe.s32 %r4, %r2, 3, 5;", |a, _| {
        (((a >> 3) & 31) as i32).wrapping_shl(27).wrapping_shr(27) as u32
    });
    check("bfe.u32 %r4, %r2, 28, 12;", |a, _| a >> 28);
    check("bfe.u32 %r4, %r2, 7, 0;", |_, _| 0);
    check("bfi.b32 %r4, %r2, %r3, 8, 12;", |a, b| {
        (b & !(0xfff << 8)) | ((a & 0xfff) << 8)
    });
    check("bfi.b32 %r4, %r2, %r3, 28, 8;", |a, b| {
        (b & 0x0fff_ffff) | ((a & 0xf) << 28)
    });
    check("prmt.b32 %r4, %r2, %r3, 0x3210;", |a, _| a);
    check("prmt.b32 %r4, %r2, %r3, 0x7654;", |_, b| b);
    check("prmt.b32 %r4, %r2, %r3, 0x0123;", |a, _| a.swap_bytes());
    check("prmt.b32 %r4, %r2, %r3, 0x5140;", |a, b| {
        (a & 0xff) | ((b & 0xff) << 8) | (((a >> 8) & 0xff) << 16) | (((b >> 8) & 0xff) << 24)
    });
    check("prmt.b32 %r4, %r2, %r3, 0x8880;", |a, _| {
        let s = if a & 0x80 != 0 { 0xff } else { 0 };
        (a & 0xff) | (s << 8) | (s << 16) | (s << 24)
    });
}

#[test]
fn setp_selp_and_combining() {
    check(
        "setp.lt.s32 %p1, %r2, %r3; selp.u32 %r4, 1, 0, %p1;",
        |a, b| u32::from((a as i32) < (b as i32)),
    );
    check(
        "setp.lo.u32 %p1, %r2, %r3; selp.u32 %r4, 1, 0, %p1;",
        |a, b| u32::from(a < b),
    );
    check(
        "setp.hs.u32 %p1, %r2, %r3; selp.b32 %r4, %r2, %r3, %p1;",
        |a, b| if a >= b { a } else { b },
    );
    check(
        "setp.ne.u32 %p2, %r3, 7; setp.gt.u32.and %p1, %r2, 100, %p2; selp.u32 %r4, 1, 0, %p1;",
        |a, b| u32::from(a > 100 && b != 7),
    );
    check(
        "setp.ne.u32 %p2, %r3, 7; setp.gt.u32.or %p1, %r2, 100, !%p2; selp.u32 %r4, 1, 0, %p1;",
        |a, b| u32::from(a > 100 || b == 7),
    );
    // Two destinations: p = cmp, q = !cmp.
    check(
        "setp.eq.u32 %p1|%p2, %r2, %r3; selp.u32 %r4, 2, 0, %p2;",
        |a, b| if a == b { 0 } else { 2 },
    );
    check(
        "setp.ge.u32 %p1, %r2, %r3; not.pred %p2, %p1; selp.u32 %r4, 1, 0, %p2;",
        |a, b| u32::from(a < b),
    );
}

#[test]
fn predicated_instructions_only_touch_their_lanes() {
    check(
        "mov.u32 %r4, 9; setp.gt.u32 %p1, %r2, %r3; @%p1 mov.u32 %r4, 1; @!%p1 add.u32 %r4, %r4, 2;",
        |a, b| {
            if a > b { 1 } else { 11 }
        },
    );
}

#[test]
fn immediates_in_every_radix() {
    check("add.u32 %r4, %r2, 0x10;", |a, _| a.wrapping_add(16));
    check("add.s32 %r4, %r2, -3;", |a, _| a.wrapping_sub(3));
    check("mov.b32 %r4, 0f3F800000;", |_, _| 0x3f80_0000);
    check("mov.f32 %f1, 0f40490FDB; mov.b32 %r4, %f1;", |_, _| {
        0x4049_0fdb
    });
    check(
        "mov.f64 %fd1, 0d3FF8000000000000; cvt.rn.f32.f64 %f1, %fd1; mov.b32 %r4, %f1;",
        |_, _| 1.5f32.to_bits(),
    );
}

#[test]
fn pack_and_unpack_halves() {
    check(
        "mov.b32 {%h1, %h2}, %r2; mov.b32 %r4, {%h2, %h1};",
        |a, _| a.rotate_left(16),
    );
    check("cvt.u16.u32 %h1, %r2; cvt.u32.u16 %r4, %h1;", |a, _| {
        a & 0xffff
    });
    check("cvt.s16.u32 %h1, %r2; cvt.s32.s16 %r4, %h1;", |a, _| {
        a as u16 as i16 as i32 as u32
    });
    check("cvt.sat.u8.s32 %h1, %r2; cvt.u32.u8 %r4, %h1;", |a, _| {
        (a as i32).clamp(0, 255) as u32
    });
}

#[test]
fn special_registers_give_thread_and_block_coordinates() {
    let src = module(
        ".param .u64 pout",
        "
    ld.param.u64 %rd1, [pout];
    cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r1, %tid.x; mov.u32 %r2, %tid.y; mov.u32 %r3, %ntid.x; mov.u32 %r4, %ntid.y;
    mov.u32 %r5, %ctaid.x; mov.u32 %r6, %ctaid.y; mov.u32 %r7, %nctaid.x;
    mov.u32 %r8, %laneid; mov.u32 %r9, %warpid;
    mad.lo.u32 %r10, %r2, %r3, %r1;          // linear tid
    mul.lo.u32 %r11, %r3, %r4;               // threads per block
    mad.lo.u32 %r12, %r6, %r7, %r5;          // linear block
    mad.lo.u32 %r13, %r12, %r11, %r10;       // global linear id
    mul.wide.u32 %rd2, %r13, 16;
    add.s64 %rd3, %rd1, %rd2;
    st.global.v4.u32 [%rd3], {%r10, %r12, %r8, %r9};
    ret;",
    );
    let (grid, block) = ([3u32, 2, 1], [8u32, 6, 1]);
    let n = (3 * 2 * 8 * 6) as usize;
    let (_, l) = run(
        &src,
        grid,
        block,
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, n * 4))],
    )
    .unwrap();
    let out = l.buffer(0).unwrap().to_u32();
    for g in 0..n {
        let (tid, blk) = (g % 48, g / 48);
        assert_eq!(
            out[4 * g..4 * g + 4],
            [tid as u32, blk as u32, (tid % 32) as u32, (tid / 32) as u32]
        );
    }
}

#[test]
fn loops_with_divergent_trip_counts_reconverge() {
    // Thread i sums 0..=i in a loop, then all threads (reconverged) add 1000.
    let src = module(
        ".param .u64 pout",
        "
    ld.param.u64 %rd1, [pout];
    mov.u32 %r1, %tid.x;
    mov.u32 %r2, 0;          // i
    mov.u32 %r3, 0;          // sum
LOOP:
    setp.gt.u32 %p1, %r2, %r1;
    @%p1 bra.uni DONE;
    add.u32 %r3, %r3, %r2;
    add.u32 %r2, %r2, 1;
    bra LOOP;
DONE:
    add.u32 %r3, %r3, 1000;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r3;
    ret;",
    );
    let (report, l) = run(
        &src,
        [1, 1, 1],
        [64, 1, 1],
        vec![Param::Buffer(Buffer::zeros(Dtype::U32, 64))],
    )
    .unwrap();
    let out = l.buffer(0).unwrap().to_u32();
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, (i * (i + 1) / 2 + 1000) as u32);
    }
    // Reconvergence: the tail (add, mul.wide, add, st, ret = 5 instructions) issues once per warp.
    assert_eq!(report.instructions.st_global, 2);
}
