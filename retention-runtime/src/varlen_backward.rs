//! The CPU varlen backward with empty sequences set aside: `retention_kernels::cpu`'s varlen
//! backward indexes the state of a sequence's first chunk, which an empty sequence does not
//! have, so sequences of length 0 are dropped from the boundaries before the call and their
//! gradients filled in after it. An empty sequence's H_T is its H0 (γ⁰), so its dH0 is its dH_T
//! (zeros without one) and it adds nothing to dq, dk, dv or d log γ.

use retention_core::{CuSeqlens, HostTensor, Result};
use retention_kernels::cpu::{self, CpuElement, CpuGradients};
use retention_kernels::reference::RetentionParams;

use crate::retention::shape_of;

/// `cpu::chunkwise_backward_varlen`, safe for empty sequences.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunkwise_backward_varlen<T: CpuElement>(
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
    cu: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
    d_o: &HostTensor<T>,
    d_ht: Option<&HostTensor<f32>>,
) -> Result<CpuGradients<T>> {
    let n = cu.num_seqs();
    let kept: Vec<usize> = (0..n).filter(|&i| !cu.range(i).is_empty()).collect();
    if kept.len() == n {
        return cpu::chunkwise_backward_varlen(q, k, v, cu, params, chunk, h0, d_o, d_ht);
    }
    let s = shape_of(q, k, v, params)?;
    let state_shape = s.state_shape(n);
    for (name, t) in [("h0", h0), ("d_ht", d_ht)] {
        if let Some(t) = t {
            t.expect_shape(name, &["N", "H", "K", "V"], &state_shape)?;
        }
    }
    // ΣT > 0 (a zero axis is an error above), so at least one sequence is kept.
    let mut bounds = vec![0];
    bounds.extend(kept.iter().map(|&i| cu.range(i).end));
    let packed = CuSeqlens::new(bounds, cu.as_slice()[n])?;
    let per = s.heads * s.dk * s.dv;
    let rows = |t: &HostTensor<f32>| -> Result<HostTensor<f32>> {
        let data = kept
            .iter()
            .flat_map(|&i| t.data()[i * per..(i + 1) * per].iter().copied())
            .collect();
        HostTensor::new(s.state_shape(kept.len()), data)
    };
    let h0_kept = h0.map(rows).transpose()?;
    let d_ht_kept = d_ht.map(rows).transpose()?;
    let g = cpu::chunkwise_backward_varlen(
        q,
        k,
        v,
        &packed,
        params,
        chunk,
        h0_kept.as_ref(),
        d_o,
        d_ht_kept.as_ref(),
    )?;
    // dH0 of an empty sequence is its dH_T; of a kept one, the kernel's.
    let mut dh0 = match d_ht {
        Some(d_ht) => d_ht.clone(),
        None => HostTensor::zeros(state_shape),
    };
    for (j, &i) in kept.iter().enumerate() {
        dh0.data_mut()[i * per..(i + 1) * per]
            .copy_from_slice(&g.dh0.data()[j * per..(j + 1) * per]);
    }
    Ok(CpuGradients { dh0, ..g })
}
