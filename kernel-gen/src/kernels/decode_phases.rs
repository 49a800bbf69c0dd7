//! The thread mapping of the decode step ([`super::decode`]) and the three phases of its
//! kernel that use it: staging the CTA's slice of v, streaming the state rows
//! (S ← γS + kᵀv in place, partial o = (q·s)·S), and summing the row groups' partial
//! outputs into o. The module docs of `decode.rs` state the math, grid and traffic; this file
//! holds the parts that depend on the head dims, masked tails included.

use retention_core::Dtype;

use crate::dsl::{Address, Cmp, KernelBuilder, Operand, Reg, Rounding, SharedRef, Space, Ty};
use crate::spec::KernelSpec;

/// Narrowest value slice: 32 f32 columns, one 128-byte line of a state row.
const MIN_SLICE: u32 = 32;

/// State registers a thread may hold at once: when all its rows fit, every step's loads are
/// issued before the first update.
const PREFETCH_REGS: u32 = 32;

/// A step's row masks (row inside K, cell inside the state) and loaded state pieces.
type Loaded = (Vec<(Option<Reg>, Option<Reg>)>, Vec<Vec<Reg>>);

/// State columns one thread owns side by side: 4 (one `v4.f32` access) when 4 divides V,
/// else 2, else 1. Every row of q/k/v/o and of the state starts at a multiple of V (or K)
/// elements, so this width is also the widest access whose alignment every row guarantees.
pub fn column_width(v: u32) -> u32 {
    if v.is_multiple_of(4) {
        4
    } else if v.is_multiple_of(2) {
        2
    } else {
        1
    }
}

/// The value slice width W of `spec`: the state columns one CTA owns (the last slice may be
/// partial, its missing columns masked). A spec that names its slice (`chunk: Some(W)`, a
/// variant [`super::decode_plan::decode_variant`] picks for large batches) gets that W;
/// otherwise [`default_value_slice`].
pub fn value_slice(spec: &KernelSpec) -> u32 {
    spec.chunk.unwrap_or_else(|| default_value_slice(spec))
}

/// The narrowest value slice of `spec`'s head dims and tile (the catalog's default variant).
///
/// W = cw·G with cw = [`column_width`] and G, the threads per state row, the power of two
/// at or above min(V, max(32, 4·threads·rows_per_step / K)) / cw (at most `threads`): as
/// narrow as possible (more CTAs for a small batch) while every thread still streams at
/// least one full step of `rows_per_step` rows and a warp still covers whole 128-byte lines.
/// For K and V powers of two this is min(V, max(32, 4·threads·rows_per_step / K)) and W
/// divides V. Fixed per spec, so the PTX does not depend on the batch; the grid has
/// ⌈V / W⌉ slices on z ([`value_slices`]).
pub fn default_value_slice(spec: &KernelSpec) -> u32 {
    let t = spec.tile;
    let cw = column_width(spec.v.max(1));
    let one_step = 4u32
        .saturating_mul(t.threads)
        .saturating_mul(t.rows_per_step)
        / spec.k.max(1);
    let want = one_step.max(MIN_SLICE).min(spec.v.max(1));
    let groups = want.div_ceil(cw).next_power_of_two().min(t.threads.max(1));
    groups * cw
}

/// Whether `w` is a value slice a decode spec may name: a power of two of at least one
/// [`column_width`] and at most one column group per thread, wider than the default slice
/// (narrower CTAs would not stream a full step of rows each; the default itself is named by
/// `chunk: None`, so each kernel has one spec) and under 2·V (one slice at most overhangs
/// V).
pub fn slice_allowed(spec: &KernelSpec, w: u32) -> bool {
    let cw = column_width(spec.v.max(1));
    w.is_power_of_two()
        && w >= cw
        && w / cw <= spec.tile.threads
        && w > default_value_slice(spec)
        && w < 2 * spec.v.max(1)
}

/// ⌈V / W⌉: the value slices of `spec` (grid z).
pub fn value_slices(spec: &KernelSpec) -> u32 {
    spec.v.div_ceil(value_slice(spec))
}

/// `n` f32 registers set to 0, then loaded by `load` where `valid` holds: a masked access
/// never touches memory and leaves finite zeros behind.
fn masked_f32(
    kb: &mut KernelBuilder,
    n: u32,
    valid: Reg,
    load: impl FnOnce(&mut KernelBuilder) -> Vec<Reg>,
) -> Vec<Reg> {
    let zeros: Vec<Reg> = (0..n).map(|_| kb.mov(Ty::F32, 0.0f32)).collect();
    kb.guarded(valid, false, |kb| {
        for (&z, x) in zeros.iter().zip(load(kb)) {
            kb.assign(z, x);
        }
    });
    zeros
}

