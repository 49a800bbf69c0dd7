//! The tensor-core generator of the three chunkwise-backward kernels (f16/bf16 inputs, f32
//! accumulation; ARCHITECTURE §7): the family's one shape (module docs of [`super`]),
//! out_i = λ_i x_i·S + Σ_j m(i,j) (x_i·y_j) w_j with S ← γ^L S + Σ_j u_j y_jᵀ w_j, laid out as
//! the chunkwise forward's tensor-core path lays out O and R (x, y, w in the places of q, k,
//! v), one CTA per (row b, head h, 64 columns z of N), 8 warps:
//!
//! ```text
//! warp w, rows 16w.. of the chunk (w < C/16):
//!   A_w = s·(X_w Yᵀ ⊙ D)          D: γ^(i−j), j ≤ i (dq) or γ^(j−i), j ≥ i (dk, dv)
//!   O_w = λ ⊙ (X_w (S̃ + S_rest)) + (Ã + A_rest) W      (mma, f32, in registers)
//! warp w, state rows 16(w + 8j).. (w < P/16):
//!   S ← γ^L S + (Yᵀ ⊙ u) W                              (f32 mma accumulators)
//! ```
//!
//! λ = s·ξ, u = ζ walking forwards (dq); λ = ζ, u = s·ξ walking backwards (dk, dv). The
//! state never leaves registers in f32; after each chunk it goes to shared memory as a 16-bit
//! head S̃ and the rounding of its rest, and the masked scores go to A fragments the same way,
//! so both products of the output carry about twice the input type's precision (the f32
//! decays enter the state as head + tail fragments, [`crate::math::state_update::accumulate_state_step`]) — what the
//! f32 d log γ partials, held to 1e-5 of their terms, need. x, y, w arrive by `cp.async`
//! (rows past a partial chunk and columns past a head dim zero-filled), the gradient leaves
//! through a swizzled tile in 16-byte rows. Parameters, d log γ partials and the walk's
//! alignment are the FMA kernels' ([`super::fma`]).

use super::dlog_gamma;
use super::fma::{Params, declare_params};
use super::tc_plan::{TC_SLICE, TcBackwardLayout, out_width, tc_layout};
use super::{Role, THREADS, padded_dims, walk_chunks};
use crate::GenError;
use crate::blocks::cta::{cta_row_head_thread, mma_types, warp_lane, warp_role};
use crate::blocks::decay::{TableFill, emit_decay_table, heads_and_log2_gamma, table_entry};
use crate::blocks::global::GlobalRows;
use crate::blocks::staging::{ColumnTail, copy_chunk_out, stage_tile_masked};
use crate::dsl::tiles::{AccTileF32, LaneFragments};
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, Reg, Rounding, Space, Sreg, Ty};
use crate::math::chunk_tiling::exact_dims;
use crate::math::kernel_head::start_kernel;
use crate::math::scores::{Diagonal, xi_rows, zeta_rows};
use crate::math::state_update::{
    StateK, StateV, accumulate_state_slices, mma_state_step, xi_quad, zeta_quad,
};
use crate::spec::KernelSpec;

/// Warps per CTA.
const WARPS: u32 = THREADS / 32;
/// The kernel's title line.
const TITLE: &str = "retention chunkwise backward (tensor cores)";

/// What the kernel computes, as its header says.
fn formula(role: Role) -> &'static str {
    match role {
        Role::Dq => {
            "dQ = (s dO V^T . D) K + s (dO . xi) R^T ; R <- g^L R + K^T (V . zeta)  (mma, f32)"
        }
        Role::Dk => {
            "dK = (s dO V^T . D)^T Q + (V . zeta) dR^T ; dR <- g^L dR + s Q^T (dO . xi)  (mma, f32)"
        }
        Role::Dv => {
            "dV = s (Q K^T . D)^T dO + (K . zeta) dR ; dR <- g^L dR + s Q^T (dO . xi)  (mma, f32)"
        }
    }
}

