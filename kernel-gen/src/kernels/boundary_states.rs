//! The f32 state entering every chunk (ARCHITECTURE §7: what `chunkwise_for_training` keeps
//! for the backward), folded from phase 1 of the two-phase forward run with one chunk per
//! segment (`chunk_states`, L = C), which wrote each full chunk's local end state from zero:
//!
//! ```text
//! E_0 = H0 (or 0);   E_i = γ^C E_{i−1} + Local_{i−1},   i = 1 … S−1,   S = ⌈T/C⌉
//! ```
//!
//! (the chunkwise recurrence `R_i = γ^L R_{i−1} + K_iᵀ(V_i ⊙ ζ)` of §1 over full chunks;
//! γ^C = 2^(C·log2 γ), a relative exponent). Every element is independent: one thread per
//! (k, v) entry of one (row b, head h) walks the S chunks, so the grid is
//! `(B, H, ⌈K·V/256⌉)` with 256 threads; Local is read once and E written once — the
//! algorithmic minimum of global traffic for this output.
//!
//! | # | name           | type   | meaning                                                      |
//! |---|----------------|--------|--------------------------------------------------------------|
//! | 0 | `p_local`      | `.u64` | phase 1's f32 `[B, H, S−1, Kp, Vp]` (padded dims), or 0 if S = 1 |
//! | 1 | `p_h0`         | `.u64` | H0 f32 `[B, H, K, V]`, or 0                                  |
//! | 2 | `p_states`     | `.u64` | E f32 `[B·S, H, K, V]`: row b's chunks in order (written)    |
//! | 3 | `p_t`          | `.u32` | T ≥ 1                                                        |
//! | 4 | `p_heads`, `p_log2_gamma` | runtime-γ variant only                            |
//!
//! The spec: op `chunk_boundary_states`, the forward's K, V, C (the two-phase envelope's C
//! in {32, 64}) and γ set, f32, the default tile ([`KernelSpec::boundary_states`]).

use retention_core::Dtype;

use crate::blocks::decay::{emit_exp2, heads_and_log2_gamma};
use crate::dsl::{Address, Axis, Cmp, Space, Sreg, Ty};
use crate::error::unsupported;
use crate::math::chunk_params::declare_runtime_gamma;
use crate::math::chunk_tiling::{check_dims, tile_spec};
use crate::math::kernel_head::start_kernel;
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{GammaSet, KernelOp, KernelSpec, TileConfig};
use crate::{GenError, GenResult, LaunchGeometry};

/// Threads per CTA.
pub const THREADS: u32 = 256;
/// Chunks served: the two-phase forward's, whose phase 1 writes the local states.
pub const SUPPORTED_CHUNKS: [u32; 2] = [32, 64];

/// Check that this family serves `spec`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the first field it does not serve.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    if spec.op != KernelOp::ChunkBoundaryStates {
        return Err(unsupported(
            "op",
            spec.op.name(),
            "emits chunk_boundary_states only",
        ));
    }
    check_dims(spec)?;
    let c = spec.chunk.unwrap_or_default();
    if !SUPPORTED_CHUNKS.contains(&c) {
        return Err(unsupported(
            "chunk",
            c,
            "the chunk states come from the two-phase forward's phase 1: C in {32, 64}",
        ));
    }
    if spec.dtype != Dtype::F32 || spec.tile != TileConfig::default() {
        return Err(unsupported(
            "dtype/tile",
            format!("{} {:?}", spec.dtype.name(), spec.tile),
            "states are f32 on the default tile: KernelSpec::boundary_states",
        ));
    }
    spec.gammas.log2_gammas().map(drop)
}

/// The launch for `rows` rows and `heads` heads: grid `(B, H, ⌈K·V/256⌉)`, 256 threads.
///
/// # Errors
/// As [`validate`]; [`GenError::Launch`] for a grid the spec cannot take.
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    spec.check_grid(rows, heads)?;
    Ok(LaunchGeometry {
        grid: [rows, heads, (spec.k * spec.v).div_ceil(THREADS)],
        block: [THREADS, 1, 1],
        dynamic_smem_bytes: 0,
    })
}

