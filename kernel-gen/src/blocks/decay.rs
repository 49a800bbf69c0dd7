//! Decays from log2 γ, accurate where it matters: γ close to 1.
//!
//! `ex2.approx.f32` is within about 2 ulp, i.e. up to ~2^-23 absolute near 1. For the slow
//! RetNet heads 1 − γ is tiny (2^-20 for head 15), so that error would change the decay *rate*
//! 1 − γ by more than 10 %. Near 1 we therefore compute 2^x = 1 + expm1(x·ln 2) with a short
//! Taylor polynomial whose only significant error is the final rounding of 1 + e; far from 1
//! (x < −1/16, where 1 − γ > 0.04) `ex2.approx` is already accurate relative to 1 − γ.

use crate::dsl::{Address, Cmp, KernelBuilder, ParamRef, Reg, Rounding, SharedRef, Space, Ty};

/// Below this exponent `ex2.approx` is used; above it the polynomial.
pub const POLY_MIN_EXPONENT: f32 = -0.0625;

/// e^y − 1 for |y| ≤ ln2/16 by Horner's rule on 1 + y/2 + y²/6 + y³/24 (the next term,
/// y⁵/120 ≤ 1.3e-9, is below half an f32 ulp of 1). Mirrors the emitted instruction order.
pub fn expm1_poly_f32(y: f32) -> f32 {
    let p = (1.0f32 / 24.0).mul_add(y, 1.0 / 6.0);
    let p = p.mul_add(y, 0.5);
    let p = p.mul_add(y, 1.0);
    y * p
}

/// 2^x for x ≤ 0 exactly as the emitted code computes it (for host-side tests).
pub fn exp2_model_f32(x: f32) -> f32 {
    if x < POLY_MIN_EXPONENT {
        x.exp2()
    } else {
        1.0 + expm1_poly_f32(x * std::f32::consts::LN_2)
    }
}

/// Emit 2^x for an f32 register x ≤ 0 (a relative decay exponent).
pub fn emit_exp2(kb: &mut KernelBuilder, x: Reg) -> Reg {
    let far = kb.ex2(x, false);
    let y = kb.mul(x, std::f32::consts::LN_2);
    let p = kb.fma(y, 1.0f32 / 24.0, 1.0f32 / 6.0);
    let p = kb.fma(p, y, 0.5f32);
    let p = kb.fma(p, y, 1.0f32);
    let e = kb.mul(y, p);
    let near = kb.add(e, 1.0f32);
    let is_far = kb.setp(Cmp::Lt, x, POLY_MIN_EXPONENT);
    kb.selp(far, near, is_far)
}

/// log2 γ_h: the named set's immediate for head `h`, chosen by a `selp` chain.
pub fn select_log2_gamma(kb: &mut KernelBuilder, log2_gammas: &[f32], h: Reg) -> Reg {
    let mut g = kb.mov(Ty::F32, log2_gammas[0]);
    for (i, &l) in log2_gammas.iter().enumerate().skip(1) {
        let is_head = kb.setp(Cmp::Eq, h, i as u32);
        g = kb.selp(l, g, is_head);
    }
    g
}

/// H and log2 γ_h of head `h`: from the runtime-γ parameters, or the named set's immediates.
pub fn heads_and_log2_gamma(
    kb: &mut KernelBuilder,
    runtime: Option<&(ParamRef, ParamRef)>,
    log2_gammas: Option<&[f32]>,
    h: Reg,
) -> (Reg, Reg) {
    match (runtime, log2_gammas) {
        (Some((p_heads, p_log2)), _) => {
            let heads = kb.ld_param(p_heads);
            let table = kb.global_ptr(p_log2);
            let off = kb.mul_wide(h, 4u32);
            let at = kb.add(table, off);
            (heads, kb.ld(Space::Global, Ty::F32, Address::reg(at, 0)))
        }
        (None, Some(l)) => {
            kb.comment("log2 gamma_h: exact f32 immediates, one per head");
            let heads = kb.mov(Ty::U32, l.len() as u32);
            (heads, select_log2_gamma(kb, l, h))
        }
        (None, None) => {
            kb.comment("no decays: a gamma set is either named or runtime");
            let heads = kb.mov(Ty::U32, 1u32);
            (heads, kb.mov(Ty::F32, 0.0f32))
        }
    }
}