/// The kernel's shape and the per-lane registers every phase reads.
struct Tc {
    role: Role,
    lay: TcBackwardLayout,
    base: Reg,
    t: Reg,
    pty: Ty,
    ab: Ty,
    lanes: LaneFragments,
    warp: Reg,
    g: Reg,
    q4: Reg,
    q2: Reg,
    /// 16w: the warp's first chunk row.
    i0: Reg,
    x_rows: Reg,
    y_rows: Reg,
    w_rows: Reg,
    rh_rows: Reg,
    rl_rows: Reg,
    scale: Reg,
    heads: Reg,
    h: Reg,
    /// First column of N this CTA serves.
    n0: Reg,
    /// Real (P, N), padded P, the `[K,V]` state's V, C, the output strip width, element bytes.
    pg: u32,
    ng: u32,
    pd: u32,
    state_v: u32,
    c: u32,
    ow: u32,
    es: u32,
    tail: bool,
}

/// Global views: x, y rows; w, the gradient and the own input (q for dq, k for dk: d log γ)
/// from this CTA's first column; the padded tiles' real columns.
struct Globals {
    x: Reg,
    y: Reg,
    w: Reg,
    grad: Reg,
    own: Option<Reg>,
    tails: Option<(ColumnTail, ColumnTail)>,
}

#[path = "tc_state.rs"]
mod state;

/// The warp's f32 state: slice j holds rows 16(w + 8j).. (their coordinates are recomputed
/// where needed, so nothing but the accumulators stays live across the walk).
struct TcState {
    raccs: Vec<AccTileF32>,
}

/// d log γ bookkeeping: this thread's partial and T − 1 as f32.
struct Dlog {
    dlg: Reg,
    t_last: Reg,
}

/// Emit the `role` kernel for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec, role: Role) -> Result<crate::dsl::Kernel, GenError> {
    let lay = tc_layout(spec);
    let c = spec.chunk.unwrap_or_default();
    let log2_gammas = spec.gammas.log2_gammas()?;
    let mut kb = start_kernel(spec, TITLE, formula(role), (THREADS, true));
    let p = declare_params(&mut kb, spec, role);
    let smem = kb.dynamic_shared("smem", lay.total, 128, &lay.describe());

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y, 64 columns z = ctaid.z)");
    let (b, h, t) = cta_row_head_thread(&mut kb);
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let (lane, warp, g, q4) = warp_lane(&mut kb, t);
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, p.runtime.as_ref(), log2_gammas.as_deref(), h);
    let seq_len = kb.ld_param(&p.lengths);
    let tok0 = kb.mul_lo(b, seq_len);
    let base = kb.shared_addr(&smem);
    let fill = TableFill::Rounds {
        t,
        threads: THREADS,
        reuse_t: true,
    };
    emit_decay_table(&mut kb, fill, (base, lay.decay), c, log2_gamma);
    scaled_table(&mut kb, (base, t), &lay, c, &p);

    let x = Tc::new(
        &mut kb,
        spec,
        role,
        (lay, base, t),
        (warp, g, q4, lane),
        (z, heads, h),
        &p,
    );
    let gl = x.globals(&mut kb, &p);
    let state = x.load_state(&mut kb, &p);
    let t_last = kb.max(seq_len, 1u32);
    let t_last = kb.sub(t_last, 1u32);
    let dl = Dlog {
        dlg: kb.mov(Ty::F32, 0.0f32),
        t_last: kb.cvt(Ty::F32, t_last, Some(Rounding::Rn)),
    };

    walk_chunks(
        &mut kb,
        (role, c),
        (tok0, seq_len, t_last),
        |kb, (tok_c, len, c0)| {
            x.stage_chunk(kb, &gl, (tok_c, len));
            x.rows(kb, &gl, &dl, (tok_c, c0, len));
            kb.bar_sync(0);
            x.update_state(kb, &state, len);
            kb.comment("S~ <- S rounded and its rest; gradient rows < L leave as 16-byte pieces");
            x.store_rh(kb, &state);
            x.copy_out(kb, &gl, (tok_c, len));
            kb.bar_sync(0);
        },
    );

    if let (Some(dh0), Some(h0)) = (&p.dh0, &p.h0) {
        kb.comment("dH0 = S when asked for; d log gamma's T <H0, dH0>");
        x.finish_dv(&mut kb, &state, (dh0, h0), (dl.dlg, seq_len));
    }
    if role == Role::Dk {
        let neg = kb.neg(dl.dlg);
        kb.assign(dl.dlg, neg);
    }
    kb.comment("this thread's d log gamma partial, when asked for");
    let (_, n) = padded_dims(spec);
    dlog_gamma::store_partial(&mut kb, &p.dlog, dl.dlg, n / TC_SLICE);
    kb.ret();
    kb.finish()
}

