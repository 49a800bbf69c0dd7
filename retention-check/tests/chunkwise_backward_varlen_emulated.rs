//! The chunkwise backward's varlen kernels (`chunkwise_varlen_bwd_{dq,dk,dv}`: one launch over
//! every sequence of a packed batch, token ranges from a device `cu_seqlens`, per-sequence
//! H0, dH_T and dH0) run as PTX in the emulator and held to the f64 reference varlen backward
//! with the forward's tolerances (ARCHITECTURE §4, §7): f32 ≤ 1e-5 max relative, f16/bf16 ≤
//! 5e-3 relative RMSE, dH0 ≤ 1e-5 max relative, d log γ within 1e-5 of Σ|terms|, no read of
//! unwritten shared memory — sequences of length 1, 0 and C ∤ len, with and without H0 and
//! dH_T, every dtype, both archs.

use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec};
use retention_check::chunkwise_backward::{BackwardCase, BackwardCheck, check_case};
use retention_core::Dtype;
use retention_runtime::launch_target::Emulator;

fn spec(k: u32, v: u32, c: u32, dtype: Dtype, arch: Arch) -> KernelSpec {
    let op = KernelOp::ChunkwiseVarlenBackwardDq;
    KernelSpec::chunkwise(k, v, c, GammaSet::Runtime, dtype, arch).with_op(op)
}

fn case(lengths: &'static [usize], reference_chunk: usize, h0: bool, dht: bool) -> BackwardCase {
    BackwardCase {
        batch: lengths.len(),
        heads: 2,
        t: 0,
        packed: Some(lengths),
        reference_chunk,
        with_h0: h0,
        with_dht: dht,
        scale: 0.29,
    }
}

fn run(s: &KernelSpec, c: BackwardCase, seed: u64) -> BackwardCheck {
    let got = check_case(s, &Emulator(s.arch), c, seed).unwrap_or_else(|e| panic!("{s}: {e}"));
    let (lengths, chunk) = (c.packed, c.reference_chunk);
    let states = (c.with_h0, c.with_dht);
    eprintln!(
        "{s} {lengths:?} ref C={chunk} (h0, dht) {states:?}: {}",
        got.summary()
    );
    if let Some(why) = got.failure(s.dtype) {
        panic!("{s} {c:?}: {why}");
    }
    got
}

#[test]
fn f32_length_one_empty_and_partial_chunks_with_and_without_states() {
    let s = spec(64, 64, 32, Dtype::F32, Arch::Sm80);
    run(&s, case(&[1, 37, 0, 5], 32, true, true), 1);
    run(&s, case(&[1, 37, 0, 5], 7, false, false), 2);
    run(&s, case(&[33, 1], 1, true, false), 3);
    run(&s, case(&[33, 1], 5, false, true), 4);
}

#[test]
fn sixteen_bit_inputs_both_archs() {
    let f16 = spec(64, 128, 32, Dtype::F16, Arch::Sm80);
    run(&f16, case(&[40, 1, 9], 32, true, true), 5);
    let bf16 = spec(64, 64, 64, Dtype::Bf16, Arch::Sm90);
    run(&bf16, case(&[1, 70], 64, false, true), 6);
    run(&bf16, case(&[1, 70], 3, true, false), 7);
}

#[test]
fn odd_head_dims_and_named_gammas() {
    let s = KernelSpec {
        gammas: GammaSet::Retnet { heads: 2 },
        ..spec(60, 100, 32, Dtype::Bf16, Arch::Sm80)
    };
    run(&s, case(&[3, 35], 32, true, true), 8);
}

/// One sequence packed alone gives the dense kernels' gradients exactly: same tokens, same
/// arithmetic, only where the range comes from differs (two `cu_seqlens` bounds per CTA).
#[test]
fn one_packed_sequence_equals_the_dense_kernels() {
    let s = spec(64, 64, 32, Dtype::F32, Arch::Sm90);
    let packed = run(&s, case(&[45], 32, true, true), 9);
    let dense_spec = KernelSpec {
        op: KernelOp::ChunkwiseBackwardDq,
        ..s
    };
    let dense = BackwardCase {
        t: 45,
        batch: 1,
        packed: None,
        ..case(&[45], 32, true, true)
    };
    let dense = run(&dense_spec, dense, 9);
    assert_eq!(packed.dlog_gamma, dense.dlog_gamma);
    assert_eq!(packed.grad_errors, dense.grad_errors);
    assert_eq!(packed.dh0_error, dense.dh0_error);
    // Global traffic: the dense kernels' plus the two u32 bounds, which every thread of a
    // CTA loads (the emulator counts 8 bytes per thread; on a GPU each warp's load is one
    // broadcast sector: 2 per warp, 8 warps per CTA).
    let ops = kernel_gen::kernels::chunkwise_backward::VARLEN_OPS;
    for ((p, d), op) in packed.reports.iter().zip(&dense.reports).zip(ops) {
        let spec = KernelSpec { op, ..s };
        let ctas: u32 = kernel_gen::launch_geometry(&spec, 1, 2)
            .unwrap()
            .grid
            .iter()
            .product();
        let ctas = u64::from(ctas);
        assert_eq!(
            p.global_bytes_read,
            d.global_bytes_read + 8 * 256 * ctas,
            "{op:?}"
        );
        assert_eq!(p.global_sectors, d.global_sectors + 2 * 8 * ctas, "{op:?}");
        assert_eq!(p.global_bytes_written, d.global_bytes_written, "{op:?}");
    }
}
