//! The decode step's prologue ([`super::decode`]): every input load — the row's slot (and
//! the runtime log2 γ_h), q, k and this CTA's slice of v — is issued before any of them is
//! used, so a CTA waits one memory round trip for all of them; then they are widened to f32
//! and staged in shared memory for the state stream. A small batch is latency-bound (one
//! CTA per SM, each wait a DRAM round trip on its critical path), so the prologue's waits
//! were a third of the batch-1 step (ARCHITECTURE §5: the time model counts each one).

use retention_core::Dtype;

use super::decode_phases::{Mapping, Staged, element_ptr};
use crate::blocks::global::elem_ty;
use crate::dsl::{Address, Cmp, KernelBuilder, Operand, ParamRef, Reg, SharedRef, Space, Ty};
use crate::spec::KernelSpec;

/// What the prologue reads.
pub(super) struct StageIn<'a> {
    /// Thread index, row n and head h.
    pub(super) t: Reg,
    pub(super) n: Reg,
    pub(super) h: Reg,
    /// This row and head's q and k (column 0), and this slice of v.
    pub(super) g_q: Reg,
    pub(super) g_k: Reg,
    pub(super) g_v: Reg,
    /// V − z·W when several slices end in a masked tail.
    pub(super) cols_left: Option<Reg>,
    /// s, applied to q once.
    pub(super) scale: Reg,
    /// `p_slots`, and `p_log2_gamma` for runtime γ.
    pub(super) p_slots: &'a ParamRef,
    pub(super) p_log2_gamma: Option<&'a ParamRef>,
    /// `s_q` [K], `s_k` [K], `s_v` [W] (f32) and `s_slot` (slot, log2 γ_h).
    pub(super) s_q: &'a SharedRef,
    pub(super) s_k: &'a SharedRef,
    pub(super) s_v: &'a SharedRef,
    pub(super) s_slot: &'a SharedRef,
}

/// Load `n` ∈ {1, 2, 4} consecutive elements of `dtype` in one access, unconverted.
fn load_raw(kb: &mut KernelBuilder, dtype: Dtype, n: u32, addr: Address) -> Vec<Reg> {
    kb.ld_vec(Space::Global, elem_ty(dtype), n as usize, addr)
}

/// Widen raw elements of `dtype` to f32 (f32 passes through).
fn widen(kb: &mut KernelBuilder, dtype: Dtype, raw: &[Reg]) -> Vec<Reg> {
    match dtype {
        Dtype::F32 => raw.to_vec(),
        Dtype::F16 | Dtype::Bf16 => raw.iter().map(|&x| kb.cvt(Ty::F32, x, None)).collect(),
    }
}

/// `body`'s registers, emitted under `guard` when there is one.
fn maybe_guarded(
    kb: &mut KernelBuilder,
    guard: Option<Reg>,
    body: impl FnOnce(&mut KernelBuilder) -> Vec<Reg>,
) -> Vec<Reg> {
    match guard {
        Some(p) => {
            let mut out = Vec::new();
            kb.guarded(p, false, |kb| out = body(kb));
            out
        }
        None => body(kb),
    }
}

/// Issue every input load, then stage q·s, k, the v slice, the slot (and log2 γ_h) in
/// shared memory. No barrier: the caller syncs before reading them.
pub(super) fn stage_inputs(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    map: &Mapping,
    s: &StageIn<'_>,
) -> Staged {
    let (k_dim, threads, dtype) = (spec.k, spec.tile.threads, spec.dtype);
    let esize = dtype.size_bytes() as u32;
    let t = s.t;
    kb.comment("issue every input load before the first use: one round trip for all of them");
    let thread0 = kb.setp(Cmp::Eq, t, 0u32);
    let slot_in = maybe_guarded(kb, Some(thread0), |kb| {
        let slots = kb.global_ptr(s.p_slots);
        let slot_at = element_ptr(kb, slots, s.n, 4);
        let mut regs = vec![kb.ld(Space::Global, Ty::U32, Address::reg(slot_at, 0))];
        if let Some(p_log2) = s.p_log2_gamma {
            let table = kb.global_ptr(p_log2);
            let at = element_ptr(kb, table, s.h, 4);
            regs.push(kb.ld(Space::Global, Ty::F32, Address::reg(at, 0)));
        }
        regs
    });
    let t_bytes = kb.mul_wide(t, esize);
    let tq = kb.add(s.g_q, t_bytes);
    let tk = kb.add(s.g_k, t_bytes);
    // Rows first..first+threads of q and k: (first, the mask of a partial round, q, k).
    let qk: Vec<(u32, Option<Reg>, Vec<Reg>)> = (0..k_dim)
        .step_by(threads as usize)
        .map(|first| {
            let inside = (first + threads > k_dim).then(|| kb.setp(Cmp::Lt, t, k_dim - first));
            let off = i64::from(first * esize);
            let raw = maybe_guarded(kb, inside, |kb| {
                let q = load_raw(kb, dtype, 1, Address::reg(tq, off));
                let k = load_raw(kb, dtype, 1, Address::reg(tk, off));
                vec![q[0], k[0]]
            });
            (first, inside, raw)
        })
        .collect();
    let v_in = load_v(kb, spec, map, s);

    kb.comment("stage q*scale and k in shared memory as f32");
    let t_f32 = kb.shl(t, 2u32);
    let sq_addr = kb.shared_addr(s.s_q);
    let sk_addr = kb.shared_addr(s.s_k);
    let sq_t = kb.add(sq_addr, t_f32);
    let sk_t = kb.add(sk_addr, t_f32);
    for (first, inside, raw) in qk {
        maybe_guarded(kb, inside, |kb| {
            let x = widen(kb, dtype, &raw);
            let qs = kb.mul(x[0], s.scale);
            kb.st(Space::Shared, Address::reg(sq_t, i64::from(first * 4)), qs);
            kb.st(
                Space::Shared,
                Address::reg(sk_t, i64::from(first * 4)),
                x[1],
            );
            Vec::new()
        });
    }
    let (sv_addr, t_cols) = store_v(kb, spec, map, t, &v_in, s.s_v);
    kb.comment("thread 0 stages the row's slot (and log2 gamma_h) for the whole CTA");
    let slot_addr = kb.shared_addr(s.s_slot);
    kb.guarded(thread0, false, |kb| {
        for (i, &x) in slot_in.iter().enumerate() {
            kb.st(Space::Shared, Address::reg(slot_addr, 4 * i as i64), x);
        }
    });
    Staged {
        t,
        cols_left: s.cols_left,
        sq_addr,
        sk_addr,
        sv_addr,
        slot_addr,
        t_f32,
        t_cols,
    }
}