/// s·γ^d beside the decay table, entry t by thread t (which wrote γ^t itself).
fn scaled_table(
    kb: &mut KernelBuilder,
    (base, t): (Reg, Reg),
    lay: &TcBackwardLayout,
    c: u32,
    p: &Params,
) {
    let scale = kb.ld_param(&p.scale);
    let in_table = kb.setp(Cmp::Le, t, c);
    kb.guarded(in_table, false, |kb| {
        let (at, g) = table_entry(kb, (base, lay.decay), t);
        let sg = kb.mul(g, scale);
        kb.st(Space::Shared, Address::reg(at, i64::from(lay.decay_s)), sg);
    });
}

impl Tc {
    /// The shape of `spec` and the per-lane `ldmatrix` rows (warp w owns chunk rows 16w..).
    #[allow(clippy::too_many_arguments)]
    fn new(
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        role: Role,
        (lay, base, t): (TcBackwardLayout, Reg, Reg),
        (warp, g, q4, lane): (Reg, Reg, Reg, Reg),
        (z, heads, h): (Reg, Reg, Reg),
        p: &Params,
    ) -> Self {
        let (pg, ng) = role.dims(spec.k, spec.v);
        let (pd, _) = padded_dims(spec);
        let (ab, pty) = mma_types(spec.dtype);
        kb.comment("per-lane ldmatrix rows; warp w owns rows 16w.. of the chunk and of the state");
        let lanes = LaneFragments::new(kb, lane);
        let zero = kb.mov(Ty::U32, 0u32);
        let i0 = kb.shl(warp, 4u32);
        let q2 = kb.shl(q4, 1u32);
        let n0 = kb.mul_lo(z, TC_SLICE);
        let scale = kb.ld_param(&p.scale);
        Tc {
            role,
            lay,
            base,
            t,
            pty,
            ab,
            lanes,
            warp,
            g,
            q4,
            q2,
            i0,
            x_rows: lay.x.lane_rows(kb, base, i0, lanes.p1_row),
            y_rows: lay.y.lane_rows(kb, base, zero, lanes.p2_row),
            w_rows: lay.w.lane_rows(kb, base, zero, lanes.p1_row),
            rh_rows: lay.rh.lane_rows(kb, base, zero, lanes.p1_row),
            rl_rows: lay.rl.lane_rows(kb, base, zero, lanes.p1_row),
            scale,
            heads,
            h,
            n0,
            pg,
            ng,
            pd,
            state_v: spec.v,
            c: spec.chunk.unwrap_or_default(),
            ow: out_width(spec),
            es: spec.dtype.size_bytes() as u32,
            tail: !exact_dims(spec),
        }
    }

    /// The role's operands: (x, y, w) = (dO, V, K) for dq, (V, dO, Q) for dk, (K, Q, dO) for dv.
    fn globals(&self, kb: &mut KernelBuilder, p: &Params) -> Globals {
        let (x, y, w, own) = match self.role {
            Role::Dq => (&p.d_o, &p.v, &p.k, Some(&p.q)),
            Role::Dk => (&p.v, &p.d_o, &p.q, Some(&p.k)),
            Role::Dv => (&p.k, &p.q, &p.d_o, None),
        };
        let col_bytes = kb.mul_wide(self.n0, self.es);
        let w = kb.global_ptr(w);
        let grad = kb.global_ptr(&p.grad);
        let tails = self.tail.then(|| {
            let pt = ColumnTail::new(kb, None, self.pg);
            let nt = ColumnTail::new(kb, Some(self.n0), self.ng);
            (pt, nt)
        });
        Globals {
            x: kb.global_ptr(x),
            y: kb.global_ptr(y),
            w: kb.add(w, col_bytes),
            grad: kb.add(grad, col_bytes),
            own: own.map(|o| {
                let o = kb.global_ptr(o);
                kb.add(o, col_bytes)
            }),
            tails,
        }
    }