/// Which threads fill the shared decay table γ^d, d = 0..=C.
#[derive(Debug, Clone, Copy)]
pub enum TableFill {
    /// Thread `t` writes entry t (C + 1 ≤ threads); `t4` = 4t, computed by the caller.
    Single {
        /// The thread index.
        t: Reg,
        /// 4t: the entry's byte offset.
        t4: Reg,
    },
    /// Rounds of `threads` entries, thread `t` writing t + round·threads; with `reuse_t`
    /// round 0 indexes with `t` itself (no add).
    Rounds {
        /// The thread index.
        t: Reg,
        /// Threads per CTA.
        threads: u32,
        /// Round 0 uses `t` as its index register.
        reuse_t: bool,
    },
}

/// The FMA state kernels' opening on their shared window `smem`: its address `base`, 4t and
/// 16t for thread `t` (4t indexes the table), and the decay table γ^d, d = 0..=`c`, at offset `table` (thread t
/// writing entry t, as [`TableFill::Single`]). Returns `(base, t16)`.
pub fn window_and_decay_table(
    kb: &mut KernelBuilder,
    (smem, t): (&SharedRef, Reg),
    (table, c): (u32, u32),
    log2_gamma: Reg,
) -> (Reg, Reg) {
    let base = kb.shared_addr(smem);
    let t4 = kb.shl(t, 2u32);
    let t16 = kb.shl(t, 4u32);
    emit_decay_table(
        kb,
        TableFill::Single { t, t4 },
        (base, table),
        c,
        log2_gamma,
    );
    (base, t16)
}

/// The decay table γ^d = 2^(d·log2 γ), d = 0..=`c`, as f32 at shared offset `table` from
/// `base`: relative exponents only (all ≤ 0), so nothing overflows.
pub fn emit_decay_table(
    kb: &mut KernelBuilder,
    fill: TableFill,
    (base, table): (Reg, u32),
    c: u32,
    log2_gamma: Reg,
) {
    kb.comment(format!(
        "decay table gamma^d = 2^(d log2 gamma), d = 0..={c}, relative exponents only"
    ));
    let entry = |kb: &mut KernelBuilder, d_int: Reg, d4: Option<Reg>| {
        let in_table = kb.setp(Cmp::Le, d_int, c);
        kb.guarded(in_table, false, |kb| {
            let d = kb.cvt(Ty::F32, d_int, Some(Rounding::Rn));
            let x = kb.mul(d, log2_gamma);
            let g = emit_exp2(kb, x);
            let d4 = d4.unwrap_or_else(|| kb.shl(d_int, 2u32));
            let at = kb.add(base, d4);
            kb.st(Space::Shared, Address::reg(at, i64::from(table)), g);
        });
    };
    match fill {
        TableFill::Single { t, t4 } => entry(kb, t, Some(t4)),
        TableFill::Rounds {
            t,
            threads,
            reuse_t,
        } => {
            for round in 0..(c + 1).div_ceil(threads) {
                let d_int = if reuse_t && round == 0 {
                    t
                } else {
                    kb.add(t, round * threads)
                };
                entry(kb, d_int, None);
            }
        }
    }
}

/// γ^d read from the shared decay table at offset `table` from `base`, for the `.u32`
/// register `d`; returns the entry's address less `table` (base + 4d) and the value.
pub fn table_entry(kb: &mut KernelBuilder, (base, table): (Reg, u32), d: Reg) -> (Reg, Reg) {
    let d4 = kb.shl(d, 2u32);
    let at = kb.add(base, d4);
    let g = kb.ld(Space::Shared, Ty::F32, Address::reg(at, i64::from(table)));
    (at, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use retention_core::Gammas;

    /// Distance in f32 ulps (both positive, below 1).
    fn ulps(a: f32, b: f32) -> i64 {
        (i64::from(a.to_bits()) - i64::from(b.to_bits())).abs()
    }

    #[test]
    fn retnet_decays_are_within_one_ulp_of_exact() {
        let g = Gammas::retnet(48).unwrap();
        for h in 0..48 {
            let exact = g.get(h) as f32;
            let got = exp2_model_f32(g.log2(h) as f32);
            assert!(ulps(got, exact) <= 1, "head {h}: {got:e} vs {exact:e}");
        }
        // head 15: 1 - 2^-20 is exact in f32 and must come out exact.
        assert_eq!(exp2_model_f32(g.log2(15) as f32), 1.0 - 2f32.powi(-20));
    }

    #[test]
    fn polynomial_branch_is_accurate_to_its_edge() {
        for i in 0..=1000 {
            let x = POLY_MIN_EXPONENT * i as f32 / 1000.0;
            let exact = (f64::from(x)).exp2() as f32;
            assert!(ulps(exp2_model_f32(x), exact) <= 1, "x = {x}");
        }
    }
}
