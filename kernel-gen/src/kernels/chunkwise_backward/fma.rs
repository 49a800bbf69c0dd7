//! The FMA generator of the three chunkwise-backward kernels (f32, f16 and bf16 inputs, f32
//! accumulation): one generic walk over chunks, specialised by [`Role`]. Math, parameters,
//! grid and shared memory: the family's module docs.

use retention_core::Dtype;

use super::dlog_gamma;
use super::{
    BackwardLayout, P_BLOCK, Role, THREADS, column_slice, layout, padded_dims, walk_chunks,
};
use crate::GenError;
use crate::blocks::decay::{self, heads_and_log2_gamma};
use crate::blocks::fma::{StagedChunk, accumulate_shared, for_each_piece, load_piece, store_piece};
use crate::blocks::fma_weighted::{WeightStep, accumulate_weighted_outer};
use crate::blocks::global::{row_limit, store_from_f32_masked};
use crate::blocks::staging::Stager;
use crate::dsl::{
    Address, Axis, Cmp, KernelBuilder, Operand, ParamRef, Reg, Rounding, Space, Sreg, Ty,
};
use crate::math::chunk_params::{declare_lengths, declare_runtime_gamma, sequence_bounds};
use crate::math::kernel_head::start_kernel;
use crate::spec::{GammaSet, KernelSpec};

/// The kernel parameters (the family's table).
pub(super) struct Params {
    pub(super) q: ParamRef,
    pub(super) k: ParamRef,
    pub(super) v: ParamRef,
    pub(super) d_o: ParamRef,
    pub(super) grad: ParamRef,
    pub(super) state: ParamRef,
    pub(super) dh0: Option<ParamRef>,
    pub(super) h0: Option<ParamRef>,
    pub(super) dlog: ParamRef,
    /// `p_t` (dense) or `p_cu_seqlens` (varlen).
    pub(super) lengths: ParamRef,
    pub(super) scale: ParamRef,
    pub(super) runtime: Option<(ParamRef, ParamRef)>,
}

pub(super) fn declare_params(kb: &mut KernelBuilder, spec: &KernelSpec, role: Role) -> Params {
    let runtime = spec.gammas == GammaSet::Runtime;
    Params {
        q: kb.param("p_q", Ty::U64),
        k: kb.param("p_k", Ty::U64),
        v: kb.param("p_v", Ty::U64),
        d_o: kb.param("p_do", Ty::U64),
        grad: kb.param("p_grad", Ty::U64),
        state: kb.param("p_state", Ty::U64),
        dh0: (role == Role::Dv).then(|| kb.param("p_dh0", Ty::U64)),
        h0: (role == Role::Dv).then(|| kb.param("p_h0", Ty::U64)),
        dlog: kb.param("p_dlog_gamma", Ty::U64),
        lengths: declare_lengths(kb, spec),
        scale: kb.param("p_scale", Ty::F32),
        runtime: declare_runtime_gamma(kb, runtime),
    }
}

/// Sizes every step reads: real and padded dims, slice, chunk, element bytes.
#[derive(Clone, Copy)]
struct Dims {
    /// Real (P, N) and the `[K,V]` state's V (its row length in global memory).
    pg: u32,
    ng: u32,
    state_v: u32,
    /// Padded P.
    pd: u32,
    /// Columns of N this CTA serves.
    ns: u32,
    c: u32,
    es: u32,
}

/// The CTA's fixed registers.
struct Cta {
    base: Reg,
    t: Reg,
    h: Reg,
    heads: Reg,
    /// First column of N this CTA serves.
    n0: Reg,
    /// Byte offset of (b, h)'s `[K,V]` state.
    bh_bytes: Reg,
}

