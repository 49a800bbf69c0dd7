//! The candle `CustomOp3`s: chunkwise and parallel retention, forward on candle's CPU
//! storage and backward through candle's `bwd` hook (ARCHITECTURE §1 for the math, §7 for
//! the backward). Each op holds the facade's CPU [`Retention`] (decays and scale).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use half::{bf16, f16};
use retention::{Gradients, HostTensor, Retention};

use crate::storage::{Elem, check_dtype, err, host, host_of, tensor_of};

/// Chunkwise retention with chunk `chunk` (no initial state): q, k, v → o.
#[derive(Debug, Clone)]
pub struct ChunkwiseRetention {
    /// The decays and scale, on the CPU.
    pub retention: Arc<Retention>,
    /// The chunk size (≥ 1; any value gives the same function).
    pub chunk: usize,
}

/// Parallel retention: q, k, v → o.
#[derive(Debug, Clone)]
pub struct ParallelRetention {
    /// The decays and scale, on the CPU.
    pub retention: Arc<Retention>,
}

/// Which form an op runs; the forward and backward of each in one place.
trait Form {
    fn forward<T: Elem>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> retention::Result<HostTensor<T>>;
    fn backward<T: Elem>(
        &self,
        qkv: (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        d_o: &HostTensor<T>,
    ) -> retention::Result<Gradients<T>>;
}

impl Form for ChunkwiseRetention {
    fn forward<T: Elem>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> retention::Result<HostTensor<T>> {
        Ok(self.retention.chunkwise(q, k, v, self.chunk, None)?.0)
    }
    fn backward<T: Elem>(
        &self,
        qkv: (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        d_o: &HostTensor<T>,
    ) -> retention::Result<Gradients<T>> {
        self.retention
            .chunkwise_backward(qkv, self.chunk, None, d_o, None)
    }
}

impl Form for ParallelRetention {
    fn forward<T: Elem>(
        &self,
        q: &HostTensor<T>,
        k: &HostTensor<T>,
        v: &HostTensor<T>,
    ) -> retention::Result<HostTensor<T>> {
        self.retention.parallel(q, k, v)
    }
    fn backward<T: Elem>(
        &self,
        qkv: (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        d_o: &HostTensor<T>,
    ) -> retention::Result<Gradients<T>> {
        self.retention.parallel_backward(qkv, d_o)
    }
}

/// The forward on CPU storage at element type `T`.
fn cpu_forward<T: Elem, F: Form>(
    f: &F,
    [(s1, l1), (s2, l2), (s3, l3)]: [(&CpuStorage, &Layout); 3],
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (q, k, v) = (
        host::<T>(s1, l1, "q")?,
        host::<T>(s2, l2, "k")?,
        host::<T>(s3, l3, "v")?,
    );
    let o = f.forward(&q, &k, &v).map_err(err)?;
    let shape = Shape::from_dims(o.shape());
    Ok((T::to_cpu_storage_owned(o.into_data()), shape))
}

/// The backward at element type `T`: dq, dk, dv as candle tensors.
fn backward_typed<T: Elem, F: Form>(
    f: &F,
    [q, k, v]: [&Tensor; 3],
    grad: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (hq, hk, hv) = (host_of::<T>(q)?, host_of::<T>(k)?, host_of::<T>(v)?);
    let d_o = host_of::<T>(grad)?;
    let g = f.backward((&hq, &hk, &hv), &d_o).map_err(err)?;
    Ok((
        Some(tensor_of(g.dq, q)?),
        Some(tensor_of(g.dk, k)?),
        Some(tensor_of(g.dv, v)?),
    ))
}

/// Dispatch the forward on the storage's dtype.
fn cpu_fwd<F: Form>(
    f: &F,
    args: [(&CpuStorage, &Layout); 3],
) -> candle_core::Result<(CpuStorage, Shape)> {
    match args[0].0 {
        CpuStorage::F32(_) => cpu_forward::<f32, F>(f, args),
        CpuStorage::F16(_) => cpu_forward::<f16, F>(f, args),
        CpuStorage::BF16(_) => cpu_forward::<bf16, F>(f, args),
        other => Err(candle_core::Error::Msg(format!(
            "retention: q has dtype {:?}; f32, f16 or bf16 expected",
            candle_core::backend::BackendStorage::dtype(other)
        ))),
    }
}

/// Dispatch the backward on the dtype.
fn bwd<F: Form>(
    f: &F,
    qkv: [&Tensor; 3],
    grad: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    match check_dtype("q", qkv[0].dtype())? {
        DType::F16 => backward_typed::<f16, F>(f, qkv, grad),
        DType::BF16 => backward_typed::<bf16, F>(f, qkv, grad),
        _ => backward_typed::<f32, F>(f, qkv, grad),
    }
}

macro_rules! custom_op3 {
    ($ty:ty, $name:literal) => {
        impl CustomOp3 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                s1: &CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
                s3: &CpuStorage,
                l3: &Layout,
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                cpu_fwd(self, [(s1, l1), (s2, l2), (s3, l3)])
            }

            fn bwd(
                &self,
                q: &Tensor,
                k: &Tensor,
                v: &Tensor,
                _o: &Tensor,
                grad_o: &Tensor,
            ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
                bwd(self, [q, k, v], grad_o)
            }
        }
    };
}

custom_op3!(ChunkwiseRetention, "retention-chunkwise");
custom_op3!(ParallelRetention, "retention-parallel");

/// Checks the inputs (one float dtype) and makes them contiguous.
fn prepare(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<[Tensor; 3]> {
    let d = check_dtype("q", q.dtype())?;
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != d {
            return Err(candle_core::Error::Msg(format!(
                "retention: {name} has dtype {:?}, q has {d:?}",
                t.dtype()
            )));
        }
    }
    Ok([q.contiguous()?, k.contiguous()?, v.contiguous()?])
}

/// Chunkwise retention o `[B, T, H, V]` of q, k `[B, T, H, K]`, v `[B, T, H, V]` (candle CPU
/// tensors, f32/f16/bf16) with `retention`'s decays and scale; differentiable in q, k, v.
///
/// # Errors
/// A dtype other than f32/f16/bf16 or dtypes that differ; the library's shape, chunk and
/// decay errors (as `candle_core::Error` with the library's message); a non-CPU tensor.
pub fn chunkwise_retention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    retention: &Arc<Retention>,
    chunk: usize,
) -> candle_core::Result<Tensor> {
    let [q, k, v] = prepare(q, k, v)?;
    let op = ChunkwiseRetention {
        retention: retention.clone(),
        chunk,
    };
    q.apply_op3(&k, &v, op)
}

/// Parallel retention; as [`chunkwise_retention`].
///
/// # Errors
/// As [`chunkwise_retention`].
pub fn parallel_retention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    retention: &Arc<Retention>,
) -> candle_core::Result<Tensor> {
    let [q, k, v] = prepare(q, k, v)?;
    let op = ParallelRetention {
        retention: retention.clone(),
    };
    q.apply_op3(&k, &v, op)
}
