//! Warp-wide execution of the register-to-register instructions (moves, integer and float
//! arithmetic, compares, conversions), dispatching memory and collective ops to their files.

use super::block::Block;
use super::memops;
use super::warp::lanes;
use crate::decode::ops::{IntOp, Op};
use crate::error::EmuError;

impl Block<'_> {
    /// Executes a non-control, non-memory instruction for the lanes in `exec`.
    pub(crate) fn exec(&mut self, w: usize, pc: u32, exec: u32, op: &Op) -> Result<(), EmuError> {
        use super::alu;
        let env = &self.env;
        let warp = &mut self.warps[w];
        match *op {
            Op::Mov { ty, d, a } => {
                for l in lanes(exec) {
                    let v = ty.normalize(warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::Pack {
                part_bits,
                d,
                ref parts,
            } => {
                let m = (1u64 << part_bits) - 1;
                for l in lanes(exec) {
                    let mut v = 0;
                    for (i, p) in parts.iter().enumerate() {
                        v |= (warp.get(*p, l, env) & m) << (i as u32 * part_bits);
                    }
                    warp.set(d, l, v);
                }
            }
            Op::Unpack {
                part_bits,
                ref ds,
                a,
            } => {
                let m = (1u64 << part_bits) - 1;
                for l in lanes(exec) {
                    let v = warp.get(a, l, env);
                    for (i, d) in ds.iter().enumerate() {
                        warp.set(*d, l, (v >> (i as u32 * part_bits)) & m);
                    }
                }
            }
            Op::Int { op, ty, d, a, b }
                if ty.bits() >= 32
                    && matches!(
                        op,
                        IntOp::Add
                            | IntOp::Sub
                            | IntOp::MulLo
                            | IntOp::And
                            | IntOp::Or
                            | IntOp::Xor
                    ) =>
            {
                // Wrapping arithmetic on the low bits, then the type's normalisation, is
                // exactly what these ops define; skip the general i128 path.
                let f = |x: u64, y: u64| match op {
                    IntOp::Add => x.wrapping_add(y),
                    IntOp::Sub => x.wrapping_sub(y),
                    IntOp::MulLo => x.wrapping_mul(y),
                    IntOp::And => x & y,
                    IntOp::Or => x | y,
                    _ => x ^ y,
                };
                for l in lanes(exec) {
                    let v = ty.normalize(f(warp.get(a, l, env), warp.get(b, l, env)));
                    warp.set(d, l, v);
                }
            }
            Op::Int { op, ty, d, a, b } => {
                for l in lanes(exec) {
                    match alu::int_bin(op, ty, warp.get(a, l, env), warp.get(b, l, env)) {
                        Ok(v) => warp.set(d, l, v),
                        Err(why) => {
                            let t = warp.first_thread + l as u32;
                            return Err(self.undefined(pc, t, why));
                        }
                    }
                }
            }
            Op::Mad {
                mode,
                ty,
                d,
                a,
                b,
                c,
            } => {
                for l in lanes(exec) {
                    let r = alu::mad(
                        mode,
                        ty,
                        warp.get(a, l, env),
                        warp.get(b, l, env),
                        warp.get(c, l, env),
                    );
                    match r {
                        Ok(v) => warp.set(d, l, v),
                        Err(why) => {
                            let t = warp.first_thread + l as u32;
                            return Err(self.undefined(pc, t, why));
                        }
                    }
                }
            }
            Op::Float { op, ft, m, d, a, b } => {
                let n = exec.count_ones() as u64 * if ft.packed { 2 } else { 1 };
                self.count_flops(ft.fmt, n);
                let warp = &mut self.warps[w];
                if ft.fmt == crate::types::Fmt::F32
                    && !m.ftz
                    && !m.sat
                    && m.rnd == crate::types::Rnd::Rn
                {
                    // The hot path: f32 round-to-nearest is exactly Rust's f32 arithmetic.
                    let f = |x: f32, y: f32| match op {
                        crate::decode::ops::FloatOp::Add => x + y,
                        crate::decode::ops::FloatOp::Sub => x - y,
                        crate::decode::ops::FloatOp::Mul => x * y,
                        crate::decode::ops::FloatOp::Div => x / y,
                        crate::decode::ops::FloatOp::Min => {
                            if x.is_nan() {
                                y
                            } else if y.is_nan() {
                                x
                            } else {
                                x.min(y)
                            }
                        }
                        crate::decode::ops::FloatOp::Max => {
                            if x.is_nan() {
                                y
                            } else if y.is_nan() {
                                x
                            } else {
                                x.max(y)
                            }
                        }
                    };
                    for l in lanes(exec) {
                        let x = f32::from_bits(warp.get(a, l, &self.env) as u32);
                        let y = f32::from_bits(warp.get(b, l, &self.env) as u32);
                        warp.set(d, l, canon_f32(f(x, y)));
                    }
                } else {
                    for l in lanes(exec) {
                        let v = alu::float_bin(
                            op,
                            ft,
                            m,
                            warp.get(a, l, &self.env),
                            warp.get(b, l, &self.env),
                        );
                        warp.set(d, l, v);
                    }
                }
            }
            Op::Fma { ft, m, d, a, b, c } => {
                let n = exec.count_ones() as u64 * if ft.packed { 4 } else { 2 };
                self.count_flops(ft.fmt, n);
                let warp = &mut self.warps[w];
                if ft.fmt == crate::types::Fmt::F32
                    && !m.ftz
                    && !m.sat
                    && m.rnd == crate::types::Rnd::Rn
                {
                    for l in lanes(exec) {
                        let x = f32::from_bits(warp.get(a, l, &self.env) as u32);
                        let y = f32::from_bits(warp.get(b, l, &self.env) as u32);
                        let z = f32::from_bits(warp.get(c, l, &self.env) as u32);
                        warp.set(d, l, canon_f32(x.mul_add(y, z)));
                    }
                } else {
                    for l in lanes(exec) {
                        let v = alu::fma(
                            ft,
                            m,
                            warp.get(a, l, &self.env),
                            warp.get(b, l, &self.env),
                            warp.get(c, l, &self.env),
                        );
                        warp.set(d, l, v);
                    }
                }
            }
            Op::Lop3 { d, a, b, c, lut } => {
                for l in lanes(exec) {
                    let v = alu::lop3(
                        warp.get(a, l, env),
                        warp.get(b, l, env),
                        warp.get(c, l, env),
                        lut,
                    );
                    warp.set(d, l, v);
                }
            }
            Op::Bfe { ty, d, a, pos, len } => {
                for l in lanes(exec) {
                    let v = alu::bfe(
                        ty,
                        warp.get(a, l, env),
                        warp.get(pos, l, env),
                        warp.get(len, l, env),
                    );
                    warp.set(d, l, v);
                }
            }
            Op::Bfi {
                ty,
                d,
                f,
                base,
                pos,
                len,
            } => {
                for l in lanes(exec) {
                    let v = alu::bfi(
                        ty,
                        warp.get(f, l, env),
                        warp.get(base, l, env),
                        warp.get(pos, l, env),
                        warp.get(len, l, env),
                    );
                    warp.set(d, l, v);
                }
            }
            Op::Prmt { d, a, b, c } => {
                for l in lanes(exec) {
                    let v = alu::prmt(
                        warp.get(a, l, env),
                        warp.get(b, l, env),
                        warp.get(c, l, env),
                    );
                    warp.set(d, l, v);
                }
            }
            Op::IntUn { op, ty, d, a } => {
                for l in lanes(exec) {
                    let v = alu::int_un(op, ty, warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::FloatUn { op, ft, m, d, a } => {
                for l in lanes(exec) {
                    let v = alu::float_un(op, ft, m, warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::Setp {
                cmp,
                ty,
                d,
                d2,
                a,
                b,
                comb,
            } => {
                for l in lanes(exec) {
                    let mut t = alu::setp(cmp, ty, warp.get(a, l, env), warp.get(b, l, env));
                    let mut f = !t;
                    if let Some((bo, c, neg)) = comb {
                        let cv = (warp.get(c, l, env) & 1 != 0) != neg;
                        t = alu::combine(bo, t, cv);
                        f = alu::combine(bo, f, cv);
                    }
                    warp.set(d, l, u64::from(t));
                    if let Some(d2) = d2 {
                        warp.set(d2, l, u64::from(f));
                    }
                }
            }
            Op::Selp { ty, d, a, b, p } => {
                for l in lanes(exec) {
                    let v = if warp.get(p, l, env) & 1 != 0 {
                        warp.get(a, l, env)
                    } else {
                        warp.get(b, l, env)
                    };
                    warp.set(d, l, ty.normalize(v));
                }
            }
            Op::Cvt {
                dst,
                src,
                rnd,
                irnd,
                sat,
                ftz,
                d,
                a,
            } => {
                for l in lanes(exec) {
                    let v = alu::cvt(dst, src, rnd, irnd, sat, ftz, warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::CvtPack {
                fmt,
                rnd,
                sat,
                d,
                a,
                b,
            } => {
                let to = |v: u64| {
                    let x = f32::from_bits(v as u32) as f64;
                    let r = fmt.round(x, 0.0, rnd);
                    if sat {
                        let y = fmt.to_f64(r);
                        if y.is_nan() || y <= 0.0 {
                            0
                        } else if y >= 1.0 {
                            fmt.round(1.0, 0.0, crate::types::Rnd::Rn)
                        } else {
                            r
                        }
                    } else {
                        r
                    }
                };
                for l in lanes(exec) {
                    let hi = to(warp.get(a, l, env));
                    let lo = to(warp.get(b, l, env));
                    warp.set(d, l, (hi << 16) | lo);
                }
            }
            Op::Cvta {
                to_generic,
                space,
                d,
                a,
            } => {
                use crate::decode::ops::Space;
                use crate::memory_map::{LOCAL_WINDOW, SHARED_WINDOW};
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                for l in lanes(exec) {
                    let v = warp.get(a, l, env);
                    let r = if to_generic {
                        v.wrapping_add(window)
                    } else {
                        v.wrapping_sub(window)
                    };
                    warp.set(d, l, r);
                }
            }
            Op::Ld { .. } | Op::St { .. } | Op::Atom { .. } | Op::CpAsync { .. } => {
                memops::exec_mem(self, w, pc, exec, op)?;
            }
            Op::CpAsyncCommit => {
                for l in lanes(exec) {
                    let t = (self.warps[w].first_thread + l as u32) as usize;
                    let q = &mut self.cp[t];
                    let g = std::mem::take(&mut q.uncommitted);
                    q.groups.push_back(g);
                }
            }
            Op::CpAsyncWait { n, all } => {
                for l in lanes(exec) {
                    let t = self.warps[w].first_thread + l as u32;
                    self.cp_wait(pc, t, n, all)?;
                }
            }
            Op::Fence => {}
            Op::Shfl { .. }
            | Op::Vote { .. }
            | Op::ActiveMask { .. }
            | Op::Mma { .. }
            | Op::Ldmatrix { .. } => {
                super::collective::exec_collective(self, w, pc, exec, op)?;
            }
            Op::Bra { .. } | Op::Exit | Op::Bar { .. } => unreachable!("handled in step"),
        }
        Ok(())
    }

    fn count_flops(&mut self, fmt: crate::types::Fmt, n: u64) {
        if matches!(fmt, crate::types::Fmt::F16 | crate::types::Fmt::Bf16) {
            self.counters.fp16_flops += n;
        } else {
            self.counters.fp32_flops += n;
        }
    }
}

/// PTX produces the canonical NaN for NaN results of f32 arithmetic.
#[inline]
fn canon_f32(x: f32) -> u64 {
    if x.is_nan() {
        0x7fff_ffff
    } else {
        x.to_bits() as u64
    }
}
