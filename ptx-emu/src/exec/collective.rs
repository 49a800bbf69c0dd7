//! Warp collectives: `shfl.sync`, `mma.sync.aligned.m16n8k16` and `ldmatrix`, with the
//! fragment layouts of the PTX ISA (§9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with
//! floating point type" and §9.7.14.5.15 ldmatrix).
//!
//! Layouts, with `g = laneid >> 2` and `q = laneid % 4`:
//! - A (16×16, row): 4 `.b32` regs holding 8 halves a0..a7; row = g for a0,a1,a4,a5 and g+8
//!   otherwise; col = 2q + (i & 1), plus 8 for i ≥ 4.
//! - B (16×8, col): 2 regs holding b0..b3; row (k) = 2q + (i & 1), plus 8 for i ≥ 2; col = g.
//! - C/D (16×8 f32): c0..c3; row = g for i < 2 and g+8 otherwise; col = 2q + (i & 1).
//! - ldmatrix m8n8 .b16: lanes 8i..8i+7 give the row addresses of matrix i; lane L receives
//!   row L/4, columns 2(L%4) and 2(L%4)+1 of each matrix (low half first); with `.trans`,
//!   column L/4, rows 2(L%4) and 2(L%4)+1.
//!
//! Within a half register the element with the smaller index sits in the low 16 bits.

use super::block::Block;
use super::warp::lanes;
use crate::decode::ops::{Op, ShflMode, Space, VoteMode};
use crate::error::{AccessKind, EmuError};
use crate::exec::memops::Loc;
use crate::types::Fmt;

const FULL: u32 = u32::MAX;

fn divergent(b: &Block, w: usize, pc: u32, needed: u32, active: u32) -> EmuError {
    let l0 = if active == 0 {
        0
    } else {
        active.trailing_zeros()
    };
    EmuError::DivergentCollective {
        site: b.site(pc, b.warps[w].first_thread + l0),
        needed,
        active,
    }
}

