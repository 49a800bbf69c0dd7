//! The softmax-attention KV-cache decode baseline (the Transformer step retention decode is
//! compared with), flash-decoding style, as two kernels:
//!
//! ```text
//! for every row n, head h:  s_t = s · q[n,h]·k[n,h,t]          t < L
//!                           o[n,h] = Σ_t softmax_t(s_t) v[n,h,t]
//! ```
//!
//! The context is cut into splits of `split_len` tokens, one CTA each, so that a small batch
//! still fills the GPU. A split CTA keeps an online (max-subtracted) softmax in f32 and writes
//! its partial (m, l, õ) — the running max in log2 units, Σ 2^(s−m) and the unnormalised
//! Σ 2^(s−m) v — and the combine kernel ([`super::attention_combine`]) merges the splits.
//! With a single split the split kernel normalises and writes o itself and no combine runs.
//! Layouts as `retention_kernels::cpu::attention_decode`: q `[N,H,K]`, k_cache `[N,H,L,K]`,
//! v_cache `[N,H,L,V]` (head-major: a head's context is contiguous), o `[N,H,V]`, all in the
//! spec's dtype; partials f32 `[N,H,splits,4+V']` with V' = V rounded up to a multiple of 4
//! (m, l, two pad words, then õ and zeros to V': 16-byte rows; [`partial_row_floats`]).
//! Head dims: any K in 1..=256 and V in 1..=512 ([`validate`], in `attention_spec.rs`).
//!
//! Split-pass parameters, in launch order (pointers are `.u64` device addresses):
//!
//! | # | name          | type   | meaning                                                 |
//! |---|---------------|--------|---------------------------------------------------------|
//! | 0 | `p_q`         | `.u64` | q `[N,H,K]`                                             |
//! | 1 | `p_k_cache`   | `.u64` | k_cache `[N,H,L,K]`                                     |
//! | 2 | `p_v_cache`   | `.u64` | v_cache `[N,H,L,V]`                                     |
//! | 3 | `p_o`         | `.u64` | o `[N,H,V]`, written only when there is one split       |
//! | 4 | `p_partial`   | `.u64` | partials f32 `[N,H,splits,4+V']`, written if splits > 1 |
//! | 5 | `p_context`   | `.u32` | L, cached tokens (≥ 1)                                  |
//! | 6 | `p_split_len` | `.u32` | tokens per split; splits = ⌈L / split_len⌉ = grid x     |
//! | 7 | `p_scale`     | `.f32` | s, applied to q exactly once                            |
//!
//! Mapping: grid `(splits, H, N)`, block `(threads, 1, 1)`, no dynamic shared memory (see
//! [`plan`], in `attention_plan.rs` and re-exported here). Lanes are laid over tokens as
//! `attention_layout.rs` describes: a group of G lanes reads one token's key and value rows
//! with loads of up to 16 bytes (as wide as the rows' alignment allows), each lane holding the
//! same q elements (staged once through shared memory, pre-multiplied by s·log2 e so scores
//! are in log2 units and softmax weights are `ex2`). A step reads `rows_per_step` tokens per
//! group; the group's q·k partial dots are summed by butterfly shuffles, and the group's
//! running (m, l, õ) is rescaled once per step. At the end the groups of a warp merge by
//! shuffles, the warps through shared memory. Every cached byte is read exactly once; the
//! last step of a split is masked (predicated loads), never read past the context.
//!
//! Tails (emitted only for dims that have them; K, V multiples of 64 keep the unmasked
//! kernel): q is staged 4, 2 or 1 elements per thread (the widest access K's alignment
//! allows), in several passes when K needs more stagers than the CTA has; lanes past the
//! end of a row's last piece load nothing and hold zeros (q, k and v alike), so they add
//! nothing to the dots and sums; they store no õ, and the columns V..V' of each warp's
//! shared row are zero-filled for the final merge, which runs over V' columns; o is written
//! in accesses of 4, 2 or 1 elements (V's alignment), columns past V predicated off.

use super::attention_layout::{
    LaneLayout, RowSplit, column_width, head_row_thread, load_piece_words, load_piece_words_masked,
    widen,
};
use crate::GenError;
use crate::dsl::{
    Address, Axis, Cmp, KernelBuilder, ParamRef, Reg, SharedRef, ShflMode, Space, Sreg, Ty,
};
use crate::math::kernel_head::start_kernel;
use crate::spec::{KernelOp, KernelSpec};

