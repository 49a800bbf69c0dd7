//! [`Retention::chunkwise_for_training`] and [`Retention::chunkwise_backward_saved`] on a
//! GPU-like device (ARCHITECTURE §7). The forward is the device chunkwise forward (o, H_T);
//! the f32 state entering every chunk comes from two more launches: phase 1 of the two-phase
//! forward with one chunk per segment (`chunk_states`, L = C: each full chunk's local end
//! state from zero, into a pool-block workspace) and the `boundary_states` fold
//! E_i = γ^C E_{i−1} + Local_{i−1} from E_0 = H0. C must be one the two-phase forward serves
//! (32 or 64); any other chunk is a typed refusal (the recomputing `chunkwise_backward`
//! serves every chunk).
//!
//! The GPU backward recomputes the states on chip, so `chunkwise_backward_saved` checks the
//! saved states' shape, takes each row's H0 from its chunk-0 state, and runs the GPU
//! chunkwise backward.

use kernel_gen::{KernelOp, KernelSpec, launch_geometry, two_phase_plan};
use retention_core::{HostTensor, Result, RetentionError, RetentionShape};
use retention_kernels::cpu::CpuElement;

use crate::device_launch::{Ctx, bind_common, gamma_set};
use crate::kernel_launch::{Arg, KernelLaunch, Region};
use crate::retention::{Retention, shape_of};
use crate::retention_training::{Gradients, TrainingForward};
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

impl Retention {
    /// The GPU form of [`Retention::chunkwise_for_training`]: upload, forward, states,
    /// download.
    pub(crate) fn chunkwise_for_training_via_device<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        chunk: usize,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<TrainingForward<T>> {
        if chunk == 0 {
            return Err(RetentionError::ZeroChunk);
        }
        let s = shape_of(q, k, v, self.params())?;
        // Refused before any upload when no state kernel serves the chunk (the plan's check).
        if let Some((exec, _)) = self.gpu() {
            let c = u32::try_from(chunk).unwrap_or(u32::MAX);
            let gammas = gamma_set(&self.params().gammas);
            let states =
                KernelSpec::boundary_states(s.dk as u32, s.dv as u32, c, gammas, exec.arch());
            if let Err(e) = states.validate() {
                return Err(RetentionError::Unsupported {
                    what: "chunk of chunkwise_for_training on device".into(),
                    value: chunk.to_string(),
                    reason: format!(
                        "{e}; chunkwise_backward (which recomputes the states) serves every chunk"
                    ),
                });
            }
        }
        let stream = Stream::default_for(self.device())?;
        let mem = self.memory();
        let up = |t: &HostTensor<T>| DeviceTensor::upload(mem, t, &stream);
        let (dq, dk, dv) = (up(q)?, up(k)?, up(v)?);
        let dh0 = h0
            .map(|t| DeviceTensor::upload(mem, t, &stream))
            .transpose()?;
        let zeros = |dtype, shape: &[usize]| DeviceTensor::zeros(mem, self.device(), dtype, shape);
        let mut o = zeros(DeviceDtype::of::<T>()?, &s.vo_shape())?;
        let mut ht = zeros(DeviceDtype::F32, &s.state_shape(s.batch))?;
        let qkv = (&dq, &dk, &dv);
        self.chunkwise_into(qkv, dh0.as_ref(), (&mut o, &mut ht), chunk, Some(&stream))?;
        let per_row = s.seq_len.div_ceil(chunk);
        let mut states = zeros(DeviceDtype::F32, &s.state_shape(s.batch * per_row))?;
        self.boundary_states((&dk, &dv), dh0.as_ref(), &mut states, (&s, chunk), &stream)?;
        Ok(TrainingForward {
            o: o.download(&stream)?,
            ht: ht.download(&stream)?,
            states: states.download(&stream)?,
            chunk,
        })
    }

