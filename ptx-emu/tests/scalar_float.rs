//! Float arithmetic, special functions, compares and conversions with every rounding mode.
mod common;
use common::{Rng, binary_u32};
use half::{bf16, f16};

fn floats(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    let mut v: Vec<f32> = (0..n)
        .map(|i| r.unit() * 2f32.powi((i % 7) as i32 * 3 - 9))
        .collect();
    let edges = [
        0.0,
        -0.0,
        1.0,
        -1.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65520.0,
        1e-8,
        f32::MAX,
    ];
    v[..edges.len()].copy_from_slice(&edges);
    v
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn check_f32(body: &str, f: impl Fn(f32, f32) -> u32) {
    let a = floats(96, 11);
    let mut b = floats(96, 29);
    b.rotate_left(3);
    let out = binary_u32(body, &bits(&a), &bits(&b)).unwrap();
    for i in 0..a.len() {
        let want = f(a[i], b[i]);
        let got = out[i];
        let both_nan = f32::from_bits(got).is_nan() && f32::from_bits(want).is_nan();
        assert!(
            got == want || both_nan,
            "`{body}` lane {i}: a={:e} b={:e} got {:e} ({got:#x}) want {:e} ({want:#x})",
            a[i],
            b[i],
            f32::from_bits(got),
            f32::from_bits(want)
        );
    }
}

const F: &str = "mov.b32 %f1, %r2; mov.b32 %f2, %r3;";

/// Exact sum/product in f64 (exact for these operands: exponent spread < 29 bits for sums
/// of the generated values except the edges, which are handled by the f64 reference too).
fn directed(exact: f64, mode: &str) -> u32 {
    let n = exact as f32;
    if exact.is_nan() {
        return f32::NAN.to_bits();
    }
    let nd = n as f64;
    let down = |x: f32| {
        if x.to_bits() == 0 {
            -f32::from_bits(1)
        } else if x > 0.0 {
            f32::from_bits(x.to_bits() - 1)
        } else {
            f32::from_bits(x.to_bits() + 1)
        }
    };
    let up = |x: f32| -down(-x);
    let r = match mode {
        "rn" => n,
        "rz" => {
            if nd.abs() > exact.abs() {
                if exact > 0.0 { down(n) } else { up(n) }
            } else {
                n
            }
        }
        "rm" => {
            if nd > exact {
                down(n)
            } else {
                n
            }
        }
        "rp" => {
            if nd < exact {
                up(n)
            } else {
                n
            }
        }
        _ => unreachable!(),
    };
    r.to_bits()
}

#[test]
fn f32_arithmetic_round_to_nearest_matches_ieee() {
    check_f32(
        &format!("{F} add.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
        |a, b| (a + b).to_bits(),
    );
    check_f32(
        &format!("{F} sub.rn.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
        |a, b| (a - b).to_bits(),
    );
    check_f32(
        &format!("{F} mul.rn.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
        |a, b| (a * b).to_bits(),
    );
    check_f32(
        &format!("{F} div.rn.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
        |a, b| (a / b).to_bits(),
    );
    check_f32(
        &format!("{F} fma.rn.f32 %f3, %f1, %f2, %f1; mov.b32 %r4, %f3;"),
        |a, b| a.mul_add(b, a).to_bits(),
    );
    check_f32(
        &format!("{F} neg.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| (-a).to_bits(),
    );
    check_f32(
        &format!("{F} abs.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| a.abs().to_bits(),
    );
    check_f32(
        &format!("{F} sqrt.rn.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| a.sqrt().to_bits(),
    );
    check_f32(
        &format!("{F} rcp.rn.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| (1.0 / a).to_bits(),
    );
    // min/max return the other operand when one is NaN.
    check_f32(
        &format!("{F} min.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
        |a, b| a.min(b).to_bits(),
    );
    check_f32(
        &format!("{F} max.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
        |a, b| a.max(b).to_bits(),
    );
}

#[test]
fn negative_float_literals() {
    let out = binary_u32("mov.f32 %f1, -0f3FC00000; mov.b32 %r4, %f1;", &[0], &[0]).unwrap();
    assert_eq!(f32::from_bits(out[0]), -1.5);
    let out = binary_u32("mov.f32 %f1, -2.25; mov.b32 %r4, %f1;", &[0], &[0]).unwrap();
    assert_eq!(f32::from_bits(out[0]), -2.25);
}

#[test]
fn f32_directed_rounding_modes() {
    for mode in ["rn", "rz", "rm", "rp"] {
        check_f32(
            &format!("{F} mul.{mode}.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
            |a, b| directed(a as f64 * b as f64, mode),
        );
        check_f32(
            &format!("{F} add.{mode}.f32 %f3, %f1, %f2; mov.b32 %r4, %f3;"),
            |a, b| {
                let e = a as f64 + b as f64;
                // Only compare where the f64 sum is exact.
                if (e - a as f64) - b as f64 == 0.0 || !e.is_finite() {
                    directed(e, mode)
                } else {
                    directed_fallback(a, b, mode)
                }
            },
        );
    }
}

/// For sums whose f64 value is inexact (huge exponent gaps) the result is the larger operand
/// or its neighbour in the rounding direction.
fn directed_fallback(a: f32, b: f32, mode: &str) -> u32 {
    let (big, small) = if a.abs() >= b.abs() { (a, b) } else { (b, a) };
    let step_up = |x: f32| {
        if x == 0.0 {
            f32::from_bits(1)
        } else if x > 0.0 {
            f32::from_bits(x.to_bits() + 1)
        } else {
            f32::from_bits(x.to_bits() - 1)
        }
    };
    let step_down = |x: f32| -step_up(-x);
    let r = match mode {
        "rn" => big,
        "rz" => {
            if (small > 0.0) == (big > 0.0) {
                big
            } else if big > 0.0 {
                step_down(big)
            } else {
                step_up(big)
            }
        }
        "rm" => {
            if small < 0.0 {
                step_down(big)
            } else {
                big
            }
        }
        "rp" => {
            if small > 0.0 {
                step_up(big)
            } else {
                big
            }
        }
        _ => unreachable!(),
    };
    r.to_bits()
}

#[test]
fn special_functions_are_correctly_rounded() {
    check_f32(
        &format!("{F} ex2.approx.ftz.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| {
            let r = (a as f64).exp2() as f32;
            // .ftz flushes subnormal inputs and outputs to zero.
            if r != 0.0 && r.abs() < f32::MIN_POSITIVE {
                (0.0f32).to_bits()
            } else {
                r.to_bits()
            }
        },
    );
    check_f32(
        &format!("{F} lg2.approx.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| ((a as f64).log2() as f32).to_bits(),
    );
    check_f32(
        &format!("{F} rsqrt.approx.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| ((1.0 / (a as f64).sqrt()) as f32).to_bits(),
    );
    check_f32(
        &format!("{F} rcp.approx.f32 %f3, %f1; mov.b32 %r4, %f3;"),
        |a, _| ((1.0 / a as f64) as f32).to_bits(),
    );
}

#[test]
fn float_compares_including_unordered() {
    for (cmp, f) in [
        ("lt", (|a: f32, b: f32| a < b) as fn(f32, f32) -> bool),
        ("ge", |a, b| a >= b),
        ("ne", |a, b| !a.is_nan() && !b.is_nan() && a != b),
        ("equ", |a, b| a.is_nan() || b.is_nan() || a == b),
        ("ltu", |a, b| a.is_nan() || b.is_nan() || a < b),
        ("nan", |a, b| a.is_nan() || b.is_nan()),
        ("num", |a, b| !a.is_nan() && !b.is_nan()),
    ] {
        check_f32(
            &format!("{F} setp.{cmp}.f32 %p1, %f1, %f2; selp.u32 %r4, 1, 0, %p1;"),
            |a, b| u32::from(f(a, b)),
        );
    }
}

fn f16_step(x: f16, up: bool) -> f16 {
    let b = x.to_bits();
    if x.is_nan() || (x.is_infinite() && (x > f16::ZERO) == up) {
        return x;
    }
    if x == f16::ZERO {
        return if up {
            f16::from_bits(1)
        } else {
            f16::from_bits(0x8001)
        };
    }
    let pos = b & 0x8000 == 0;
    f16::from_bits(if pos == up { b + 1 } else { b - 1 })
}

#[test]
fn cvt_f32_to_f16_honours_every_rounding_mode() {
    let vals: Vec<f32> = floats(256, 77).into_iter().map(|x| x * 100.0).collect();
    for mode in ["rn", "rz", "rm", "rp"] {
        let out = binary_u32(
            &format!("mov.b32 %f1, %r2; cvt.{mode}.f16.f32 %h1, %f1; cvt.u32.u16 %r4, %h1;"),
            &bits(&vals[..128]),
            &[0; 128],
        )
        .unwrap();
        for (i, &x) in vals[..128].iter().enumerate() {
            let got = f16::from_bits(out[i] as u16);
            let rn = f16::from_f32(x);
            if x.is_nan() {
                assert!(got.is_nan());
                continue;
            }
            let back = rn.to_f32();
            let want = match mode {
                "rz" if back.abs() > x.abs() => f16_step(rn, x < 0.0),
                "rm" if back > x => f16_step(rn, false),
                "rp" if back < x => f16_step(rn, true),
                _ => rn,
            };
            assert_eq!(got.to_bits(), want.to_bits(), "cvt.{mode}.f16.f32 of {x:e}");
            // Independent bracketing: rm ≤ x ≤ rp.
            match mode {
                "rm" => assert!(got.to_f32() <= x),
                "rp" => assert!(got.to_f32() >= x),
                "rz" => assert!(got.to_f32().abs() <= x.abs()),
                _ => {}
            }
        }
    }
}

#[test]
fn cvt_bf16_and_back() {
    let vals = floats(128, 5);
    let out = binary_u32(
        "mov.b32 %f1, %r2; cvt.rn.bf16.f32 %h1, %f1; cvt.f32.bf16 %f2, %h1; mov.b32 %r4, %f2;",
        &bits(&vals),
        &[0; 128],
    )
    .unwrap();
    for (i, &x) in vals.iter().enumerate() {
        let want = bf16::from_f32(x).to_f32();
        assert!(
            out[i] == want.to_bits() || (x.is_nan() && f32::from_bits(out[i]).is_nan()),
            "{x:e}"
        );
    }
    let out = binary_u32(
        "mov.b32 %f1, %r2; cvt.rz.bf16.f32 %h1, %f1; cvt.u32.u16 %r4, %h1;",
        &bits(&vals),
        &[0; 128],
    )
    .unwrap();
    for (i, &x) in vals.iter().enumerate() {
        if x.is_finite() {
            // Truncation toward zero is dropping the low 16 bits.
            assert_eq!(out[i], x.to_bits() >> 16, "{x:e}");
        }
    }
}

#[test]
fn packed_conversion_and_half_arithmetic() {
    let a = [1.5f32, -2.25, 1000.0, 0.1];
    let b = [3.0f32, 0.5, -7.0, 0.2];
    let out = binary_u32(
        "mov.b32 %f1, %r2; mov.b32 %f2, %r3; cvt.rn.f16x2.f32 %r5, %f1, %f2; add.rn.f16x2 %r4, %r5, %r5;",
        &bits(&a),
        &bits(&b),
    )
    .unwrap();
    for i in 0..4 {
        let hi = f16::from_f32(a[i]);
        let lo = f16::from_f32(b[i]);
        let want = ((f16::from_f32(hi.to_f32() * 2.0).to_bits() as u32) << 16)
            | f16::from_f32(lo.to_f32() * 2.0).to_bits() as u32;
        assert_eq!(out[i], want);
    }
    let out = binary_u32(
        "cvt.u16.u32 %h1, %r2; cvt.u16.u32 %h2, %r3; fma.rn.f16 %h3, %h1, %h2, %h1; cvt.u32.u16 %r4, %h3;",
        &[f16::from_f32(1.5).to_bits() as u32, f16::from_f32(-3.0).to_bits() as u32],
        &[f16::from_f32(0.1).to_bits() as u32, f16::from_f32(1.0 / 3.0).to_bits() as u32],
    )
    .unwrap();
    for (i, (x, y)) in [(1.5f32, 0.1f32), (-3.0, 1.0 / 3.0)]
        .into_iter()
        .enumerate()
    {
        let (x, y) = (f16::from_f32(x).to_f64(), f16::from_f32(y).to_f64());
        assert_eq!(out[i] as u16, f16::from_f64(x.mul_add(y, x)).to_bits());
    }
}

#[test]
fn int_float_conversions_round_and_saturate() {
    let ints = [
        0u32,
        1,
        0xffff_ffff,
        0x7fff_ffff,
        0x8000_0000,
        16_777_217,
        123_456_789,
        3,
    ];
    for (mode, f) in [
        ("rn", (|v: i32| v as f32) as fn(i32) -> f32),
        ("rz", |v| {
            let r = v as f32;
            if (r as f64).abs() > (v as f64).abs() {
                f32::from_bits(r.to_bits() - 1)
            } else {
                r
            }
        }),
    ] {
        let out = binary_u32(
            &format!("cvt.{mode}.f32.s32 %f1, %r2; mov.b32 %r4, %f1;"),
            &ints,
            &[0; 8],
        )
        .unwrap();
        for (i, &v) in ints.iter().enumerate() {
            assert_eq!(
                f32::from_bits(out[i]),
                f(v as i32),
                "cvt.{mode}.f32.s32 {}",
                v as i32
            );
        }
    }
    let fl = [1.5f32, -1.5, 2.5, -2.5, 3e9, -3e9, f32::NAN, 0.49999997];
    for (mode, f) in [
        ("rni", (|x: f32| x.round_ties_even()) as fn(f32) -> f32),
        ("rzi", f32::trunc),
        ("rmi", f32::floor),
        ("rpi", f32::ceil),
    ] {
        let out = binary_u32(
            &format!("mov.b32 %f1, %r2; cvt.{mode}.s32.f32 %r4, %f1;"),
            &bits(&fl),
            &[0; 8],
        )
        .unwrap();
        for (i, &x) in fl.iter().enumerate() {
            // Rust's float-to-int `as` saturates and maps NaN to 0, as PTX does.
            assert_eq!(out[i] as i32, f(x) as i32, "cvt.{mode}.s32.f32 {x}");
        }
    }
    let out = binary_u32(
        "mov.b32 %f1, %r2; cvt.rzi.u32.f32 %r4, %f1;",
        &bits(&fl),
        &[0; 8],
    )
    .unwrap();
    assert_eq!(out, fl.iter().map(|&x| x as u32).collect::<Vec<_>>());
    let out = binary_u32(
        "mov.b32 %f1, %r2; cvt.sat.f32.f32 %f2, %f1; mov.b32 %r4, %f2;",
        &bits(&fl),
        &[0; 8],
    )
    .unwrap();
    assert_eq!(
        out.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>(),
        vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.49999997]
    );
}

#[test]
fn f64_path_and_cvt_to_f32_rounding() {
    let a: Vec<f32> = floats(64, 3);
    let out = binary_u32(
        "mov.b32 %f1, %r2; mov.b32 %f2, %r3; cvt.f64.f32 %fd1, %f1; cvt.f64.f32 %fd2, %f2; \
         div.rn.f64 %fd3, %fd1, %fd2; cvt.rz.f32.f64 %f3, %fd3; mov.b32 %r4, %f3;",
        &bits(&a),
        &bits(&a.iter().rev().copied().collect::<Vec<_>>()),
    )
    .unwrap();
    let rev: Vec<f32> = a.iter().rev().copied().collect();
    for i in 0..a.len() {
        let q = a[i] as f64 / rev[i] as f64;
        let want = directed(q, "rz");
        let got = out[i];
        assert!(
            got == want || (q.is_nan() && f32::from_bits(got).is_nan()),
            "{} / {}",
            a[i],
            rev[i]
        );
    }
}