/// Emit the `role` kernel for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec, role: Role) -> Result<crate::dsl::Kernel, GenError> {
    let (pg, ng) = role.dims(spec.k, spec.v);
    let (pd, _) = padded_dims(spec);
    let d = Dims {
        pg,
        ng,
        state_v: spec.v,
        pd,
        ns: column_slice(spec),
        c: spec.chunk.unwrap_or_default(),
        es: spec.dtype.size_bytes() as u32,
    };
    let lay = layout(spec);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let formula = match role {
        Role::Dq => "dQ = (s dO V^T . D) K + s (dO . xi) R^T ; R <- g^L R + K^T (V . zeta)",
        Role::Dk => "dK = (s dO V^T . D)^T Q + (V . zeta) dR^T ; dR <- g^L dR + s Q^T (dO . xi)",
        Role::Dv => "dV = s (Q K^T . D)^T dO + (K . zeta) dR ; dR <- g^L dR + s Q^T (dO . xi)",
    };
    let title = "retention chunkwise backward";
    let mut kb = start_kernel(spec, title, formula, (THREADS, true));
    let p = declare_params(&mut kb, spec, role);
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        16,
        &format!(
            "f32 S [P,Ns] @{}, x^T [64,C] @{}, y^T [64,C] @{}, w [C,Ns] @{}, scores [C,C] @{}, state term [C,Ns] @{}, gamma^d [C+1] @{}",
            lay.s, lay.xt, lay.yt, lay.w, lay.sc, lay.os, lay.decay
        ),
    );

    kb.comment(if spec.op.is_varlen() {
        "one CTA per (sequence n = ctaid.x, head h = ctaid.y, column slice z = ctaid.z)"
    } else {
        "one CTA per (row b = ctaid.x, head h = ctaid.y, column slice z = ctaid.z)"
    });
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, p.runtime.as_ref(), log2_gammas.as_deref(), h);
    let (tok0, seq_len) = sequence_bounds(&mut kb, spec, &p.lengths, b);
    let base = kb.shared_addr(&smem);
    let n0 = kb.mul_lo(z, d.ns);
    let bh = kb.mad_lo(b, heads, h);
    let bh_bytes = kb.mul_wide(bh, spec.k * spec.v * 4);
    let cta = Cta {
        base,
        t,
        h,
        heads,
        n0,
        bh_bytes,
    };

    decay_table(&mut kb, &cta, &lay, d.c, log2_gamma);
    kb.comment(match role {
        Role::Dq => "S = H0^T (or 0)",
        Role::Dk => "S = dH_T^T (or 0)",
        Role::Dv => "S = dH_T (or 0)",
    });
    move_state(&mut kb, role, &cta, &d, &p.state, StateMove::Load);
    kb.bar_sync(0);

    let (x, y, w, scaled) = match role {
        Role::Dq => (&p.d_o, &p.v, &p.k, Scaled::X),
        Role::Dk => (&p.v, &p.d_o, &p.q, Scaled::Y),
        Role::Dv => (&p.k, &p.q, &p.d_o, Scaled::Y),
    };
    let own = match role {
        Role::Dq => Some(kb.global_ptr(&p.q)),
        Role::Dk => Some(kb.global_ptr(&p.k)),
        Role::Dv => None,
    };
    let t_last = kb.max(seq_len, 1u32);
    let t_last = kb.sub(t_last, 1u32);
    let ptrs = Ptrs {
        x: kb.global_ptr(x),
        y: kb.global_ptr(y),
        w: kb.global_ptr(w),
        grad: kb.global_ptr(&p.grad),
        scale: kb.ld_param(&p.scale),
        scaled,
        own,
        dlg: kb.mov(Ty::F32, 0.0f32),
        t_last: kb.cvt(Ty::F32, t_last, Some(Rounding::Rn)),
    };
    chunk_loop(
        &mut kb,
        spec.dtype,
        role,
        &cta,
        &d,
        &lay,
        &ptrs,
        (tok0, seq_len),
    );

    if let (Some(dh0), Some(h0)) = (&p.dh0, &p.h0) {
        kb.comment("dH0 = S when asked for; d log gamma's T <H0, dH0>");
        move_state(&mut kb, role, &cta, &d, dh0, StateMove::Store);
        move_state(&mut kb, role, &cta, &d, h0, StateMove::Dot(ptrs.dlg));
        let tf = kb.cvt(Ty::F32, seq_len, Some(Rounding::Rn));
        let scaled = kb.mul(ptrs.dlg, tf);
        kb.assign(ptrs.dlg, scaled);
    }
    kb.comment("this thread's d log gamma partial, when asked for");
    let (_, n) = padded_dims(spec);
    dlog_gamma::store_partial(&mut kb, &p.dlog, ptrs.dlg, n / d.ns);
    kb.ret();
    kb.finish()
}