use super::attention_merge::{MergeIn, Running, merge_and_write};
pub use super::attention_plan::{
    AttentionDecodePlan, MIN_PLANNED_SPLIT, launch_geometry, param_names, plan,
    plan_with_split_len, tokens_per_step,
};
pub use super::attention_spec::{
    MAX_K, MAX_V, PARTIAL_HEADER, combine_threads, partial_row_floats, validate,
};
use super::attention_spec::{NO_SCORE, SPLIT_PARAMS, padded_v};

/// The kernel's title line.
const TITLE: &str = "softmax attention decode, split pass";
/// What the kernel computes, as its header says.
const FORMULA: &str =
    "partial (m, l, o~) of tokens [split*split_len, ..) : online softmax in f32, log2 units";

/// Where a lane's loads of one step start, and (for rows whose pieces do not fill every
/// lane) whether this lane holds the key/value row's last piece.
struct StepPointers {
    k: Reg,
    v: Reg,
    k_tail: Option<Reg>,
    v_tail: Option<Reg>,
}

/// One step: `rows_per_step` tokens per lane group, folded into `run`. `valid` (for the
/// masked last step) says per token whether it is inside the split.
fn emit_step(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    lay: LaneLayout,
    ptr: &StepPointers,
    q: &[Reg],
    run: &Running,
    valid: Option<&[Reg]>,
) {
    let u_count = spec.tile.rows_per_step;
    let token_stride = spec.tile.threads / 32 * lay.groups_per_warp(); // tokens between u's
    let (k_row, v_row) = (
        i64::from(spec.k * lay.k.esize),
        i64::from(spec.v * lay.v.esize),
    );
    let load = |kb: &mut KernelBuilder,
                base: Reg,
                row: i64,
                split: RowSplit,
                tail: Option<Reg>,
                u: u32| {
        let mut words = Vec::new();
        for i in 0..split.pieces {
            let addr = Address::reg(
                base,
                i64::from(u * token_stride) * row + split.piece_offset(i, lay.group),
            );
            // The token's mask, and for a row's last piece the lane's.
            let lane_ok = tail.filter(|_| split.masked(i));
            let mask = match (valid.map(|v| v[u as usize]), lane_ok) {
                (Some(a), Some(b)) => Some(kb.and(a, b)),
                (a, b) => a.or(b),
            };
            words.extend(match mask {
                Some(m) => load_piece_words_masked(kb, spec.dtype, split.piece_bytes, addr, m),
                None => load_piece_words(kb, spec.dtype, split.piece_bytes, addr),
            });
        }
        words
    };
    // Issue every load of the step before any arithmetic.
    let k_words: Vec<Vec<Reg>> = (0..u_count)
        .map(|u| load(kb, ptr.k, k_row, lay.k, ptr.k_tail, u))
        .collect();
    let v_words: Vec<Vec<Reg>> = (0..u_count)
        .map(|u| load(kb, ptr.v, v_row, lay.v, ptr.v_tail, u))
        .collect();
    let mut scores = Vec::new();
    for (u, words) in k_words.iter().enumerate() {
        let k = widen(kb, words);
        let mut dot = kb.mul(q[0], k[0]);
        for (&qe, &ke) in q.iter().zip(&k).skip(1) {
            dot = kb.fma(qe, ke, dot);
        }
        let mut off = lay.group / 2;
        while off > 0 {
            let other = kb.warp_shfl(ShflMode::Bfly, dot, off, 0x1fu32, u32::MAX);
            dot = kb.add(dot, other);
            off /= 2;
        }
        if let Some(v) = valid {
            dot = kb.selp(dot, NO_SCORE, v[u]);
        }
        scores.push(dot);
    }
    let mut m = run.m;
    for &s in &scores {
        m = kb.max(m, s);
    }
    let corr = kb.sub(run.m, m);
    let corr = kb.ex2(corr, true);
    let probs: Vec<Reg> = scores
        .iter()
        .enumerate()
        .map(|(u, &s)| {
            let d = kb.sub(s, m);
            let p = kb.ex2(d, true);
            match valid {
                Some(v) => kb.selp(p, 0.0f32, v[u]),
                None => p,
            }
        })
        .collect();
    let mut l = kb.mul(run.l, corr);
    for &p in &probs {
        l = kb.add(l, p);
    }
    kb.assign(run.l, l);
    let vs: Vec<Vec<Reg>> = v_words.iter().map(|w| widen(kb, w)).collect();
    for (c, &acc) in run.acc.iter().enumerate() {
        let mut x = kb.mul(acc, corr);
        for (p, v) in probs.iter().zip(&vs) {
            x = kb.fma(*p, v[c], x);
        }
        kb.assign(acc, x);
    }
    kb.assign(run.m, m);
}