/// Parameter names in launch order (the module docs' table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let mut names = PARAMS.to_vec();
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// The parameters every spec declares first, in launch order (runtime γ adds its two).
const PARAMS: [&str; 4] = ["p_local", "p_h0", "p_states", "p_t"];

/// The plan of one launch: the vector path, no workspace.
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let geometry = launch_geometry(spec, size.rows, size.heads)?;
    Ok(KernelPlan::new(
        spec,
        KernelPath::Vector,
        spec.v,
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
    let c = spec.chunk.unwrap_or_default();
    let (kv, v) = (spec.k * spec.v, spec.v);
    let padded = tile_spec(spec);
    let log2_gammas = spec.gammas.log2_gammas()?;
    let mut kb = start_kernel(
        spec,
        "retention chunk-entering states",
        "E_0 = H0; E_i = g^C E_(i-1) + Local_(i-1)  (f32, one thread per (k, v) entry)",
        (THREADS, false),
    );
    let [p_local, p_h0, p_states, p_t] = kb.params(PARAMS, &[("p_t", Ty::U32)]);
    let runtime = declare_runtime_gamma(&mut kb, spec.gammas == GammaSet::Runtime);

    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let tid = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, runtime.as_ref(), log2_gammas.as_deref(), h);
    let e = kb.mad_lo(z, THREADS, tid);
    let inside = kb.setp(Cmp::Lt, e, kv);
    let done = kb.label();
    kb.bra_if(inside, true, done);

    kb.comment("S = ceil(T / C) chunks; g^C = 2^(C log2 g)");
    let t = kb.ld_param(&p_t);
    let t1 = kb.add(t, c - 1);
    let chunks = kb.shr(t1, c.trailing_zeros());
    let stored = kb.sub(chunks, 1u32);
    let x = kb.mul(log2_gamma, c as f32);
    let g_c = emit_exp2(&mut kb, x);
    let bh = kb.mad_lo(b, heads, h);

    kb.comment("E_0 = H0 (or 0)");
    let r = kb.mov(Ty::F32, 0.0f32);
    let h0_raw = kb.ld_param(&p_h0);
    let given = kb.setp(Cmp::Ne, h0_raw, 0u64);
    let h0 = kb.global_ptr(&p_h0);
    let at = kb.mad_lo(bh, kv, e);
    let off = kb.mul_wide(at, 4u32);
    let h0_at = kb.add(h0, off);
    kb.guarded(given, false, |kb| {
        let x = kb.ld(Space::Global, Ty::F32, Address::reg(h0_at, 0));
        kb.assign(r, x);
    });

    kb.comment("row b's first state: ((b S) H + h) K V + e; chunk steps of H K V");
    let out = kb.global_ptr(&p_states);
    let first = kb.mul_lo(b, chunks);
    let first = kb.mad_lo(first, heads, h);
    let first = kb.mad_lo(first, kv, e);
    let off = kb.mul_wide(first, 4u32);
    let out_at = kb.add(out, off);
    let out_step = kb.mul_wide(heads, kv * 4);
    kb.comment("Local_i of (b, h) at ((b H + h)(S - 1) + i) Kp Vp + k Vp + v");
    let local = kb.global_ptr(&p_local);
    let row = kb.div(e, v);
    let col = kb.rem(e, v);
    let in_tile = kb.mad_lo(row, padded.v, col);
    let first_local = kb.mul_lo(bh, stored);
    let first_local = kb.mad_lo(first_local, padded.k * padded.v, in_tile);
    let off = kb.mul_wide(first_local, 4u32);
    let local_at = kb.add(local, off);
    let local_step = padded.k * padded.v * 4;
    kb.for_range(0u32, stored, 1, |kb, _| {
        kb.st(Space::Global, Address::reg(out_at, 0), r);
        let l = kb.ld(Space::Global, Ty::F32, Address::reg(local_at, 0));
        kb.fma_into(r, g_c, r, l);
        let next = kb.add(out_at, out_step);
        kb.assign(out_at, next);
        let next = kb.add(local_at, u64::from(local_step));
        kb.assign(local_at, next);
    });
    kb.st(Space::Global, Address::reg(out_at, 0), r);
    kb.place(done);
    kb.ret();
    kb.finish()
}
