//! The per-head sum of f32 partials (ARCHITECTURE §3, §7): `out[h] (+)= Σ_r Σ_m
//! in[(r·H + h)·M + m]` over a `[R, H, M]` workspace — how the chunkwise backward's d log γ
//! partials (`[B, H, slices, 256]` per kernel) become d log γ_h on the device, with no
//! device→host download.
//!
//! Mapping: one CTA of 256 threads per head h (grid `(H, 1, 1)`, H = `nctaid.x`); thread t
//! walks m = t, t + 256, … of every row r, so consecutive threads read consecutive floats.
//!
//! Accuracy: each thread accumulates with Kahan's compensated sum (error ≤ 2u·Σ|x| whatever
//! the count, u = 2⁻²⁴), then a warp butterfly (5 levels) and one thread's sum of the 8 warp
//! sums (7 more) — in all ≤ (2 + 5 + 7 + 1)u·Σ|x| < 1e-6·Σ|x|, inside the backward's 1e-5 of
//! Σ|terms| (a plain running f32 sum over B·slices partials per thread could not promise
//! that). No multiplications, so nothing can be contracted into an FMA that would break the
//! compensation.
//!
//! | # | name           | type   | meaning                                            |
//! |---|----------------|--------|----------------------------------------------------|
//! | 0 | `p_partials`   | `.u64` | f32 `[R, H, M]` (R·H·M < 2³²)                      |
//! | 1 | `p_rows`       | `.u32` | R                                                  |
//! | 2 | `p_per`        | `.u32` | M, partials per (row, head)                        |
//! | 3 | `p_out`        | `.u64` | f32 `[H]` (written)                                |
//! | 4 | `p_accumulate` | `.u32` | 0: `out[h] = sum`; otherwise `out[h] += sum`       |
//!
//! The spec: op `head_sum`, K = V = 1 (no head dims), no chunk, runtime γ (no decays), f32,
//! the default tile (256 threads); [`KernelSpec::head_sum`] builds it.

use retention_core::Dtype;

use crate::blocks::warp_sum::warp_sum_f32;
use crate::dsl::{Address, Axis, Cmp, Space, Sreg, Ty};
use crate::error::unsupported;
use crate::math::kernel_head::start_kernel;
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{GammaSet, KernelSpec, TileConfig};
use crate::{GenError, GenResult, LaunchGeometry};

/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Check that this family serves `spec`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the first field it does not serve.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    let want = KernelSpec::head_sum(spec.arch);
    let checks: [(&'static str, bool, String); 6] = [
        ("op", spec.op == want.op, spec.op.name().into()),
        (
            "head dims",
            (spec.k, spec.v) == (1, 1),
            format!("K={} V={}", spec.k, spec.v),
        ),
        ("chunk", spec.chunk.is_none(), format!("{:?}", spec.chunk)),
        (
            "gammas",
            spec.gammas == GammaSet::Runtime,
            spec.gammas.name(),
        ),
        ("dtype", spec.dtype == Dtype::F32, spec.dtype.name().into()),
        (
            "tile",
            spec.tile == TileConfig::default(),
            format!("{:?}", spec.tile),
        ),
    ];
    for (what, ok, value) in checks {
        if !ok {
            return Err(unsupported(
                what,
                value,
                "head_sum is one kernel per arch: KernelSpec::head_sum(arch)",
            ));
        }
    }
    Ok(())
}

/// The launch for `heads` heads (the rows are a parameter): grid `(H, 1, 1)`, 256 threads.
///
/// # Errors
/// As [`validate`]; [`GenError::Launch`] for zero heads.
pub fn launch_geometry(spec: &KernelSpec, _rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    if heads == 0 {
        return Err(GenError::Launch("head_sum needs at least one head".into()));
    }
    Ok(LaunchGeometry {
        grid: [heads, 1, 1],
        block: [THREADS, 1, 1],
        dynamic_smem_bytes: 0,
    })
}

/// Parameter names in launch order (the module docs' table).
pub fn param_names(_spec: &KernelSpec) -> Vec<&'static str> {
    PARAMS.to_vec()
}

