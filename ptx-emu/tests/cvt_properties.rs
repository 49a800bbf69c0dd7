//! Property tests of `cvt` to 16-bit floats over arbitrary f32 bit patterns: round-to-nearest
//! equals the `half` crate, the directed modes bracket the exact value with adjacent
//! representable values, and `.rz` is whichever of them lies toward zero.
mod common;
use common::binary_u32;
use half::{bf16, f16};
use proptest::prelude::*;

fn convert(mode: &str, ty: &str, x: &[u32]) -> Vec<u16> {
    let body = format!("mov.b32 %f1, %r2; cvt.{mode}.{ty}.f32 %h1, %f1; cvt.u32.u16 %r4, %h1;");
    binary_u32(&body, x, &vec![0; x.len()])
        .unwrap()
        .into_iter()
        .map(|v| v as u16)
        .collect()
}

/// Value of 16-bit bits as f64 for `ty`.
fn value(ty: &str, b: u16) -> f64 {
    if ty == "f16" {
        f16::from_bits(b).to_f64()
    } else {
        bf16::from_bits(b).to_f64()
    }
}

/// Next representable value above (sign-magnitude bit stepping, infinities included).
fn next_up(b: u16) -> u16 {
    if b == 0x8000 || b == 0 {
        return 1;
    }
    if b & 0x8000 == 0 { b + 1 } else { b - 1 }
}

fn check(ty: &str, xs: &[u32]) {
    let rn = convert("rn", ty, xs);
    let rz = convert("rz", ty, xs);
    let rm = convert("rm", ty, xs);
    let rp = convert("rp", ty, xs);
    for i in 0..xs.len() {
        let x = f32::from_bits(xs[i]);
        if x.is_nan() {
            assert!(value(ty, rn[i]).is_nan() && value(ty, rm[i]).is_nan());
            continue;
        }
        let want_rn = if ty == "f16" {
            f16::from_f32(x).to_bits()
        } else {
            bf16::from_f32(x).to_bits()
        };
        assert_eq!(rn[i], want_rn, "{ty} rn of {x:e}");
        let (lo, hi, xv) = (value(ty, rm[i]), value(ty, rp[i]), x as f64);
        assert!(lo <= xv && xv <= hi, "{ty} {x:e}: rm {lo} rp {hi}");
        if lo == xv {
            assert_eq!(lo, hi, "{ty} exact {x:e}");
        } else {
            // Adjacent: nothing representable strictly between them.
            let up = if rm[i] == 0x8000 {
                next_up(0)
            } else {
                next_up(rm[i])
            };
            assert!(
                up == rp[i] || (value(ty, up) == value(ty, rp[i])),
                "{ty} {x:e}: {:#x} {:#x}",
                rm[i],
                rp[i]
            );
        }
        let toward_zero = if xv >= 0.0 { lo } else { hi };
        assert_eq!(value(ty, rz[i]), toward_zero, "{ty} rz of {x:e}");
    }
}

#[test]
fn cvt_cases_found_by_the_properties() {
    // f32 bits 0x85F48004: bf16 round-to-nearest must round up in magnitude (0x85F5).
    check(
        "bf16",
        &[
            0x85F4_8004,
            0x3F80_8000,
            0x3F81_8000,
            0x0000_8001,
            0x8000_8000,
        ],
    );
    check(
        "f16",
        &[
            0x85F4_8004,
            0x3380_1000,
            0x3380_0fff,
            0x477F_F000,
            0x477F_EFFF,
        ],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn cvt_to_f16_rounding_modes(xs in proptest::collection::vec(any::<u32>(), 64)) {
        check("f16", &xs);
    }

    #[test]
    fn cvt_to_f16_near_its_range(xs in proptest::collection::vec(0x3000_0000u32..0x4800_0000, 64)) {
        // Magnitudes 2^-31 .. 2^17: subnormals, normals and overflow of f16.
        let signed: Vec<u32> = xs.iter().enumerate().map(|(i, x)| x | ((i as u32 & 1) << 31)).collect();
        check("f16", &signed);
    }

    #[test]
    fn cvt_to_bf16_rounding_modes(xs in proptest::collection::vec(any::<u32>(), 64)) {
        check("bf16", &xs);
    }
}
