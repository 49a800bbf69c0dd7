//! The default catalog: every spec that ships precompiled.

use retention_core::Dtype;

use crate::Arch;
use crate::kernels::parallel_backward;
use crate::kernels::{chunkwise, chunkwise_backward, decode_plan, parallel};
use crate::spec::{GammaSet, KernelOp, KernelSpec};

/// The gamma sets of the default catalog: the paper's head counts (8, 10, 16), 32 for the
/// slowest heads, and runtime γ for everything else.
pub const DEFAULT_GAMMA_SETS: [GammaSet; 5] = [
    GammaSet::Retnet { heads: 8 },
    GammaSet::Retnet { heads: 10 },
    GammaSet::Retnet { heads: 16 },
    GammaSet::Retnet { heads: 32 },
    GammaSet::Runtime,
];

/// Decode kernels for K ∈ {64, 128, 256}, V ∈ {K, 2K}, every dtype, every default gamma set
/// (each with the wider value slices the decode plan picks for larger batches),
/// sm_80 and sm_90, then the chunkwise forward for every [`CHUNKWISE_HEAD_DIMS`] pair and
/// C ∈ {32, 64, 128, 256} that the sm_80 generator serves, each dense and varlen, then the
/// attention decode baseline ([`attention_catalog`]), then the parallel forward
/// ([`parallel_catalog`]), then both phases of the two-phase chunkwise forward for every
/// dense chunkwise spec they serve ([`two_phase_catalog`]), the chunkwise backward, the parallel
/// backward ([`parallel_backward_catalog`]), then the gated MSR epilogue
/// ([`epilogue_catalog`]), then the per-head sum of the backward's f32 partials (one per
/// arch), then the fold of the chunk-entering states ([`boundary_states_catalog`]), in a
/// fixed order.
pub fn default_catalog() -> Vec<KernelSpec> {
    let mut specs = decode_catalog();
    specs.extend(chunkwise_catalog());
    specs.extend(attention_catalog());
    specs.extend(parallel_catalog());
    specs.extend(two_phase_catalog());
    specs.extend(chunkwise_backward_catalog());
    specs.extend(parallel_backward_catalog());
    specs.extend(epilogue_catalog());
    specs.extend(Arch::ALL.map(KernelSpec::head_sum));
    specs.extend(boundary_states_catalog());
    specs
}

/// The fold of the chunk-entering states (`chunkwise_for_training` on a GPU) for every (K, V)
/// of [`CHUNKWISE_HEAD_DIMS`], C ∈ {32, 64} and every default gamma set, sm_80 and sm_90.
pub fn boundary_states_catalog() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for arch in Arch::ALL {
        for (k, v) in CHUNKWISE_HEAD_DIMS {
            for c in crate::kernels::boundary_states::SUPPORTED_CHUNKS {
                for gammas in DEFAULT_GAMMA_SETS {
                    specs.push(KernelSpec::boundary_states(k, v, c, gammas, arch));
                }
            }
        }
    }
    specs
}

/// The gated MSR epilogue, forward then backward, for every V of [`CHUNKWISE_HEAD_DIMS`]
/// (64, 128, 256, 512), every dtype, sm_80 and sm_90.
pub fn epilogue_catalog() -> Vec<KernelSpec> {
    let mut values: Vec<u32> = CHUNKWISE_HEAD_DIMS.iter().map(|&(_, v)| v).collect();
    values.sort_unstable();
    values.dedup();
    let dims: Vec<(u32, u32)> = values.into_iter().map(|v| (v, v)).collect();
    walk(&dims, &[None], &[GammaSet::Runtime], |specs, p| {
        let spec = KernelSpec::epilogue(p.v, p.dtype, p.arch);
        specs.extend([spec, spec.epilogue_backward()]);
    })
}

/// (K, V) of the attention decode baseline: K = V ∈ {64, 128, 256}, and the paper's
/// K = 256, V = 512 (the head shape `retention bench` compares at).
pub const ATTENTION_HEAD_DIMS: [(u32, u32); 4] = [(64, 64), (128, 128), (256, 256), (256, 512)];