/// The parameters, in launch order: the partials and the sums `.u64`, the counts `.u32`.
const PARAMS: [&str; 5] = ["p_partials", "p_rows", "p_per", "p_out", "p_accumulate"];

/// The plan of one launch over `size.heads` heads: the vector path, no workspace.
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let geometry = launch_geometry(spec, size.rows, size.heads)?;
    Ok(KernelPlan::new(
        spec,
        KernelPath::Vector,
        1,
        geometry,
        param_names(spec),
    ))
}

/// Emit the kernel (validated first).
///
/// # Errors
/// As [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    let mut kb = start_kernel(
        spec,
        "retention head sum",
        "out[h] (+)= sum_r sum_m partials[r, h, m]  (Kahan per thread, then warp and CTA sums)",
        (THREADS, false),
    );
    let counts = [
        ("p_rows", Ty::U32),
        ("p_per", Ty::U32),
        ("p_accumulate", Ty::U32),
    ];
    let [p_in, p_rows, p_per, p_out, p_acc] = kb.params(PARAMS, &counts);
    let warps = THREADS / 32;
    let sh = kb.shared_array("warp_sums", warps * 4, 4, "f32 [8]: one sum per warp");

    let h = kb.sreg(Sreg::Ctaid(Axis::X));
    let heads = kb.sreg(Sreg::Nctaid(Axis::X));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let rows = kb.ld_param(&p_rows);
    let per = kb.ld_param(&p_per);
    let src = kb.global_ptr(&p_in);
    kb.comment("Kahan sum of this thread's partials: m = t, t + 256, ... of every row");
    let sum = kb.mov(Ty::F32, 0.0f32);
    let comp = kb.mov(Ty::F32, 0.0f32);
    kb.for_range(0u32, rows, 1, |kb, r| {
        let rh = kb.mad_lo(r, heads, h);
        let first = kb.mul_lo(rh, per);
        kb.for_range(t, per, THREADS, |kb, m| {
            let e = kb.add(first, m);
            let off = kb.mul_wide(e, 4u32);
            let at = kb.add(src, off);
            let x = kb.ld(Space::Global, Ty::F32, Address::reg(at, 0));
            let y = kb.sub(x, comp);
            let next = kb.add(sum, y);
            let grown = kb.sub(next, sum);
            let lost = kb.sub(grown, y);
            kb.assign(comp, lost);
            kb.assign(sum, next);
        });
    });
    let mine = kb.sub(sum, comp);
    kb.comment("warp sums, then thread 0 adds the 8 of them");
    let w = warp_sum_f32(&mut kb, mine);
    let base = kb.shared_addr(&sh);
    let lane = kb.and(t, 31u32);
    let warp = kb.shr(t, 5u32);
    let w4 = kb.shl(warp, 2u32);
    let w_at = kb.add(base, w4);
    let lead = kb.setp(Cmp::Eq, lane, 0u32);
    kb.guarded(lead, false, |kb| {
        kb.st(Space::Shared, Address::reg(w_at, 0), w);
    });
    kb.bar_sync(0);
    let first = kb.setp(Cmp::Eq, t, 0u32);
    let done = kb.label();
    kb.bra_if(first, true, done);
    {
        let kb = &mut kb;
        let total = kb.ld(Space::Shared, Ty::F32, Address::reg(base, 0));
        for i in 1..warps {
            let x = kb.ld(Space::Shared, Ty::F32, Address::reg(base, i64::from(4 * i)));
            let s = kb.add(total, x);
            kb.assign(total, s);
        }
        let dst = kb.global_ptr(&p_out);
        let off = kb.mul_wide(h, 4u32);
        let at = kb.add(dst, off);
        let acc = kb.ld_param(&p_acc);
        let add = kb.setp(Cmp::Ne, acc, 0u32);
        kb.guarded(add, false, |kb| {
            let old = kb.ld(Space::Global, Ty::F32, Address::reg(at, 0));
            let s = kb.add(total, old);
            kb.assign(total, s);
        });
        kb.st(Space::Global, Address::reg(at, 0), total);
    }
    kb.place(done);
    kb.ret();
    kb.finish()
}