/// Round an f32 to `dtype` and store it at `addr`.
fn store_from_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address, x: Reg) {
    match dtype {
        Dtype::F32 => kb.st(Space::Global, addr, x),
        Dtype::F16 => {
            let h = kb.cvt(Ty::F16, x, Some(Rounding::Rn));
            kb.st(Space::Global, addr, h);
        }
        Dtype::Bf16 => {
            let h = kb.cvt(Ty::Bf16, x, Some(Rounding::Rn));
            kb.st(Space::Global, addr, h);
        }
    }
}

/// `base + index·elem_bytes` as a global address register.
pub(super) fn element_ptr(kb: &mut KernelBuilder, base: Reg, index: Reg, elem_bytes: u32) -> Reg {
    let offset = kb.mul_wide(index, elem_bytes);
    kb.add(base, offset)
}

/// The thread mapping of one spec, fixed at generation time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mapping {
    /// W: state columns of a CTA (the stride between value slices).
    pub(super) slice: u32,
    /// ⌈V / W⌉ value slices on grid z.
    pub(super) slices: u32,
    /// cw: adjacent state columns of one thread (4, 2 or 1).
    pub(super) cols: u32,
    /// G = W / cw: threads per state row.
    pub(super) col_groups: u32,
    /// R = threads / G: rows processed side by side.
    pub(super) row_groups: u32,
    /// State rows per thread and loop step: the tile's, or fewer when K has fewer rows per
    /// row group (the next power of two at or above ⌈K / R⌉), so a small K is not unrolled
    /// into masked rows.
    pub(super) rows_per_step: u32,
    /// ⌈K / (R·rows_per_step)⌉ loop steps.
    pub(super) steps: u32,
    /// Some columns of a slice lie past V (V not a multiple of W): they are masked.
    pub(super) col_tail: bool,
    /// The last step runs past row K − 1 (K not a multiple of R·rows_per_step): masked.
    pub(super) row_tail: bool,
}

impl Mapping {
    pub(super) fn new(spec: &KernelSpec) -> Self {
        let slice = value_slice(spec);
        let cols = column_width(spec.v);
        let col_groups = slice / cols;
        let row_groups = spec.tile.threads / col_groups;
        let rows_per_step = spec
            .tile
            .rows_per_step
            .min(spec.k.div_ceil(row_groups).next_power_of_two());
        let rows_at_once = row_groups * rows_per_step;
        Mapping {
            slice,
            slices: value_slices(spec),
            cols,
            col_groups,
            row_groups,
            rows_per_step,
            steps: spec.k.div_ceil(rows_at_once),
            col_tail: !spec.v.is_multiple_of(slice),
            row_tail: !spec.k.is_multiple_of(rows_at_once),
        }
    }
}

/// What the prologue (`decode_stage`) leaves the later phases: the thread, its slice's
/// columns left, the shared addresses of the staged inputs and the thread's offsets.
#[derive(Clone, Copy)]
pub(super) struct Staged {
    /// Thread index, and V − z·W when several slices end in a masked tail.
    pub(super) t: Reg,
    pub(super) cols_left: Option<Reg>,
    /// `s_q`, `s_k`, `s_v` and `s_slot`.
    pub(super) sq_addr: Reg,
    pub(super) sk_addr: Reg,
    pub(super) sv_addr: Reg,
    pub(super) slot_addr: Reg,
    /// 4t and t·cw·4 (thread t's f32 and column bytes).
    pub(super) t_f32: Reg,
    pub(super) t_cols: Reg,
}