    /// Phase 1 at L = C, then the fold, writing `states` `[B·⌈T/C⌉, H, K, V]`.
    fn boundary_states(
        &self,
        (k, v): (&DeviceTensor, &DeviceTensor),
        h0: Option<&DeviceTensor>,
        states: &mut DeviceTensor,
        (s, chunk): (&RetentionShape, usize),
        stream: &Stream,
    ) -> Result<()> {
        let Some((exec, log2)) = self.gpu() else {
            return Err(RetentionError::KernelLoad(
                "chunk states need a launch executor".into(),
            ));
        };
        let dtype = k
            .dtype()
            .float()
            .ok_or_else(|| RetentionError::KernelLoad("k is not a float tensor".into()))?;
        let cx = self.ctx(exec, stream, &log2, dtype, s.dk)?;
        let (dk, dv, c) = (s.dk as u32, s.dv as u32, chunk as u32);
        let (rows, heads, t) = (s.batch as u32, s.heads as u32, s.seq_len as u32);
        let gammas = gamma_set(cx.gammas);
        let phase1 = KernelSpec::chunkwise(dk, dv, c, gammas, dtype, exec.arch())
            .with_op(KernelOp::ChunkStates);
        let plan = two_phase_plan(&phase1, rows, heads, t, c).map_err(RetentionError::from)?;
        let mut ws = DeviceTensor::zeros(
            self.memory(),
            self.device(),
            DeviceDtype::F32,
            &[plan.workspace_elems.max(1)],
        )?;
        if let Some(g1) = plan.phase1 {
            let mut l =
                KernelLaunch::new(plan.states_spec, g1.grid, g1.block, g1.dynamic_smem_bytes);
            l.bind("p_k", Arg::Ptr(Region::of(k)))
                .bind("p_v", Arg::Ptr(Region::of(v)))
                .bind("p_states", Arg::Ptr(Region::of_mut(&mut ws)))
                .bind("p_segment_len", Arg::U32(c));
            bind_common(&mut l, &cx, s.heads, s.seq_len);
            exec.launch(&l, stream)?;
        }
        fold(&cx, (&ws, h0, states), (s, c))
    }

    /// The GPU form of [`Retention::chunkwise_backward_saved`]: H0 from each row's chunk-0
    /// state, then the recomputing GPU backward.
    pub(crate) fn chunkwise_backward_saved_via_device<T: CpuElement>(
        &self,
        qkv: (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        saved: &TrainingForward<T>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        let s = shape_of(qkv.0, qkv.1, qkv.2, self.params())?;
        if saved.chunk == 0 {
            return Err(RetentionError::ZeroChunk);
        }
        let per_row = s.seq_len.div_ceil(saved.chunk);
        let want = s.state_shape(s.batch * per_row);
        if saved.states.shape() != want {
            return Err(RetentionError::ShapeMismatch {
                tensor: "saved states".into(),
                expected: format!("{want:?} (B·⌈T/C⌉, H, K, V)"),
                got: format!("{:?}", saved.states.shape()),
            });
        }
        let per_state = s.heads * s.dk * s.dv;
        let h0: Vec<f32> = (0..s.batch)
            .flat_map(|b| &saved.states.data()[b * per_row * per_state..][..per_state])
            .copied()
            .collect();
        let h0 = HostTensor::new(s.state_shape(s.batch).to_vec(), h0)?;
        let at = (None, saved.chunk);
        self.chunkwise_backward_via_device(qkv, at, Some(&h0), d_o, d_ht)
    }
}

/// The `boundary_states` launch: E from H0 (or 0) and phase 1's local states `ws`.
fn fold(
    cx: &Ctx<'_>,
    (ws, h0, states): (&DeviceTensor, Option<&DeviceTensor>, &mut DeviceTensor),
    (s, c): (&RetentionShape, u32),
) -> Result<()> {
    let spec = KernelSpec::boundary_states(
        s.dk as u32,
        s.dv as u32,
        c,
        gamma_set(cx.gammas),
        cx.exec.arch(),
    );
    let g = launch_geometry(&spec, s.batch as u32, s.heads as u32).map_err(RetentionError::from)?;
    let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
    l.bind("p_local", Arg::Ptr(Region::of(ws)))
        .bind("p_h0", h0.map_or(Arg::Null, |t| Arg::Ptr(Region::of(t))))
        .bind("p_states", Arg::Ptr(Region::of_mut(states)));
    bind_common(&mut l, cx, s.heads, s.seq_len);
    cx.exec.launch(&l, cx.stream)
}