/// The attention decode baseline: split and combine pass of every head shape, dtype and arch.
pub fn attention_catalog() -> Vec<KernelSpec> {
    walk(
        &ATTENTION_HEAD_DIMS,
        &[None],
        &[GammaSet::Runtime],
        |specs, p| {
            let spec = KernelSpec::attention_decode(p.k, p.v, p.dtype, p.arch);
            specs.extend([spec, spec.attention_combine()]);
        },
    )
}

/// The parallel-forward part of the catalog: every (K, V) of [`CHUNKWISE_HEAD_DIMS`], every
/// dtype (tile [`parallel::default_tile`]), every default gamma set, sm_80 and sm_90.
pub fn parallel_catalog() -> Vec<KernelSpec> {
    walk(
        &CHUNKWISE_HEAD_DIMS,
        &[None],
        &DEFAULT_GAMMA_SETS,
        |specs, p| {
            let tile = parallel::default_tile(p.dtype);
            specs.push(KernelSpec::parallel(
                p.k, p.v, tile, p.gammas, p.dtype, p.arch,
            ));
        },
    )
}

/// The parallel backward (dQ, dK and dV passes) at the forward parallel catalog's shapes:
/// every (K, V) of [`CHUNKWISE_HEAD_DIMS`], every dtype (tile
/// [`parallel_backward::DEFAULT_TILE`]), every default gamma set, sm_80 and sm_90.
pub fn parallel_backward_catalog() -> Vec<KernelSpec> {
    walk(
        &CHUNKWISE_HEAD_DIMS,
        &[None],
        &DEFAULT_GAMMA_SETS,
        |specs, p| {
            let tile = parallel_backward::DEFAULT_TILE;
            specs.extend(parallel_backward::passes(
                p.k, p.v, tile, p.gammas, p.dtype, p.arch,
            ));
        },
    )
}

/// The two-phase chunkwise forward (`chunk_states` then `chunkwise_segmented`) for every
/// dense spec of [`chunkwise_catalog`] both phases serve, phase 1 first.
pub fn two_phase_catalog() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for spec in chunkwise_catalog() {
        if spec.op != KernelOp::Chunkwise {
            continue;
        }
        let phases = [KernelOp::ChunkStates, KernelOp::ChunkwiseSegmented]
            .map(|op| KernelSpec { op, ..spec });
        if phases.iter().all(|p| p.validate().is_ok()) {
            specs.extend(phases);
        }
    }
    specs
}

/// (K, V) of the chunkwise catalog: every pair of 64 and 128, then V = 2K for K = 128 and
/// the paper's K = V = 256 and K = 256, V = 512 (6.7B).
pub const CHUNKWISE_HEAD_DIMS: [(u32, u32); 7] = [
    (64, 64),
    (64, 128),
    (128, 64),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 512),
];

/// The chunkwise-forward part of the catalog.
pub fn chunkwise_catalog() -> Vec<KernelSpec> {
    walk_chunkwise(&chunkwise::SUPPORTED_CHUNKS, |specs, spec| {
        // One shape set for every arch: what sm_80's shared memory holds.
        let on_sm80 = KernelSpec {
            arch: Arch::Sm80,
            ..spec
        };
        if on_sm80.validate().is_ok() {
            specs.push(spec);
            specs.push(KernelSpec {
                op: KernelOp::ChunkwiseVarlen,
                ..spec
            });
        }
    })
}