/// Which staged operand carries the scale s.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scaled {
    X,
    Y,
}

/// Global pointers of the operands and the scale.
struct Ptrs {
    x: Reg,
    y: Reg,
    w: Reg,
    grad: Reg,
    scale: Reg,
    scaled: Scaled,
    /// q (dq kernel) or k (dk kernel): the input paired with the gradient in d log γ.
    own: Option<Reg>,
    /// This thread's d log γ partial (f32).
    dlg: Reg,
    /// T − 1 as f32.
    t_last: Reg,
}

/// The decay table γ^d = 2^(d log2 γ), d = 0..=C (relative exponents only).
fn decay_table(kb: &mut KernelBuilder, cta: &Cta, lay: &BackwardLayout, c: u32, log2_gamma: Reg) {
    kb.comment(format!(
        "decay table gamma^d = 2^(d log2 gamma), d = 0..={c}, relative exponents only"
    ));
    let in_table = kb.setp(Cmp::Le, cta.t, c);
    kb.guarded(in_table, false, |kb| {
        let dd = kb.cvt(Ty::F32, cta.t, Some(Rounding::Rn));
        let x = kb.mul(dd, log2_gamma);
        let g = decay::emit_exp2(kb, x);
        let t4 = kb.shl(cta.t, 2u32);
        let at = kb.add(cta.base, t4);
        kb.st(Space::Shared, Address::reg(at, i64::from(lay.decay)), g);
    });
}

/// Whether [`move_state`] fills S from global memory, writes it there, or adds
/// ⟨global, S⟩ to a register.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StateMove {
    Load,
    Store,
    Dot(Reg),
}

/// Move S `[Pd][Ns]` (offset 0 of shared memory) from or to the `[K,V]` f32 state of (b, h) at
/// `param` (nothing when it is 0), transposed for dq and dk; one element per thread a step.
/// Loading writes every element of S (0 past the real dims or without a state).
fn move_state(
    kb: &mut KernelBuilder,
    role: Role,
    cta: &Cta,
    d: &Dims,
    param: &ParamRef,
    dir: StateMove,
) {
    let raw = kb.ld_param(param);
    let given = kb.setp(Cmp::Ne, raw, 0u64);
    let ng = kb.mov(Ty::U32, d.ng);
    let ng_given = kb.selp(ng, 0u32, given);
    let ptr = kb.global_ptr(param);
    let ptr = kb.add(ptr, cta.bh_bytes);
    let skip = kb.label();
    if dir != StateMove::Load {
        kb.bra_if(given, true, skip);
    }
    let ns_shift = d.ns.trailing_zeros();
    kb.for_range(cta.t, d.pd * d.ns, THREADS, |kb, e| {
        let row = kb.shr(e, ns_shift);
        let col = kb.and(e, d.ns - 1);
        let gn = kb.add(col, cta.n0);
        let row_in = kb.setp(Cmp::Lt, row, d.pg);
        let limit = kb.selp(ng_given, 0u32, row_in);
        let ok = kb.setp(Cmp::Lt, gn, limit);
        let gidx = if role.transposed() {
            kb.mad_lo(gn, d.state_v, row)
        } else {
            kb.mad_lo(row, d.state_v, gn)
        };
        let goff = kb.mul_wide(gidx, 4u32);
        let gat = kb.add(ptr, goff);
        let e4 = kb.shl(e, 2u32);
        let sat = kb.add(cta.base, e4);
        match dir {
            StateMove::Load => {
                let val = kb.mov(Ty::F32, 0.0f32);
                kb.guarded(ok, false, |kb| {
                    let x = kb.ld(Space::Global, Ty::F32, Address::reg(gat, 0));
                    kb.assign(val, x);
                });
                kb.st(Space::Shared, Address::reg(sat, 0), val);
            }
            StateMove::Store => {
                kb.guarded(ok, false, |kb| {
                    let x = kb.ld(Space::Shared, Ty::F32, Address::reg(sat, 0));
                    kb.st(Space::Global, Address::reg(gat, 0), x);
                });
            }
            StateMove::Dot(acc) => {
                kb.guarded(ok, false, |kb| {
                    let x = kb.ld(Space::Shared, Ty::F32, Address::reg(sat, 0));
                    let g = kb.ld(Space::Global, Ty::F32, Address::reg(gat, 0));
                    kb.fma_into(acc, x, g, acc);
                });
            }
        }
    });
    kb.place(skip);
}