/// Stream this thread's rows of the state from `g_state` (this CTA's first state column of
/// row 0, f32) with decay `gamma` (γ_h): S ← γS + kᵀv in place, and return its partial
/// o = Σ_rows (q·s)·S over its cw columns.
pub(super) fn stream_state(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    map: &Mapping,
    staged: &Staged,
    (g_state, gamma): (Reg, Reg),
) -> Vec<Reg> {
    let (k_dim, v_dim) = (spec.k, spec.v);
    let (cw, col_groups, row_groups) = (map.cols, map.col_groups, map.row_groups);
    let (rows_per_step, steps) = (map.rows_per_step, map.steps);
    let (t, cols_left) = (staged.t, staged.cols_left);
    let (sv_addr, sq_addr, sk_addr) = (staged.sv_addr, staged.sq_addr, staged.sk_addr);
    let cols_left_op: Operand = match cols_left {
        Some(c) => c.into(),
        None => v_dim.into(),
    };
    kb.comment(format!("thread t owns columns {cw}c..{cw}c+{cw} (c = t mod {col_groups}) of rows r + {row_groups}j (r = t div {col_groups})"));
    let c = kb.and(t, col_groups - 1);
    let r = kb.shr(t, col_groups.trailing_zeros());
    let c_first = if cw == 1 {
        c
    } else {
        kb.shl(c, cw.trailing_zeros())
    };
    let c_bytes = kb.shl(c, (cw * 4).trailing_zeros());
    let sv_c = kb.add(sv_addr, c_bytes);
    let v_c = kb.ld_vec(Space::Shared, Ty::F32, cw as usize, Address::reg(sv_c, 0)); // v[cw·c..cw·c+cw]
    let first_elem = kb.mad_lo(r, v_dim, c_first);
    let state_ptr = element_ptr(kb, g_state, first_elem, 4);
    let r4 = kb.shl(r, 2u32);
    let sq_ptr = kb.add(sq_addr, r4);
    let sk_ptr = kb.add(sk_addr, r4);
    let acc: Vec<Reg> = (0..cw).map(|_| kb.mov(Ty::F32, 0.0f32)).collect(); // o partial [cw]
    // Masks of the tails: this thread's columns inside V, its current row (r + R·rows_per_step·i
    // at step i) below K.
    let col_ok = map
        .col_tail
        .then(|| kb.setp(Cmp::Lt, c_first, cols_left_op));
    let row = map.row_tail.then(|| kb.mov(Ty::U32, r));

    kb.comment(format!(
        "stream the state: {steps} steps of {rows_per_step} rows, S <- gamma*S + k^T v, o += q*S"
    ));
    let row_bytes = i64::from(row_groups * v_dim * 4); // from row i to row i + R in the state
    // Rows base + j (j < rows_per_step) of the thread's rows from `state_ptr`, `row`, and
    // the shared q, k pointers: their masks (row inside K, cell inside the state; None: no
    // mask needed) and their loaded state pieces.
    let load = |kb: &mut KernelBuilder, base: u32| {
        let masks: Vec<(Option<Reg>, Option<Reg>)> = (base..base + rows_per_step)
            .map(|j| {
                let row_ok = row.map(|row| {
                    let row_j = if j == 0 {
                        row
                    } else {
                        kb.add(row, j * row_groups)
                    };
                    kb.setp(Cmp::Lt, row_j, k_dim)
                });
                let cell_ok = match (row_ok, col_ok) {
                    (Some(a), Some(b)) => Some(kb.and(a, b)),
                    (a, b) => a.or(b),
                };
                (row_ok, cell_ok)
            })
            .collect();
        let tiles: Vec<Vec<Reg>> = masks
            .iter()
            .zip(base..)
            .map(|(&(_, cell_ok), j)| {
                let at = Address::reg(state_ptr, i64::from(j) * row_bytes);
                let load =
                    |kb: &mut KernelBuilder| kb.ld_vec(Space::Global, Ty::F32, cw as usize, at);
                match cell_ok {
                    Some(ok) => masked_f32(kb, cw, ok, load),
                    None => load(kb),
                }
            })
            .collect();
        (masks, tiles)
    };
    // S ← γS + kᵀv on those rows, stored back, and o += (q·s)·S.
    let update = |kb: &mut KernelBuilder, base: u32, (masks, tiles): Loaded| {
        for ((s, (row_ok, cell_ok)), j) in tiles.iter().zip(masks).zip(base..) {
            let shared_off = i64::from(j * row_groups * 4);
            let shared = |kb: &mut KernelBuilder, at: Reg| {
                let load = |kb: &mut KernelBuilder| {
                    vec![kb.ld(Space::Shared, Ty::F32, Address::reg(at, shared_off))]
                };
                match row_ok {
                    Some(ok) => masked_f32(kb, 1, ok, load)[0],
                    None => load(kb)[0],
                }
            };
            let kj = shared(kb, sk_ptr);
            let qj = shared(kb, sq_ptr);
            let s_new: Vec<Operand> = (0..cw as usize)
                .map(|i| {
                    let kv = kb.mul(kj, v_c[i]);
                    kb.fma(gamma, s[i], kv).into()
                })
                .collect();
            let at = Address::reg(state_ptr, i64::from(j) * row_bytes);
            match cell_ok {
                Some(ok) => kb.guarded(ok, false, |kb| {
                    kb.st_vec(Space::Global, Ty::F32, at, &s_new);
                }),
                None => kb.st_vec(Space::Global, Ty::F32, at, &s_new),
            }
            for i in 0..cw as usize {
                kb.fma_into(acc[i], qj, s_new[i], acc[i]);
            }
        }
    };
    if steps * rows_per_step * cw <= PREFETCH_REGS {
        // Few enough rows to hold at once: every step's loads before the first update, so
        // the stream costs one round trip (a small batch waits on each one).
        let loaded: Vec<Loaded> = (0..steps).map(|i| load(kb, i * rows_per_step)).collect();
        for (i, l) in loaded.into_iter().enumerate() {
            update(kb, i as u32 * rows_per_step, l);
        }
    } else {
        kb.for_range(0u32, steps, 1, |kb, _| {
            let l = load(kb, 0);
            update(kb, 0, l);
            let next = kb.add(state_ptr, u64::from(rows_per_step) * row_bytes as u64);
            kb.assign(state_ptr, next);
            let advance = rows_per_step * row_groups * 4;
            let nq = kb.add(sq_ptr, advance);
            kb.assign(sq_ptr, nq);
            let nk = kb.add(sk_ptr, advance);
            kb.assign(sk_ptr, nk);
            if let Some(row) = row {
                let nr = kb.add(row, rows_per_step * row_groups);
                kb.assign(row, nr);
            }
        });
    }

    acc
}