    /// `cp.async` the chunk's x, y rows and the 64 columns of w (and of q or k: d log γ)
    /// (rows ≥ L zero-filled).
    fn stage_chunk(&self, kb: &mut KernelBuilder, gl: &Globals, (tok_c, len): (Reg, Reg)) {
        kb.comment("cp.async x, y, w (and own) rows of the chunk (rows >= L zero-filled)");
        let lay = &self.lay;
        let (pt, nt) = (gl.tails.map(|t| t.0), gl.tails.map(|t| t.1));
        let own = gl.own.map(|o| (lay.own, o, self.ng, nt));
        for (tile, src, row_elems, cols) in [
            (lay.x, gl.x, self.pg, pt),
            (lay.y, gl.y, self.pg, pt),
            (lay.w, gl.w, self.ng, nt),
        ]
        .into_iter()
        .chain(own)
        {
            let rows = GlobalRows {
                src,
                row_bytes: row_elems * self.es,
                tok_c,
                heads: self.heads,
                h: self.h,
                len,
            };
            stage_tile_masked(kb, tile, self.base, self.t, THREADS, &rows, cols);
        }
        kb.cp_async_commit();
        kb.cp_async_wait(0);
        kb.bar_sync(0);
    }

    /// Rows 16w.. of the chunk: A = s·(X Yᵀ ⊙ D), then O = λ ⊙ X (S̃ + rest) + (Ã + rest) W,
    /// `ow` columns at a time, into the gradient tile (and the d log γ terms of dq, dk).
    fn rows(&self, kb: &mut KernelBuilder, gl: &Globals, dl: &Dlog, ch: (Reg, Reg, Reg)) {
        let (lay, c, ow) = (&self.lay, self.c, self.ow);
        kb.comment("rows 16w..: A = s (X Y^T . D) on tensor cores");
        let skip = warp_role(kb, self.warp, c / 16, WARPS);
        let sacc = AccTileF32::zeros(kb, c);
        // Whole-width output strips take their state term in the same pass over P as the
        // scores, so each x fragment is read once.
        let fused = (ow == TC_SLICE).then(|| AccTileF32::zeros(kb, ow));
        for ks in 0..self.pd / 16 {
            let xa = self.x_frag(kb, ks);
            if let Some(oacc) = &fused {
                self.state_term_step(kb, oacc, xa, (ks, 0));
            }
            for np in 0..c / 16 {
                let yf = lay.y.ldmatrix_x4(
                    kb,
                    self.pty,
                    false,
                    self.y_rows,
                    16 * np,
                    2 * ks,
                    self.lanes.p2_x,
                );
                sacc.mma_pair(kb, self.ab, 2 * np as usize, xa, yf);
            }
        }
        let d1 = kb.add(self.i0, self.g);
        let diag = Diagonal::new(kb, d1, self.q2);
        let masked = if self.role.reverse() {
            diag.mask_reverse(kb, &sacc, (self.base, lay.decay), 0)
        } else {
            diag.mask(kb, &sacc, self.base, lay.decay, 0)
        };
        masked.scale(kb, self.scale);
        let rest = masked.rounding_rest(kb, self.ab);
        let sa = [
            masked.to_a_fragments(kb, self.ab),
            rest.to_a_fragments(kb, self.ab),
        ];
        let (lam_lo, lam_hi) = self.lambda_rows(kb, d1, ch.2);
        kb.comment(format!("O = lambda . X S + A W, {ow} columns at a time"));
        for slice in 0..TC_SLICE / ow {
            let oacc = if let Some(oacc) = &fused {
                oacc.clone()
            } else {
                let oacc = AccTileF32::zeros(kb, ow);
                for ks in 0..self.pd / 16 {
                    let xa = self.x_frag(kb, ks);
                    self.state_term_step(kb, &oacc, xa, (ks, slice));
                }
                oacc
            };
            oacc.scale_rows(kb, lam_lo, lam_hi);
            for a in &sa {
                self.intra(kb, &oacc, a, slice);
            }
            if gl.own.is_some() {
                self.dlog_rows(kb, &oacc, dl, (d1, slice), ch.1);
            }
            let (g, q4) = (self.g, self.q4);
            lay.o.store_acc(
                kb,
                self.base,
                &oacc,
                self.ab,
                self.i0,
                g,
                q4,
                ow / 8 * slice,
            );
        }
        if let Some(skip) = skip {
            kb.place(skip);
        }
    }