/// γ^(n − back) from the shared decay table (f32 entries from `lay.decay`; `back` shifts the
/// address down by whole entries, for a table read offset by a constant), and the address
/// `base + 4n` it was read at (before the table's offset).
fn decay_at(
    kb: &mut KernelBuilder,
    base: Reg,
    lay: &BackwardLayout,
    (n, back): (Reg, u32),
) -> (Reg, Reg) {
    let n4 = kb.shl(n, 2u32);
    let at = kb.add(base, n4);
    let offset = i64::from(lay.decay) - 4 * i64::from(back);
    (at, kb.ld(Space::Shared, Ty::F32, Address::reg(at, offset)))
}

/// Walk the chunks (forwards for dq, backwards for dk and dv).
#[allow(clippy::too_many_arguments)]
fn chunk_loop(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    role: Role,
    cta: &Cta,
    d: &Dims,
    lay: &BackwardLayout,
    ptrs: &Ptrs,
    (tok0, seq_len): (Reg, Reg),
) {
    let walk = Walk {
        dtype,
        cta,
        d,
        lay,
        ptrs,
    };
    let c = d.c;
    let stage_x = Stager::new(kb, cta.t, P_BLOCK, c, THREADS);
    let stage_w = Stager::new(kb, cta.t, d.ns, c, THREADS);
    let t1 = kb.max(seq_len, 1u32);
    let t_last = kb.sub(t1, 1u32);
    walk_chunks(
        kb,
        (role, c),
        (tok0, seq_len, t_last),
        |kb, (tok_c, len, c0)| {
            let ch = Chunk { tok_c, len, c0 };

            kb.comment("stage w [C, Ns] (zeros past L and N); zero the score and state-term tiles");
            stage_w_tile(kb, &walk, &stage_w, &ch);
            zero_tiles(kb, cta, d, lay);

            kb.comment("per block of 64 rows of P: scores += x y^T, state term += x S, S updated");
            kb.for_range(0u32, d.pd, P_BLOCK, |kb, p0| {
                stage_xy(kb, &walk, &stage_x, &ch, p0);
                kb.bar_sync(0);
                accumulate_scores(kb, cta, d, lay, p0);
                kb.bar_sync(0);
                update_state(kb, role, cta, d, lay, p0, len);
                kb.bar_sync(0);
            });

            mask_scores(kb, role, cta, c, lay);
            kb.bar_sync(0);
            write_gradient(kb, &walk, role, &ch);
            kb.bar_sync(0);
        },
    );
}

/// What every staging and output step of the chunk walk reads: the dtype, the CTA's
/// registers, the sizes, the shared layout and the global pointers.
#[derive(Clone, Copy)]
struct Walk<'a> {
    dtype: Dtype,
    cta: &'a Cta,
    d: &'a Dims,
    lay: &'a BackwardLayout,
    ptrs: &'a Ptrs,
}

/// The current chunk: its first token (flattened over rows) and length L.
struct Chunk {
    tok_c: Reg,
    len: Reg,
    /// First token of the chunk within its sequence.
    c0: Reg,
}

/// Where a stager's rows of a token-major tensor are: the tensor column of the thread's
/// first element (`stage.col + col0`), its byte offset from the tensor's start in the chunk's
/// first round, and the bytes between rounds (rows are `row_bytes` long, H per token).
fn staged_rows(
    kb: &mut KernelBuilder,
    cta: &Cta,
    stage: &Stager,
    (ch, col0): (&Chunk, Reg),
    row_bytes: u32,
    es: u32,
) -> (Reg, Reg, Reg) {
    let col = kb.add(stage.col, col0);
    let col_bytes = kb.mul_wide(col, es);
    let tok = kb.add(ch.tok_c, stage.row);
    let th = kb.mad_lo(tok, cta.heads, cta.h);
    let off = kb.mad_wide(th, row_bytes, col_bytes);
    let step = kb.mul_wide(cta.heads, stage.rows_per_round * row_bytes);
    (col, off, step)
}