/// The chunkwise backward (dq, dk, dv kernels, each dense and varlen) for every (K, V) of
/// [`CHUNKWISE_HEAD_DIMS`], the forward catalog's chunks that the family serves
/// ([`chunkwise_backward::SUPPORTED_CHUNKS`]), every dtype and default gamma set, sm_80 and
/// sm_90.
pub fn chunkwise_backward_catalog() -> Vec<KernelSpec> {
    let mut specs = walk_chunkwise(&chunkwise_backward::SUPPORTED_CHUNKS, |specs, spec| {
        let ops = chunkwise_backward::OPS.into_iter();
        specs.extend(
            ops.chain(chunkwise_backward::VARLEN_OPS)
                .map(|op| spec.with_op(op)),
        );
    });
    specs.extend(chunkwise_backward_tc_catalog());
    specs
}

/// The tensor-core chunkwise backward: every dense spec of [`chunkwise_backward_catalog`]'s
/// FMA part that has a tensor-core kernel (f16 and bf16; dq and dk only where V ≤ 256), named
/// by its tile (`chunkwise_backward::tc_plan::TC_TILE`).
pub fn chunkwise_backward_tc_catalog() -> Vec<KernelSpec> {
    walk_chunkwise(&chunkwise_backward::SUPPORTED_CHUNKS, |specs, spec| {
        if matches!(spec.dtype, Dtype::F16 | Dtype::Bf16) {
            for fma in chunkwise_backward::OPS.map(|op| spec.with_op(op)) {
                let tc = chunkwise_backward::preferred(&fma);
                if tc != fma {
                    specs.push(tc);
                }
            }
        }
    })
}

/// The decode part of the catalog.
fn decode_catalog() -> Vec<KernelSpec> {
    let dims: Vec<(u32, u32)> = [64, 128, 256]
        .into_iter()
        .flat_map(|k| [(k, k), (k, 2 * k)])
        .collect();
    walk(&dims, &[None], &DEFAULT_GAMMA_SETS, |specs, p| {
        let spec = KernelSpec::decode(p.k, p.v, p.gammas, p.dtype, p.arch);
        specs.push(spec);
        // The wider-slice variants the plan picks for larger batches.
        for w in decode_plan::wider_slices(&spec) {
            specs.push(KernelSpec {
                chunk: Some(w),
                ..spec
            });
        }
    })
}

/// One point of the catalog's product of archs, head dims, chunks, dtypes and gamma sets.
#[derive(Clone, Copy)]
struct Point {
    arch: Arch,
    k: u32,
    v: u32,
    chunk: Option<u32>,
    dtype: Dtype,
    gammas: GammaSet,
}

/// [`walk`] over [`CHUNKWISE_HEAD_DIMS`], `chunks` and [`DEFAULT_GAMMA_SETS`]: `add(specs,
/// spec)` with each point's chunkwise-forward spec.
fn walk_chunkwise(
    chunks: &[u32],
    mut add: impl FnMut(&mut Vec<KernelSpec>, KernelSpec),
) -> Vec<KernelSpec> {
    let chunks: Vec<Option<u32>> = chunks.iter().copied().map(Some).collect();
    walk(
        &CHUNKWISE_HEAD_DIMS,
        &chunks,
        &DEFAULT_GAMMA_SETS,
        |specs, p| {
            if let Some(c) = p.chunk {
                let spec = KernelSpec::chunkwise(p.k, p.v, c, p.gammas, p.dtype, p.arch);
                add(specs, spec);
            }
        },
    )
}

/// The catalog's fixed order: arch outermost, then (K, V) of `dims`, each of `chunks`
/// (`[None]` for a family without one), the dtype and each of `gammas` innermost;
/// `add(specs, point)` appends the specs of each point.
fn walk(
    dims: &[(u32, u32)],
    chunks: &[Option<u32>],
    gammas: &[GammaSet],
    mut add: impl FnMut(&mut Vec<KernelSpec>, Point),
) -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for arch in Arch::ALL {
        for &(k, v) in dims {
            for &chunk in chunks {
                for dtype in Dtype::ALL {
                    for &gammas in gammas {
                        let point = Point {
                            arch,
                            k,
                            v,
                            chunk,
                            dtype,
                            gammas,
                        };
                        add(&mut specs, point);
                    }
                }
            }
        }
    }
    specs
}
