//! The default catalog: every spec that ships precompiled.

use retention_core::Dtype;

use crate::Arch;
use crate::kernels::chunkwise;
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

/// Decode kernels for K ∈ {64, 128, 256}, V ∈ {K, 2K}, every dtype, every default gamma set,
/// sm_80 and sm_90, then the chunkwise forward for every [`CHUNKWISE_HEAD_DIMS`] pair and
/// C ∈ {32, 64, 128, 256} that the sm_80 generator serves, each dense and varlen, in a fixed
/// order.
pub fn default_catalog() -> Vec<KernelSpec> {
    let mut specs = decode_catalog();
    specs.extend(chunkwise_catalog());
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
    let mut specs = Vec::new();
    for arch in Arch::ALL {
        for (k, v) in CHUNKWISE_HEAD_DIMS {
            {
                for c in chunkwise::SUPPORTED_CHUNKS {
                    for dtype in Dtype::ALL {
                        for gammas in DEFAULT_GAMMA_SETS {
                            let spec = KernelSpec::chunkwise(k, v, c, gammas, dtype, arch);
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
                        }
                    }
                }
            }
        }
    }
    specs
}

/// The decode part of the catalog.
fn decode_catalog() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for arch in Arch::ALL {
        for k in [64, 128, 256] {
            for v in [k, 2 * k] {
                for dtype in Dtype::ALL {
                    for gammas in DEFAULT_GAMMA_SETS {
                        specs.push(KernelSpec::decode(k, v, gammas, dtype, arch));
                    }
                }
            }
        }
    }
    specs
}
