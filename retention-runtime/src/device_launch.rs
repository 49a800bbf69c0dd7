//! The retention kernels as [`KernelLaunch`]es over device tensors: which catalog spec serves
//! a problem and how its parameters are bound. Callers have checked devices, dtypes and
//! shapes; everything here enqueues on the given stream and allocates nothing but the
//! two-phase workspace (a pool block, cached after the first call).

use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, launch_geometry};
use retention_core::{Dtype, Gammas, Result, RetentionError, RetentionShape};

use crate::kernel_launch::{Arg, Executor, KernelLaunch, Region};
use crate::memory_pool::MemoryPool;
use crate::stream::Stream;

/// What every launch of one call shares.
pub(crate) struct Ctx<'a> {
    pub exec: &'a Executor,
    pub stream: &'a Stream,
    pub gammas: &'a Gammas,
    /// log2 γ per head, f32, on the device (read by runtime-γ kernels).
    pub log2_gamma: &'a Region,
    pub scale: f32,
    pub dtype: Dtype,
}

/// Baked immediates for an unsharded RetNet schedule, the runtime-γ variant otherwise.
pub(crate) fn gamma_set(gammas: &Gammas) -> GammaSet {
    if gammas.is_retnet() && gammas.head_offset() == 0 {
        GammaSet::Retnet {
            heads: gammas.len() as u32,
        }
    } else {
        GammaSet::Runtime
    }
}

fn launch_for(spec: KernelSpec, g: &kernel_gen::LaunchGeometry) -> KernelLaunch {
    KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes)
}

/// Binds the scalars and decays every sequence kernel takes.
pub(crate) fn bind_common(l: &mut KernelLaunch, cx: &Ctx<'_>, heads: usize, t: usize) {
    l.bind("p_t", Arg::U32(t as u32))
        .bind("p_scale", Arg::F32(cx.scale))
        .bind("p_heads", Arg::U32(heads as u32))
        .bind("p_log2_gamma", Arg::Ptr(cx.log2_gamma.clone()));
}

/// o = parallel retention of q, k, v.
pub(crate) fn parallel(
    cx: &Ctx<'_>,
    s: &RetentionShape,
    q: Region,
    k: Region,
    v: Region,
    o: Region,
) -> Result<()> {
    let spec = KernelSpec::parallel_default(
        s.dk as u32,
        s.dv as u32,
        gamma_set(cx.gammas),
        cx.dtype,
        cx.exec.arch(),
    );
    let size = kernel_gen::LaunchSize {
        rows: s.batch as u32,
        heads: s.heads as u32,
        tokens: s.seq_len as u32,
    };
    let g = kernel_gen::plan(&spec, size)
        .map_err(RetentionError::from)?
        .geometry;
    let mut l = launch_for(spec, &g);
    cx.exec.zero(&o, cx.stream)?;
    l.bind("p_q", Arg::Ptr(q))
        .bind("p_k", Arg::Ptr(k))
        .bind("p_v", Arg::Ptr(v))
        .bind("p_o", Arg::Ptr(o));
    bind_common(&mut l, cx, s.heads, s.seq_len);
    cx.exec.launch(&l, cx.stream)
}

/// The chunkwise spec for this problem, when the catalog's generator serves it.
pub(crate) fn chunkwise_spec(
    gammas: &Gammas,
    s: &RetentionShape,
    chunk: usize,
    dtype: Dtype,
    arch: Arch,
    op: KernelOp,
) -> Option<KernelSpec> {
    let spec = KernelSpec {
        op,
        ..KernelSpec::chunkwise(
            s.dk as u32,
            s.dv as u32,
            u32::try_from(chunk).ok()?,
            gamma_set(gammas),
            dtype,
            arch,
        )
    };
    spec.validate().ok().map(|()| spec)
}

/// The sequence tensors of one chunkwise call.
pub(crate) struct SeqArgs {
    pub q: Region,
    pub k: Region,
    pub v: Region,
    pub o: Region,
    pub h0: Option<Region>,
    pub ht: Region,
}

impl SeqArgs {
    fn bind(&self, l: &mut KernelLaunch) {
        l.bind("p_q", Arg::Ptr(self.q.clone()))
            .bind("p_k", Arg::Ptr(self.k.clone()))
            .bind("p_v", Arg::Ptr(self.v.clone()))
            .bind("p_o", Arg::Ptr(self.o.clone()))
            .bind("p_h0", self.h0.clone().map_or(Arg::Null, Arg::Ptr))
            .bind("p_ht", Arg::Ptr(self.ht.clone()));
    }
}

/// One-pass (or, when `two_phase` and the plan prefers it, two-phase) chunkwise forward of
/// `spec`; the two-phase workspace comes from `memory`.
pub(crate) fn chunkwise(
    cx: &Ctx<'_>,
    spec: KernelSpec,
    s: &RetentionShape,
    a: &SeqArgs,
    two_phase: bool,
    memory: &MemoryPool,
) -> Result<()> {
    cx.exec.zero(&a.o, cx.stream)?;
    if two_phase && let Some(plan) = crate::gpu_chunkwise::two_phase(&spec, s, cx.exec.arch()) {
        return chunkwise_two_phase(cx, &plan, s, a, memory);
    }
    let g = launch_geometry(&spec, s.batch as u32, s.heads as u32).map_err(RetentionError::from)?;
    let mut l = launch_for(spec, &g);
    a.bind(&mut l);
    bind_common(&mut l, cx, s.heads, s.seq_len);
    cx.exec.launch(&l, cx.stream)
}