pub(crate) fn exec_collective(
    b: &mut Block,
    w: usize,
    pc: u32,
    exec: u32,
    op: &Op,
) -> Result<(), EmuError> {
    match *op {
        Op::Shfl {
            mode,
            d,
            p,
            a,
            b: bsrc,
            c,
            mask,
        } => {
            let gone = b.warps[w].gone();
            let mut src = [0u64; 32];
            for l in lanes(exec) {
                let m = b.val(w, mask, l) as u32;
                // Every non-exited lane named in the mask must execute this shfl with us, and
                // the executing lane must name itself.
                let needed = m & !gone;
                if needed & !exec != 0 || m & (1 << l) == 0 {
                    return Err(divergent(b, w, pc, m, exec));
                }
                src[l] = b.val(w, a, l);
            }
            let mut out = [(0u64, false); 32];
            for l in lanes(exec) {
                let bval = (b.val(w, bsrc, l) & 31) as i32;
                let cv = b.val(w, c, l) as u32;
                let cval = (cv & 31) as i32;
                let seg = ((cv >> 8) & 31) as i32;
                let lane = l as i32;
                let max_lane = (lane & seg) | (cval & !seg);
                let min_lane = lane & seg;
                let (j, pval) = match mode {
                    ShflMode::Up => (lane - bval, lane - bval >= max_lane),
                    ShflMode::Down => (lane + bval, lane + bval <= max_lane),
                    ShflMode::Bfly => (lane ^ bval, (lane ^ bval) <= max_lane),
                    ShflMode::Idx => {
                        let j = min_lane | (bval & !seg);
                        (j, j <= max_lane)
                    }
                };
                let j = if pval { j } else { lane };
                if !(0..32).contains(&j) || exec & (1 << j) == 0 {
                    return Err(b.undefined(
                        pc,
                        b.warps[w].first_thread + l as u32,
                        format!("shfl.sync reads lane {j}, which does not execute this shfl"),
                    ));
                }
                out[l] = (src[j as usize], pval);
            }
            for l in lanes(exec) {
                b.warps[w].set(d, l, out[l].0);
                if let Some(p) = p {
                    b.warps[w].set(p, l, u64::from(out[l].1));
                }
            }
        }
        Op::Vote {
            mode,
            d,
            a,
            neg,
            mask,
        } => {
            let gone = b.warps[w].gone();
            let mut ballot = 0u32;
            for l in lanes(exec) {
                let m = b.val(w, mask, l) as u32;
                if (m & !gone) & !exec != 0 || m & (1 << l) == 0 {
                    return Err(divergent(b, w, pc, m, exec));
                }
                if (b.val(w, a, l) & 1 != 0) != neg {
                    ballot |= 1 << l;
                }
            }
            for l in lanes(exec) {
                let m = b.val(w, mask, l) as u32 & exec;
                let v = match mode {
                    VoteMode::Ballot => ballot & m,
                    VoteMode::Any => u32::from(ballot & m != 0),
                    VoteMode::All => u32::from(ballot & m == m),
                    VoteMode::Uni => u32::from(ballot & m == 0 || ballot & m == m),
                };
                b.warps[w].set(d, l, v as u64);
            }
        }
        Op::ActiveMask { d } => {
            for l in lanes(exec) {
                b.warps[w].set(d, l, exec as u64);
            }
        }
        Op::Mma {
            ab,
            d,
            a,
            b: bregs,
            c,
        } => {
            if exec != FULL {
                return Err(divergent(b, w, pc, FULL, exec));
            }
            let half = |v: u64| ab.to_f64(v & 0xffff);
            let mut ma = [[0f64; 16]; 16];
            let mut mb = [[0f64; 8]; 16];
            let mut mc = [[0f64; 8]; 16];
            for l in 0..32 {
                let g = l / 4;
                let q = l % 4;
                for i in 0..8 {
                    let reg = b.val(w, a[i / 2], l);
                    let v = half(reg >> (16 * (i % 2)));
                    let row = if i < 2 || (4..6).contains(&i) {
                        g
                    } else {
                        g + 8
                    };
                    let col = 2 * q + (i & 1) + if i >= 4 { 8 } else { 0 };
                    ma[row][col] = v;
                }
                for i in 0..4 {
                    let reg = b.val(w, bregs[i / 2], l);
                    let v = half(reg >> (16 * (i % 2)));
                    let row = 2 * q + (i & 1) + if i >= 2 { 8 } else { 0 };
                    mb[row][g] = v;
                }
                for i in 0..4 {
                    let v = Fmt::F32.to_f64(b.val(w, c[i], l));
                    let row = if i < 2 { g } else { g + 8 };
                    mc[row][2 * q + (i & 1)] = v;
                }
            }
            for l in 0..32 {
                let g = l / 4;
                let q = l % 4;
                for i in 0..4 {
                    let row = if i < 2 { g } else { g + 8 };
                    let col = 2 * q + (i & 1);
                    // Products of 16-bit floats are exact in f64; the sum of 16 of them plus
                    // the f32 accumulator is rounded once to f32.
                    let mut acc = mc[row][col];
                    for k in 0..16 {
                        acc += ma[row][k] * mb[k][col];
                    }
                    b.warps[w].set(d[i], l, (acc as f32).to_bits() as u64);
                }
            }
            b.counters.mma_flops += 2 * 16 * 8 * 16;
        }
        Op::Ldmatrix {
            num,
            trans,
            space,
            d,
            addr,
        } => {
            if exec != FULL {
                return Err(divergent(b, w, pc, FULL, exec));
            }
            let mut rows = [[0u16; 8]; 32];
            for m in 0..num as usize {
                let mut reqs = [(Loc::Param(0), 0u32); 8];
                for r in 0..8 {
                    let l = m * 8 + r;
                    let t = b.warps[w].first_thread + l as u32;
                    let a = b.address(w, l, addr);
                    let loc = b.resolve(w, l, pc, space, a, 16, AccessKind::Read)?;
                    let Loc::Shared(off) = loc else {
                        return Err(b.undefined(pc, t, "ldmatrix address is not in shared memory"));
                    };
                    if let Err(race) = b.shared.track(off, 16, t, AccessKind::Read) {
                        return Err(b.race(pc, t, &race, AccessKind::Read));
                    }
                    for c in 0..8 {
                        rows[m * 8 + r][c] = b.shared.read(off + 2 * c as u64, 2) as u16;
                    }
                    reqs[r] = (loc, 16);
                }
                count_shared_phase(b, &reqs);
            }
            for l in 0..32 {
                for m in 0..num as usize {
                    let (e0, e1) = if trans {
                        let c = l / 4;
                        let r = 2 * (l % 4);
                        (rows[m * 8 + r][c], rows[m * 8 + r + 1][c])
                    } else {
                        let r = l / 4;
                        let c = 2 * (l % 4);
                        (rows[m * 8 + r][c], rows[m * 8 + r][c + 1])
                    };
                    b.warps[w].set(d[m], l, e0 as u64 | ((e1 as u64) << 16));
                }
            }
            let _ = Space::Shared;
        }
        _ => unreachable!("not a collective"),
    }
    Ok(())
}

/// One ldmatrix matrix = 8 rows × 16 bytes = one 128-byte phase, counted like a 16-byte
/// vector request of 8 lanes.
fn count_shared_phase(b: &mut Block, reqs: &[(Loc, u32)]) {
    b.count_request(reqs);
}