/// Stage w `[C][Ns]` as f32, zeros past L and past N.
fn stage_w_tile(kb: &mut KernelBuilder, walk: &Walk<'_>, stage: &Stager, ch: &Chunk) {
    let (dtype, cta, d, lay, ptrs) = (walk.dtype, walk.cta, walk.d, walk.lay, walk.ptrs);
    let (col, off, step) = staged_rows(kb, cta, stage, (ch, cta.n0), d.ng * d.es, d.es);
    let first = kb.add(ptrs.w, off);
    let elem = kb.mad_lo(stage.row, d.ns, stage.col);
    let sh_off = kb.shl(elem, 2u32);
    let sh = kb.add(cta.base, sh_off);
    let sh = kb.add(sh, lay.w);
    let shared = (sh, stage.rows_per_round * d.ns * 4);
    stage.stage_f32_rows(kb, dtype, (first, step), ch.len, shared, Some((col, d.ng)));
}

/// Zero the score tile `[C][C]` and the state-term tile `[C][Ns]`, each thread the pieces it
/// later accumulates into (so no barrier is needed before its own read-modify-writes).
fn zero_tiles(kb: &mut KernelBuilder, cta: &Cta, d: &Dims, lay: &BackwardLayout) {
    let zero: Operand = 0.0f32.into();
    let c = d.c;
    for_each_piece(kb, cta.t, THREADS, c, c, |kb, pc| {
        let at = tile_at(kb, cta.base, lay.sc, (pc.col, pc.row), c);
        for r in 0..4u32 {
            let a = Address::reg(at, i64::from(r * c * 4));
            kb.st_vec(Space::Shared, Ty::F32, a, &[zero; 4]);
        }
    });
    for_each_piece(kb, cta.t, THREADS, c, d.ns, |kb, pc| {
        let at = tile_at(kb, cta.base, lay.os, (pc.row, pc.col), d.ns);
        for r in 0..4u32 {
            let a = Address::reg(at, i64::from(r * d.ns * 4));
            kb.st_vec(Space::Shared, Ty::F32, a, &[zero; 4]);
        }
    });
}

/// Shared address of column `col` of row 0 of an f32 tile at `offset`.
fn column_at(kb: &mut KernelBuilder, base: Reg, offset: u32, col: Reg) -> Reg {
    let off = kb.shl(col, 2u32);
    let at = kb.add(base, off);
    kb.add(at, offset)
}

/// Shared address of element (row, col) of an f32 tile at `offset` with `cols` columns.
fn tile_at(
    kb: &mut KernelBuilder,
    base: Reg,
    offset: u32,
    (row, col): (Reg, Reg),
    cols: u32,
) -> Reg {
    let e = kb.mad_lo(row, cols, col);
    let off = kb.shl(e, 2u32);
    let at = kb.add(base, off);
    kb.add(at, offset)
}

/// Stage xᵀ and yᵀ `[64][C]` (rows p0.. of P) as f32, the scaled one times s, zeros past L
/// and past P.
fn stage_xy(kb: &mut KernelBuilder, walk: &Walk<'_>, stage: &Stager, ch: &Chunk, p0: Reg) {
    let (dtype, cta, d, lay, ptrs) = (walk.dtype, walk.cta, walk.d, walk.lay, walk.ptrs);
    let c = d.c;
    let (col, off, step) = staged_rows(kb, cta, stage, (ch, p0), d.pg * d.es, d.es);
    let elem = kb.mad_lo(stage.col, c, stage.row);
    let sh_off = kb.shl(elem, 2u32);
    let sh = kb.add(cta.base, sh_off);
    for (ptr, tile, scaled) in [
        (ptrs.x, lay.xt, ptrs.scaled == Scaled::X),
        (ptrs.y, lay.yt, ptrs.scaled == Scaled::Y),
    ] {
        let first = kb.add(ptr, off);
        let sh_t = kb.add(sh, tile);
        let (shared, tail) = ((sh_t, stage.rows_per_round * 4), Some((col, d.pg)));
        let store = (c * 4, scaled.then_some(ptrs.scale));
        stage.stage_f32_transposed(kb, dtype, (first, step), ch.len, shared, tail, store);
    }
}