/// Sum the R row groups' partial outputs `acc` (this thread's cw columns) through shared
/// memory `s_part` and write this slice of o from `g_o` (its column 0, global) in the output
/// dtype (columns past V not written).
pub(super) fn reduce_to_o(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    map: &Mapping,
    staged: &Staged,
    (g_o, acc): (Reg, &[Reg]),
    s_part: &SharedRef,
) {
    let (cw, slice, row_groups) = (map.cols, map.slice, map.row_groups);
    let (threads, v_dim) = (spec.tile.threads, spec.v);
    let esize = spec.dtype.size_bytes() as u32;
    let (t, cols_left) = (staged.t, staged.cols_left);
    let (t_f32, t_cols) = (staged.t_f32, staged.t_cols);
    kb.comment(format!(
        "sum the partial outputs of the row groups: s_part[r][{cw}c..{cw}c+{cw}] is at {}t",
        cw * 4
    ));
    let part_addr = kb.shared_addr(s_part);
    let my_part = kb.add(part_addr, t_cols);
    let acc_ops: Vec<Operand> = acc.iter().map(|&a| a.into()).collect();
    kb.st_vec(Space::Shared, Ty::F32, Address::reg(my_part, 0), &acc_ops);
    kb.bar_sync(0);
    let col_part = kb.add(part_addr, t_f32);
    let o_t = element_ptr(kb, g_o, t, esize);
    // Columns of o this CTA writes: W, or fewer where the slice ends past V (a single slice
    // wider than V is cut at compile time, the last of several at run time).
    let written = if cols_left.is_some() {
        slice
    } else {
        slice.min(v_dim)
    };
    for first in (0..written).step_by(threads as usize) {
        let reduce = |kb: &mut KernelBuilder| {
            let col_off = i64::from(first * 4);
            let mut sum = kb.ld(Space::Shared, Ty::F32, Address::reg(col_part, col_off));
            // Row groups r >= K own no row (their partials are zero): only the first K count.
            for g in 1..row_groups.min(spec.k) {
                let part = kb.ld(
                    Space::Shared,
                    Ty::F32,
                    Address::reg(col_part, col_off + i64::from(g * slice * 4)),
                );
                sum = kb.add(sum, part);
            }
            store_from_f32(
                kb,
                spec.dtype,
                Address::reg(o_t, i64::from(first * esize)),
                sum,
            );
        };
        let in_slice = (first + threads > written).then(|| kb.setp(Cmp::Lt, t, written - first));
        // Column first + t of the slice inside V: first + t < V − z·W.
        let in_v = cols_left.map(|left| {
            let col = if first == 0 { t } else { kb.add(t, first) };
            kb.setp(Cmp::Lt, col, left)
        });
        let inside = match (in_slice, in_v) {
            (Some(a), Some(b)) => Some(kb.and(a, b)),
            (a, b) => a.or(b),
        };
        match inside {
            Some(inside) => kb.guarded(inside, false, reduce),
            None => reduce(kb),
        }
    }
}