fn chunkwise_two_phase(
    cx: &Ctx<'_>,
    plan: &kernel_gen::TwoPhasePlan,
    s: &RetentionShape,
    a: &SeqArgs,
    memory: &MemoryPool,
) -> Result<()> {
    let Some(g1) = plan.phase1 else {
        return Err(RetentionError::KernelLoad(
            "a two-phase plan without phase 1".into(),
        ));
    };
    let device = cx.stream.device();
    let mut ws = crate::tensor::DeviceTensor::zeros(
        memory,
        device,
        crate::DeviceDtype::F32,
        &[plan.workspace_elems.max(1)],
    )?;
    let ws = Region::of_mut(&mut ws);
    let mut l1 = launch_for(plan.states_spec, &g1);
    a.bind(&mut l1);
    bind_common(&mut l1, cx, s.heads, s.seq_len);
    l1.bind("p_states", Arg::Ptr(ws.clone()))
        .bind("p_segment_len", Arg::U32(plan.segment_len));
    cx.exec.launch(&l1, cx.stream)?;
    let mut l2 = launch_for(plan.segmented_spec, &plan.phase2);
    a.bind(&mut l2);
    bind_common(&mut l2, cx, s.heads, s.seq_len);
    l2.bind("p_states", Arg::Ptr(ws))
        .bind("p_segment_len", Arg::U32(plan.segment_len));
    cx.exec.launch(&l2, cx.stream)
}

/// The varlen chunkwise kernel over a packed batch with device `cu_seqlens` (u32, N+1).
pub(crate) fn chunkwise_varlen(
    cx: &Ctx<'_>,
    spec: KernelSpec,
    heads: usize,
    seqs: usize,
    a: &SeqArgs,
    cu_seqlens: Region,
) -> Result<()> {
    cx.exec.zero(&a.o, cx.stream)?;
    let g = launch_geometry(&spec, seqs as u32, heads as u32).map_err(RetentionError::from)?;
    let mut l = launch_for(spec, &g);
    a.bind(&mut l);
    bind_common(&mut l, cx, heads, 0);
    l.bind("p_cu_seqlens", Arg::Ptr(cu_seqlens));
    cx.exec.launch(&l, cx.stream)
}

/// One decode step: rows n of q, k `[N,H,K]`, v `[N,H,V]` advance state rows `slots[n]` of
/// `state` (`[S,H,K,V]` f32) in place and write o `[N,H,V]`.
pub(crate) struct DecodeArgs {
    pub q: Region,
    pub k: Region,
    pub v: Region,
    pub state: Region,
    pub slots: Region,
    pub o: Region,
}

/// The decode kernel for N rows.
pub(crate) fn decode(
    cx: &Ctx<'_>,
    heads: usize,
    (dk, dv): (usize, usize),
    n: usize,
    a: DecodeArgs,
) -> Result<()> {
    let spec = KernelSpec::decode(
        dk as u32,
        dv as u32,
        gamma_set(cx.gammas),
        cx.dtype,
        cx.exec.arch(),
    );
    let g = launch_geometry(&spec, n as u32, heads as u32).map_err(RetentionError::from)?;
    let mut l = launch_for(spec, &g);
    l.bind("p_q", Arg::Ptr(a.q))
        .bind("p_k", Arg::Ptr(a.k))
        .bind("p_v", Arg::Ptr(a.v))
        .bind("p_state", Arg::Ptr(a.state))
        .bind("p_slots", Arg::Ptr(a.slots))
        .bind("p_o", Arg::Ptr(a.o))
        .bind("p_n", Arg::U32(n as u32));
    bind_common(&mut l, cx, heads, 0);
    cx.exec.launch(&l, cx.stream)
}

/// The recurrent form as one decode launch per (sequence, token): sequence i covers tokens
/// `starts[i]..starts[i]+lens[i]` of the packed rows (`[rows, H, ·]` regions) and state row i of
/// `ht`, which holds H0 on entry. `zero_slot` is a device u32 holding 0.
pub(crate) fn recurrent(
    cx: &Ctx<'_>,
    (heads, dk, dv): (usize, usize, usize),
    seqs: &[(usize, usize)],
    a: &SeqArgs,
    zero_slot: &Region,
) -> Result<()> {
    let el = crate::DeviceDtype::from(cx.dtype).size();
    let (qrow, vrow, srow) = (heads * dk * el, heads * dv * el, heads * dk * dv * 4);
    for (i, &(start, len)) in seqs.iter().enumerate() {
        for t in start..start + len {
            let args = DecodeArgs {
                q: a.q.sub(t * qrow, qrow)?,
                k: a.k.sub(t * qrow, qrow)?,
                v: a.v.sub(t * vrow, vrow)?,
                state: a.ht.sub(i * srow, srow)?,
                slots: zero_slot.clone(),
                o: a.o.sub(t * vrow, vrow)?,
            };
            decode(cx, heads, (dk, dv), 1, args)?;
        }
    }
    Ok(())
}