/// Stage q · s · log2 e in shared memory as f32 (`s_q`, K words): 4, 2 or 1 elements per
/// thread (the widest access K's alignment allows), in several passes when K needs more
/// stagers than the CTA has. Returns the shared address of `s_q`.
fn stage_q(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    t: Reg,
    nh: Reg,
    (p_q, p_scale): (&ParamRef, &ParamRef),
    s_q: &SharedRef,
) -> Reg {
    let (kd, threads) = (spec.k, spec.tile.threads);
    let esize = spec.dtype.size_bytes() as u32;
    let qw = column_width(kd); // q elements per staging thread: the row's alignment allows it
    if qw == 4 {
        kb.comment("stage q * scale * log2(e) in shared memory as f32, four elements per thread");
    } else {
        kb.comment(format!(
            "stage q * scale * log2(e) in shared memory as f32, {qw} element(s) per thread"
        ));
    }
    let scale = kb.ld_param(p_scale);
    let q_scale = kb.mul(scale, std::f32::consts::LOG2_E);
    let q = kb.global_ptr(p_q);
    let g_q = kb.mad_wide(nh, kd * esize, q); // (K)
    let sq_addr = kb.shared_addr(s_q);
    let stagers = kd / qw;
    for first in (0..stagers).step_by(threads as usize) {
        let stage = |kb: &mut KernelBuilder| {
            let at = kb.mul_wide(t, qw * esize);
            let at = kb.add(g_q, at);
            let from = i64::from(first * qw * esize);
            let words = load_piece_words(kb, spec.dtype, qw * esize, Address::reg(at, from));
            let xs = widen(kb, &words);
            let xs: Vec<_> = xs.into_iter().map(|x| kb.mul(x, q_scale).into()).collect();
            let t16 = kb.shl(t, (qw * 4).trailing_zeros());
            let dst = kb.add(sq_addr, t16);
            let to = i64::from(first * qw * 4);
            kb.st_vec(Space::Shared, Ty::F32, Address::reg(dst, to), &xs);
        };
        if first + threads > stagers {
            let inside = kb.setp(Cmp::Lt, t, stagers - first);
            let skip = kb.label();
            kb.bra_if(inside, true, skip);
            stage(kb);
            kb.place(skip);
        } else {
            stage(kb);
        }
    }
    sq_addr
}