/// This thread's raw v columns and the masks they were loaded under.
struct VLoad {
    /// cw raw elements (unset where `inside` is false).
    raw: Vec<Reg>,
    /// The column mask of a slice ending past V.
    inside: Option<Reg>,
    /// t in the first row group (the group that stages v), when there are several.
    first_group: Option<Reg>,
}

/// Issue this thread's load of the CTA's v slice: the first row group loads cw columns
/// each, masked past column V.
fn load_v(kb: &mut KernelBuilder, spec: &KernelSpec, map: &Mapping, s: &StageIn<'_>) -> VLoad {
    let (cw, col_groups, row_groups) = (map.cols, map.col_groups, map.row_groups);
    let esize = spec.dtype.size_bytes() as u32;
    let t = s.t;
    let first_group = (row_groups > 1).then(|| kb.setp(Cmp::Lt, t, col_groups));
    let inside = map.col_tail.then(|| {
        // Column cw·t of this slice: inside V while cw·t < V − z·W (and t in the first row
        // group, when the slice does not end V).
        let cols_left: Operand = s.cols_left.map_or(spec.v.into(), Operand::from);
        let c_t = kb.mul_lo(t, cw);
        let inside = kb.setp(Cmp::Lt, c_t, cols_left);
        match (first_group, s.cols_left) {
            (Some(group), Some(_)) => kb.and(inside, group),
            _ => inside,
        }
    });
    let v_at = element_ptr(kb, s.g_v, t, cw * esize);
    let raw = maybe_guarded(kb, inside.or(first_group), |kb| {
        load_raw(kb, spec.dtype, cw, Address::reg(v_at, 0)) // v[cw·t..cw·t+cw]
    });
    VLoad {
        raw,
        inside,
        first_group,
    }
}

/// Widen the loaded v slice to f32 (zeros past column V) and stage it in shared memory:
/// the row groups share it. Returns the shared address of `s_v` and t·cw·4.
fn store_v(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    map: &Mapping,
    t: Reg,
    v_in: &VLoad,
    s_v: &SharedRef,
) -> (Reg, Reg) {
    let cw = map.cols;
    if map.col_tail {
        kb.comment("stage this slice of v as f32 (zeros past column V): the row groups share it");
    } else {
        kb.comment("stage this slice of v as f32: the row groups share it (read once per CTA)");
    }
    let sv_addr = kb.shared_addr(s_v);
    let t_cols = kb.shl(t, (cw * 4).trailing_zeros()); // t·cw f32 in bytes
    let sv_t = kb.add(sv_addr, t_cols);
    let store = |kb: &mut KernelBuilder, vs: &[Reg]| {
        let vs: Vec<Operand> = vs.iter().map(|&x| x.into()).collect();
        kb.st_vec(Space::Shared, Ty::F32, Address::reg(sv_t, 0), &vs);
    };
    match v_in.inside {
        // Guards do not nest: widen under the column mask, then store under the group's.
        Some(inside) => {
            let zeros: Vec<Reg> = (0..cw).map(|_| kb.mov(Ty::F32, 0.0f32)).collect();
            kb.guarded(inside, false, |kb| {
                for (&z, x) in zeros.iter().zip(widen(kb, spec.dtype, &v_in.raw)) {
                    kb.assign(z, x);
                }
            });
            maybe_guarded(kb, v_in.first_group, |kb| {
                store(kb, &zeros);
                Vec::new()
            });
        }
        None => {
            maybe_guarded(kb, v_in.first_group, |kb| {
                let vs = widen(kb, spec.dtype, &v_in.raw);
                store(kb, &vs);
                Vec::new()
            });
        }
    }
    (sv_addr, t_cols)
}
