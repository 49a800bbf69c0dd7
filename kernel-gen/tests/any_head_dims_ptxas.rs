//! Kernels for head dims outside the catalog (padded tiles with masked tails) assemble for
//! sm_80 and sm_90 with zero errors and zero spills, on a sample of the chunkwise (whole-chunk
//! and blocked FMA, whole-chunk and streamed tensor cores, dense, varlen and both two-phase
//! phases) and parallel specs: K, V from {8, 16, 24, 60, 100, 200}
//! and one odd pair (scalar tail accesses), every dtype. Skips with a notice when ptxas is not
//! found (`RETENTION_PTXAS` or `PATH`; `scripts/install-ptxas.sh` installs it).

use kernel_gen::ptxas::{assemble_all, find_ptxas};
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, emit_ptx};
use retention_core::Dtype;

fn sample() -> Vec<KernelSpec> {
    let rt = GammaSet::Runtime;
    let named = GammaSet::Retnet { heads: 8 };
    let mut specs = Vec::new();
    for arch in Arch::ALL {
        specs.extend([
            KernelSpec::chunkwise(16, 24, 32, rt, Dtype::F32, arch),
            KernelSpec::chunkwise(60, 100, 64, named, Dtype::F32, arch),
            KernelSpec::chunkwise(200, 200, 64, rt, Dtype::F32, arch),
            KernelSpec::chunkwise(100, 8, 128, rt, Dtype::F32, arch),
            KernelSpec::chunkwise(24, 200, 256, rt, Dtype::Bf16, arch),
            KernelSpec::chunkwise(100, 60, 64, rt, Dtype::F16, arch),
            KernelSpec::chunkwise(13, 7, 32, rt, Dtype::Bf16, arch),
            KernelSpec::chunkwise(200, 100, 64, named, Dtype::Bf16, arch),
            KernelSpec::chunkwise(100, 24, 256, rt, Dtype::F16, arch),
            KernelSpec::chunkwise(60, 100, 128, rt, Dtype::Bf16, arch),
            KernelSpec::chunkwise(200, 100, 128, rt, Dtype::F16, arch),
            KernelSpec::parallel(8, 24, 32, rt, Dtype::F32, arch),
            KernelSpec::parallel(60, 100, 64, named, Dtype::Bf16, arch),
            KernelSpec::parallel(200, 200, 32, rt, Dtype::F32, arch),
            KernelSpec::parallel(13, 7, 32, rt, Dtype::F16, arch),
            KernelSpec::parallel(24, 200, 32, rt, Dtype::Bf16, arch),
            KernelSpec::parallel(200, 60, 64, rt, Dtype::F16, arch),
        ]);
        let varlen = KernelOp::ChunkwiseVarlen;
        let phases = [KernelOp::ChunkStates, KernelOp::ChunkwiseSegmented];
        let other_ops = [
            ((100, 60, 64, Dtype::Bf16), &[varlen][..]),
            (
                (60, 24, 32, Dtype::F32),
                &[varlen, phases[0], phases[1]][..],
            ),
            ((100, 200, 64, Dtype::Bf16), &phases[..]),
            ((13, 7, 32, Dtype::F16), &phases[..]),
        ];
        for ((k, v, c, dtype), ops) in other_ops {
            let spec = KernelSpec::chunkwise(k, v, c, rt, dtype, arch);
            specs.extend(ops.iter().map(|&op| spec.with_op(op)));
        }
    }
    specs
}

#[test]
fn sampled_any_head_dim_kernels_assemble_without_spills() {
    let specs = sample();
    for spec in &specs {
        spec.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
    }
    let Some(ptxas) = find_ptxas() else {
        eprintln!(
            "notice: ptxas not found (set RETENTION_PTXAS or put it on PATH); ptxas check skipped"
        );
        return;
    };
    let modules: Vec<(String, Arch)> = specs
        .iter()
        .map(|s| (emit_ptx(s).unwrap(), s.arch))
        .collect();
    let mut failures = Vec::new();
    for (spec, result) in specs.iter().zip(assemble_all(&ptxas, &modules)) {
        match result {
            Err(e) => failures.push(format!("{}: {e}", spec.slug())),
            Ok(info) if info.spills() || info.stack_frame_bytes > 0 => failures.push(format!(
                "{}: spills {} B stored / {} B loaded, stack {} B",
                spec.slug(),
                info.spill_store_bytes,
                info.spill_load_bytes,
                info.stack_frame_bytes
            )),
            Ok(info) => {
                assert!(info.registers > 0, "{}: no register count", spec.slug());
                eprintln!("{}: {} registers, 0 spills", spec.slug(), info.registers);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