/// scores[j][i] += x_i · y_j and state term[i][n] += x_i · S[:, n] over the staged block.
fn accumulate_scores(kb: &mut KernelBuilder, cta: &Cta, d: &Dims, lay: &BackwardLayout, p0: Reg) {
    let c = d.c;
    let base = cta.base;
    for_each_piece(kb, cta.t, THREADS, c, c, |kb, pc| {
        // Stored [j][i]: load_piece gives old[cc][r] = scores(i0 + r, j0 + cc).
        let at = tile_at(kb, base, lay.sc, (pc.col, pc.row), c);
        let old = load_piece(kb, at, c * 4);
        let acc: [[Reg; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|cc| old[cc][r]));
        let a = column_at(kb, base, lay.xt, pc.row);
        let bb = column_at(kb, base, lay.yt, pc.col);
        accumulate_shared(kb, &acc, a, c * 4, bb, c * 4, P_BLOCK);
        store_piece(kb, &old, at, c * 4);
    });
    for_each_piece(kb, cta.t, THREADS, c, d.ns, |kb, pc| {
        let at = tile_at(kb, base, lay.os, (pc.row, pc.col), d.ns);
        let acc = load_piece(kb, at, d.ns * 4);
        let a = column_at(kb, base, lay.xt, pc.row);
        let bb = tile_at(kb, base, lay.s, (p0, pc.col), d.ns);
        accumulate_shared(kb, &acc, a, c * 4, bb, d.ns * 4, P_BLOCK);
        store_piece(kb, &acc, at, d.ns * 4);
    });
}

/// S[p0.., :] ← γ^L S + Σ_{j<L} u_j y_jᵀ w_j (u = ζ walking forwards, ξ walking backwards).
#[allow(clippy::too_many_arguments)]
fn update_state(
    kb: &mut KernelBuilder,
    role: Role,
    cta: &Cta,
    d: &Dims,
    lay: &BackwardLayout,
    p0: Reg,
    len: Reg,
) {
    let base = cta.base;
    let (g_len_at, g_len) = decay_at(kb, base, lay, (len, 0));
    // u_0: ζ_0 = γ^(L−1) (then downwards) or ξ_0 = γ^1 (then upwards).
    let weight0 = if role.reverse() {
        kb.add(base, lay.decay + 4)
    } else {
        kb.add(g_len_at, lay.decay - 4)
    };
    let step = if role.reverse() {
        WeightStep::Up
    } else {
        WeightStep::Down
    };
    let staged = StagedChunk {
        kt: lay.yt,
        kt_rows: d.c,
        v: lay.w,
        vs: d.ns,
    };
    for_each_piece(kb, cta.t, THREADS, P_BLOCK, d.ns, |kb, pc| {
        let row = kb.add(p0, pc.row);
        let at = tile_at(kb, base, lay.s, (row, pc.col), d.ns);
        let old = load_piece(kb, at, d.ns * 4);
        let acc: [[Reg; 4]; 4] =
            std::array::from_fn(|r| std::array::from_fn(|cc| kb.mul(old[r][cc], g_len)));
        accumulate_weighted_outer(kb, &acc, (base, &pc), &staged, (weight0, step), len);
        store_piece(kb, &acc, at, d.ns * 4);
    });
}