    /// `oacc += X_w[:, 16ks..] (S̃ + rest)[16ks.., strip]`: one 16-deep step of P of the state
    /// term, for output strip `slice` (`ow` columns), from both state tiles.
    fn state_term_step(
        &self,
        kb: &mut KernelBuilder,
        oacc: &AccTileF32,
        xa: [Reg; 4],
        (ks, slice): (u32, u32),
    ) {
        let ow = self.ow;
        for (tile, rows) in [(&self.lay.rh, self.rh_rows), (&self.lay.rl, self.rl_rows)] {
            let chunks = (0..ow / 16).map(|np| Operand::from(ow / 8 * slice + 2 * np));
            let state = (tile, rows, &self.lanes);
            mma_state_step(kb, oacc, (xa, ks), state, chunks, (self.pty, self.ab));
        }
    }

    /// The warp's x fragment (rows 16w..) at 16-deep step `ks` of P.
    fn x_frag(&self, kb: &mut KernelBuilder, ks: u32) -> [Reg; 4] {
        self.lay
            .x
            .ldmatrix_x4(kb, self.pty, false, self.x_rows, 0, 2 * ks, self.lanes.p1_x)
    }

    /// λ for the lane's rows d1 and d1 + 8: s·ξ (dq) or ζ (dk, dv).
    fn lambda_rows(&self, kb: &mut KernelBuilder, d1: Reg, len: Reg) -> (Reg, Reg) {
        let table = (self.base, self.lay.decay);
        if self.role.reverse() {
            zeta_rows(kb, table, d1, len)
        } else {
            let (lo, hi) = xi_rows(kb, table, d1);
            (kb.mul(lo, self.scale), kb.mul(hi, self.scale))
        }
    }

    /// `oacc += A W[:, slice]` for the packed score fragments `sa` (16 rows of W each).
    fn intra(&self, kb: &mut KernelBuilder, oacc: &AccTileF32, sa: &[[Reg; 4]], slice: u32) {
        for (ks, a) in sa.iter().enumerate() {
            for np in 0..self.ow / 16 {
                let chunk = self.ow / 8 * slice + 2 * np;
                let wf = self.lay.w.ldmatrix_x4(
                    kb,
                    self.pty,
                    true,
                    self.w_rows,
                    16 * ks as u32,
                    chunk,
                    self.lanes.p1_x,
                );
                oacc.mma_pair(kb, self.ab, np as usize * 2, *a, wf);
            }
        }
    }