/// Emit the split pass for `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`] or for the combine op (see
/// [`super::attention_combine::generate`]); [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    spec.check_op(
        &[KernelOp::AttentionDecode],
        "this generator emits the split pass (attention_decode)",
    )?;
    let lay = LaneLayout::new(spec);
    let (kd, vd) = (spec.k, spec.v);
    let vp = padded_v(vd); // columns of a warp's shared row and of a partial row's o~
    let threads = spec.tile.threads;
    let warps = threads / 32;
    let group = lay.group;
    let groups = lay.groups_per_warp();
    let step_tokens = tokens_per_step(spec);
    let esize = spec.dtype.size_bytes() as u32;

    let mut kb = start_kernel(spec, TITLE, FORMULA, (threads, false));

    let scalars = [
        ("p_context", Ty::U32),
        ("p_split_len", Ty::U32),
        ("p_scale", Ty::F32),
    ];
    let [
        p_q,
        p_k,
        p_v,
        p_o,
        p_partial,
        p_context,
        p_split_len,
        p_scale,
    ] = kb.params(SPLIT_PARAMS, &scalars);

    let s_q = kb.shared_array("s_q", kd * 4, 16, "q*scale*log2(e) as f32 [K]");
    let s_ml = kb.shared_array("s_ml", warps * 8, 16, "each warp's (m, l) as f32 [W, 2]");
    let s_acc = kb.shared_array("s_acc", warps * vp * 4, 16, "each warp's o~ as f32 [W, V]");

    kb.comment("one CTA per (split = ctaid.x, head h = ctaid.y, row n = ctaid.z)");
    let split = kb.sreg(Sreg::Ctaid(Axis::X));
    let splits = kb.sreg(Sreg::Nctaid(Axis::X));
    let (h, heads, n, t) = head_row_thread(&mut kb);
    let nh = kb.mad_lo(n, heads, h);
    let context = kb.ld_param(&p_context);
    let split_len = kb.ld_param(&p_split_len);
    let start = kb.mul_lo(split, split_len);
    let left = kb.sub(context, start);
    let len = kb.min(left, split_len);
    let end = kb.add(start, len);

    let sq_addr = stage_q(&mut kb, spec, t, nh, (&p_q, &p_scale), &s_q);
    kb.bar_sync(0);

    kb.comment(format!(
        "lane j of group r (G = {group} lanes per token) holds q elements (i*G + j)*{} ..",
        lay.k.piece_elems()
    ));
    let lane = kb.and(t, 31u32);
    let warp = kb.shr(t, 5u32);
    let j = kb.and(lane, group - 1);
    let r = kb.shr(lane, group.trailing_zeros());
    // Lanes holding the last piece of a row that does not fill the group (tails only).
    let k_tail = lay.k.tail_lanes.map(|n| kb.setp(Cmp::Lt, j, n));
    let v_tail = lay.v.tail_lanes.map(|n| kb.setp(Cmp::Lt, j, n));
    let jq = kb.mul_lo(j, lay.k.piece_elems() * 4);
    let sq_lane = kb.add(sq_addr, jq);
    let mut q_regs = Vec::new();
    for i in 0..lay.k.pieces {
        let piece = i64::from(i * group * lay.k.piece_elems() * 4);
        let mut c = 0;
        while c < lay.k.piece_elems() {
            let n_vec = (lay.k.piece_elems() - c).min(4);
            let at = Address::reg(sq_lane, piece + i64::from(c * 4));
            match k_tail.filter(|_| lay.k.masked(i)) {
                // Past K: zeros, so the masked k elements (also zero) add nothing.
                Some(ok) => {
                    let zeros: Vec<Reg> = (0..n_vec).map(|_| kb.mov(Ty::F32, 0.0f32)).collect();
                    kb.guarded(ok, false, |kb| {
                        let xs = kb.ld_vec(Space::Shared, Ty::F32, n_vec as usize, at);
                        for (&z, x) in zeros.iter().zip(xs) {
                            kb.assign(z, x);
                        }
                    });
                    q_regs.extend(zeros);
                }
                None => q_regs.extend(kb.ld_vec(Space::Shared, Ty::F32, n_vec as usize, at)),
            }
            c += n_vec;
        }
    }

    kb.comment(format!(
        "this group's first token: start + warp*{groups} + r; tokens of a step are {} apart",
        warps * groups
    ));
    let first = kb.mad_lo(warp, groups, r);
    let my_tok = kb.add(start, first);
    let ctx_rows = kb.mul_lo(nh, context);
    let row = kb.add(ctx_rows, my_tok);
    let (k_base, v_base) = (kb.global_ptr(&p_k), kb.global_ptr(&p_v));
    let k_at = kb.mad_wide(row, kd * esize, k_base);
    let k_lane = kb.mul_wide(j, lay.k.piece_bytes);
    let k_ptr = kb.add(k_at, k_lane);
    let v_at = kb.mad_wide(row, vd * esize, v_base);
    let v_lane = kb.mul_wide(j, lay.v.piece_bytes);
    let v_ptr = kb.add(v_at, v_lane);
    let ptr = StepPointers {
        k: k_ptr,
        v: v_ptr,
        k_tail,
        v_tail,
    };
    let run = Running {
        m: kb.mov(Ty::F32, NO_SCORE),
        l: kb.mov(Ty::F32, 0.0f32),
        acc: (0..lay.v.lane_elems())
            .map(|_| kb.mov(Ty::F32, 0.0f32))
            .collect(),
    };

    let full_steps = kb.shr(len, step_tokens.trailing_zeros());
    kb.comment(format!("full steps of {step_tokens} tokens"));
    kb.for_range(0u32, full_steps, 1, |kb, _| {
        emit_step(kb, spec, lay, &ptr, &q_regs, &run, None);
        let k_next = kb.add(ptr.k, u64::from(step_tokens * kd * esize));
        kb.assign(ptr.k, k_next);
        let v_next = kb.add(ptr.v, u64::from(step_tokens * vd * esize));
        kb.assign(ptr.v, v_next);
    });
    kb.comment("the last, partial step: tokens past the split's end are masked");
    let rest = kb.and(len, step_tokens - 1);
    let no_rest = kb.setp(Cmp::Eq, rest, 0u32);
    let merged = kb.label();
    kb.bra_if(no_rest, false, merged);
    let tail_tok = kb.mad_lo(full_steps, step_tokens, my_tok);
    let valid: Vec<Reg> = (0..spec.tile.rows_per_step)
        .map(|u| {
            let tok = kb.add(tail_tok, u * warps * groups);
            kb.setp(Cmp::Lt, tok, end)
        })
        .collect();
    emit_step(&mut kb, spec, lay, &ptr, &q_regs, &run, Some(&valid));
    kb.place(merged);

    let merge = MergeIn {
        t,
        lane: (warp, r, j),
        v_tail,
        shared: (&s_ml, &s_acc),
        grid: (split, splits, nh),
        out: (&p_o, &p_partial),
    };
    let done = merge_and_write(&mut kb, spec, lay, &run, &merge);
    kb.place(done);
    kb.ret();
    kb.finish()
}
