//! Run a catalog packed variable-length chunkwise kernel (`chunkwise_varlen`) on a launch
//! target against `reference::chunkwise_varlen` on the dtype-rounded inputs: two batches —
//! three sequences of lengths C/2 + 3 (< C), 1 and 2C + 5 (not a multiple of C) with H0, and
//! 5, 0 (empty: H_T = H0 = 0) and C without H0.

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Param};
use kernel_gen::{GammaSet, KernelSpec, launch_geometry};
use retention_core::{CuSeqlens, Dtype, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};

use crate::io::{
    EmuCheck, check_heads, emu_dtype, gammas_for, input_buffer, output_values, state_work, tensor,
    unwritten_shared_reads,
};
use retention_runtime::launch_target::LaunchTarget;

/// Scale applied to q (not the default, so a kernel that ignores it fails).
const SCALE: f64 = 0.31;

/// Heads a spec is checked with: its named set's, or 3 for runtime γ.
fn heads(spec: &KernelSpec) -> usize {
    check_heads(spec)
}

/// Emulated work of the two batches (tokens × heads × K × V): what a sampled run budgets.
pub fn cost(spec: &KernelSpec) -> usize {
    let c = spec.chunk.unwrap_or(1) as usize;
    state_work(spec, 1, heads(spec), 3 * c + 9 + c + 5)
}

/// (sequences, heads) of the first batch's launch.
pub fn problem_size(spec: &KernelSpec) -> (usize, usize) {
    (3, heads(spec))
}

/// Run one packed batch of sequences with `lengths` (with H0 when `with_h0`) and compare with
/// the reference; the check's errors are the worst over o and H_T.
///
/// # Errors
/// A one-line reason: launch geometry, a launch failure (emulator fault, device error), or a
/// reference failure. Results off the reference are not errors here: see
/// [`EmuCheck::failure`].
pub fn check_batch(
    spec: &KernelSpec,
    module: &dyn LaunchTarget,
    lengths: &[usize],
    with_h0: bool,
    seed: u64,
) -> Result<EmuCheck, String> {
    let h = heads(spec);
    let (k, v) = (spec.k as usize, spec.v as usize);
    let chunk = spec
        .chunk
        .ok_or_else(|| format!("{} has no chunk size", spec.slug()))? as usize;
    let n = lengths.len();
    let mut bounds = vec![0usize];
    for l in lengths {
        bounds.push(bounds.last().copied().unwrap_or(0) + l);
    }
    let total = bounds.last().copied().unwrap_or(0);
    let cu = CuSeqlens::new(bounds.clone(), total).map_err(|e| e.to_string())?;
    let gammas = gammas_for(spec.gammas, h)?;
    let params = RetentionParams::new(gammas.clone(), Some(SCALE));
    let mut rng = SplitMix64::new(seed);
    let round = |xs: Vec<f64>| {
        xs.into_iter()
            .map(|x| spec.dtype.round(x))
            .collect::<Vec<_>>()
    };
    let q = round(rng.vec(total * h * k));
    let kk = round(rng.vec(total * h * k));
    let vv = round(rng.vec(total * h * v));
    let h0: Vec<f64> = rng
        .vec(n * h * k * v)
        .into_iter()
        .map(|x| f64::from(x as f32))
        .collect();
    let h0_tensor = tensor(vec![n, h, k, v], &h0)?;
    let (want_o, want_ht) = reference::chunkwise_varlen(
        &tensor(vec![1, total, h, k], &q)?,
        &tensor(vec![1, total, h, k], &kk)?,
        &tensor(vec![1, total, h, v], &vv)?,
        &cu,
        &params,
        chunk,
        with_h0.then_some(&h0_tensor),
    )
    .map_err(|e| e.to_string())?;

    let geometry = launch_geometry(spec, n as u32, h as u32).map_err(|e| e.to_string())?;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes)
        .arg(Param::Buffer(input_buffer(spec.dtype, &q)))
        .arg(Param::Buffer(input_buffer(spec.dtype, &kk)))
        .arg(Param::Buffer(input_buffer(spec.dtype, &vv)))
        .arg(Param::Buffer(
            Buffer::zeros(emu_dtype(spec.dtype), total * h * v).output(),
        ))
        .arg(if with_h0 {
            Param::Buffer(Buffer::from_f32(
                &h0.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            ))
        } else {
            Param::U64(0)
        })
        .arg(Param::Buffer(
            Buffer::zeros(EmuDtype::F32, n * h * k * v).output(),
        ))
        .arg(Param::Buffer(Buffer::from_u32(
            &bounds.iter().map(|&b| b as u32).collect::<Vec<_>>(),
        )))
        .arg(Param::F32(SCALE as f32));
    if spec.gammas == GammaSet::Runtime {
        launch = launch
            .arg(Param::U32(h as u32))
            .arg(Param::Buffer(Buffer::from_f32(
                &(0..h).map(|i| gammas.log2(i) as f32).collect::<Vec<_>>(),
            )));
    }
    let report = module
        .execute(spec, &mut launch)
        .map_err(|e| format!("lengths {lengths:?}: {e}"))?;
    let got = output_values(
        spec.dtype,
        launch
            .buffer(3)
            .ok_or("the output argument is not a buffer")?,
    );
    let got_ht: Vec<f64> = launch
        .buffer(5)
        .ok_or("the final-state argument is not a buffer")?
        .to_f32()
        .into_iter()
        .map(f64::from)
        .collect();
    Ok(EmuCheck {
        o_error: match spec.dtype {
            Dtype::F32 => reference::max_rel_diff(&got, want_o.data()),
            Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got, want_o.data()),
        },
        state_error: reference::max_rel_diff(&got_ht, want_ht.data()),
        unwritten_shared_reads: unwritten_shared_reads(&report),
        report: Some(report),
    })
}

/// Both batches of the module doc; the worst errors of the two.
///
/// # Errors
/// As [`check_batch`].
pub fn check(spec: &KernelSpec, module: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    let c = spec.chunk.unwrap_or(1) as usize;
    let a = check_batch(spec, module, &[c / 2 + 3, 1, 2 * c + 5], true, seed)?;
    let b = check_batch(spec, module, &[5, 0, c], false, seed + 50)?;
    Ok(EmuCheck {
        o_error: a.o_error.max(b.o_error),
        state_error: a.state_error.max(b.state_error),
        unwritten_shared_reads: a.unwritten_shared_reads + b.unwritten_shared_reads,
        report: b.report,
    })
}