    /// dlg += Σ (t − T + 1)⟨own_t, grad_t⟩ over the lane's gradient elements (dk negates the
    /// sum at the end),
    /// own (q or k) read from its staged tile at the same rows and columns (rows ≥ L and
    /// columns past N are zero there).
    fn dlog_rows(
        &self,
        kb: &mut KernelBuilder,
        oacc: &AccTileF32,
        dl: &Dlog,
        (d1, slice): (Reg, u32),
        c0: Reg,
    ) {
        let q4b = kb.shl(self.q4, 2u32);
        for half in 0..2u32 {
            let row = kb.add(d1, 8 * half);
            let pos = kb.add(c0, row);
            let weight = dlog_gamma::weight(kb, pos, dl.t_last);
            for (nt, f) in oacc.frags.iter().enumerate() {
                let chunk = kb.mov(Ty::U32, self.ow / 8 * slice + nt as u32);
                let at = self.lay.own.chunk_addr(kb, self.base, row, chunk);
                let at = kb.add(at, q4b);
                let pair = kb.ld(Space::Shared, self.pty, Address::reg(at, 0));
                let (lo, hi) = kb.unpack(pair);
                let lo = kb.cvt(Ty::F32, lo, None);
                let hi = kb.cvt(Ty::F32, hi, None);
                let i = 2 * half as usize;
                let dot = kb.mul(lo, f[i]);
                let dot = kb.fma(hi, f[i + 1], dot);
                kb.fma_into(dl.dlg, weight, dot, dl.dlg);
            }
        }
    }

    /// State rows 16(w + 8j)..: S ← γ^L S + (Yᵀ ⊙ u) W.
    fn update_state(&self, kb: &mut KernelBuilder, st: &TcState, len: Reg) {
        let (lay, c) = (&self.lay, self.c);
        kb.comment("state rows 16(w + 8j)..: S <- gamma^L S + (Y^T . u) W");
        let skip = warp_role(kb, self.warp, self.pd / 16, WARPS);
        let (_, g_len) = table_entry(kb, (self.base, lay.decay), len);
        for racc in &st.raccs {
            racc.scale(kb, g_len);
        }
        // ζ index + C = L + C − 1 − j (see `zeta_quad`).
        let z1 = kb.add(len, c - 1);
        let z_base = kb.sub(z1, self.q2);
        let y_chunk = kb.shl(self.warp, 1u32);
        for ks in 0..c / 16 {
            let w = StateV {
                tile: lay.w,
                rows: self.w_rows,
                row0: 16 * ks,
                lane_x: self.lanes.p1_x,
                cols: TC_SLICE,
            };
            // Slice j's rows of Yᵀ: columns 16(w + 8j).. of the y tile.
            let y = StateK {
                tile: lay.y,
                rows: self.y_rows,
                lane_x: self.lanes.p2_x,
                chunk0: y_chunk,
                stride: 2 * WARPS,
            };
            // u = s·ξ walking backwards (dk: y = s·dO, dv: y = s·Q), ζ forwards (dq).
            let u = |kb: &mut KernelBuilder| {
                if self.role.reverse() {
                    xi_quad(kb, self.q2, 16 * ks, (self.base, lay.decay_s))
                } else {
                    zeta_quad(kb, z_base, 16 * ks, c, (self.base, lay.decay))
                }
            };
            accumulate_state_slices(kb, &st.raccs, (&y, &w), u, (self.pty, self.ab));
        }
        if let Some(skip) = skip {
            kb.place(skip);
        }
        kb.bar_sync(0);
    }

    /// Gradient rows < L leave the gradient tile as whole 16-byte pieces.
    fn copy_out(&self, kb: &mut KernelBuilder, gl: &Globals, (tok_c, len): (Reg, Reg)) {
        let per_row = TC_SLICE / 8;
        let ch = kb.and(self.t, per_row - 1);
        let row0 = kb.shr(self.t, per_row.trailing_zeros());
        let ch_bytes = kb.mul_wide(ch, 16u32);
        let ch_at = kb.add(gl.grad, ch_bytes);
        let ch8 = gl.tails.map(|t| (kb.shl(ch, 3u32), t.1));
        for round in 0..self.c * per_row / THREADS {
            let row = kb.add(row0, round * THREADS / per_row);
            let inside = kb.setp(Cmp::Lt, row, len);
            let tok = kb.add(tok_c, row);
            let th = kb.mad_lo(tok, self.heads, self.h);
            let dst = kb.mad_wide(th, self.ng * self.es, ch_at);
            let src = self.lay.o.chunk_addr(kb, self.base, row, ch);
            copy_chunk_out(kb, src, dst, inside, ch8);
        }
    }
}