/// scores[j][i] ← γ^(i−j) scores (forward walk, j ≤ i) or γ^(j−i) scores (reverse, j ≥ i),
/// else 0 — a `selp`, never a multiplication by a mask.
fn mask_scores(kb: &mut KernelBuilder, role: Role, cta: &Cta, c: u32, lay: &BackwardLayout) {
    kb.comment("mask and decay the scores");
    let base = cta.base;
    for_each_piece(kb, cta.t, THREADS, c, c, |kb, pc| {
        let at = tile_at(kb, base, lay.sc, (pc.col, pc.row), c);
        let raw = load_piece(kb, at, c * 4); // raw[cc][r] = scores(i0 + r, j0 + cc)
        // Forward: diff = i0 + C − j0, entry (r, cc) causal iff diff + r ≥ C + cc.
        // Reverse: diff = j0 + C − i0, causal iff diff + cc ≥ C + r.
        let (near, far) = if role.reverse() {
            (pc.row, pc.col)
        } else {
            (pc.col, pc.row)
        };
        let shifted = kb.add(far, c);
        let diff = kb.sub(shifted, near);
        let masked: [[Reg; 4]; 4] = std::array::from_fn(|cc| {
            std::array::from_fn(|r| {
                let (grow, need) = if role.reverse() {
                    (cc as u32, c + r as u32)
                } else {
                    (r as u32, c + cc as u32)
                };
                let dr = kb.add(diff, grow);
                let causal = kb.setp(Cmp::Ge, dr, need);
                let clamped = kb.max(dr, need);
                let (_, g) = decay_at(kb, base, lay, (clamped, need));
                let val = kb.mul(raw[cc][r], g);
                kb.selp(val, 0.0f32, causal)
            })
        });
        store_piece(kb, &masked, at, c * 4);
    });
}

/// out_i = λ_i · term_i + Σ_{j<L} scores[j][i] w_j, rows i < L and columns < N to global in
/// the dtype (λ = ξ walking forwards, ζ backwards).
fn write_gradient(kb: &mut KernelBuilder, walk: &Walk<'_>, role: Role, ch: &Chunk) {
    let (dtype, cta, d, lay, ptrs) = (walk.dtype, walk.cta, walk.d, walk.lay, walk.ptrs);
    let base = cta.base;
    let c = d.c;
    let tok_stride = kb.mul_wide(cta.heads, d.ng * d.es);
    let len_m1 = kb.sub(ch.len, 1u32);
    for_each_piece(kb, cta.t, THREADS, c, d.ns, |kb, pc| {
        let at = tile_at(kb, base, lay.os, (pc.row, pc.col), d.ns);
        let term = load_piece(kb, at, d.ns * 4);
        let acc: [[Reg; 4]; 4] = std::array::from_fn(|r| {
            let i = kb.add(pc.row, r as u32);
            let idx = if role.reverse() {
                let top = kb.max(len_m1, i);
                kb.sub(top, i)
            } else {
                kb.add(i, 1u32)
            };
            let (_, lambda) = decay_at(kb, base, lay, (idx, 0));
            std::array::from_fn(|cc| kb.mul(term[r][cc], lambda))
        });
        let a = column_at(kb, base, lay.sc, pc.row);
        let bb = column_at(kb, base, lay.w, pc.col);
        accumulate_shared(kb, &acc, a, c * 4, bb, d.ns * 4, ch.len);
        let tok = kb.add(ch.tok_c, pc.row);
        let th = kb.mad_lo(tok, cta.heads, cta.h);
        let col = kb.add(pc.col, cta.n0);
        let col_bytes = kb.mul_wide(col, d.es);
        let off = kb.mad_wide(th, d.ng * d.es, col_bytes);
        let mut g_at = kb.add(ptrs.grad, off);
        let mut own_at = ptrs.own.map(|own| kb.add(own, off));
        for r in 0..4u32 {
            if r > 0 {
                g_at = kb.add(g_at, tok_stride);
                own_at = own_at.map(|at| kb.add(at, tok_stride));
            }
            let i = kb.add(pc.row, r);
            let inside = kb.setp(Cmp::Lt, i, ch.len);
            let limit = row_limit(kb, inside, d.ng);
            if let Some(own_at) = own_at {
                let pos = kb.add(ch.c0, i);
                let w = dlog_gamma::weight(kb, pos, ptrs.t_last);
                let own = (own_at, col, limit, d.ng);
                let negate = role == Role::Dk;
                dlog_gamma::add_row(kb, dtype, ptrs.dlg, w, own, &acc[r as usize], negate);
            }
            let addr = Address::reg(g_at, 0);
            store_from_f32_masked(kb, dtype, addr, &acc[r as usize], col, limit, d.ng);
        }
    });
}
