//! The softmax-attention KV-cache decode step on device tensors (the Transformer baseline a
//! RetNet step is compared with, ARCHITECTURE §5), and the strided row moves a model step
//! makes around it: [`Retention::copy_rows_into`], [`Retention::kv_append_into`] and
//! [`Retention::attention_decode_into`]. On `Device::Cpu` the CPU kernels run on the tensors'
//! memory (the attention through `retention_kernels::cpu::attention_decode`, which returns
//! its output: one copy into `o`); on GPU-like devices kernel-gen's `copy_rows` and attention
//! split/combine kernels run on the caller's stream, with no host copy and no allocation —
//! the split pass's f32 partials live in a workspace the caller sizes with
//! [`Retention::attention_workspace_floats`] and owns.

use half::{bf16, f16};
use kernel_gen::{KernelSpec, attention_decode_plan, launch_geometry};
use retention_core::{Dtype, Result, RetentionError};
use retention_kernels::cpu::{self, CpuElement};

use crate::host_view;
use crate::kernel_launch::{Arg, KernelLaunch, Region};
use crate::retention::Retention;
use crate::retention_device::float_dtype;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

/// A strided copy of `rows` rows of `width` elements: row r of src starts at element
/// `src.1 + r·src.0`, of dst at `dst.1 + r·dst.0` (strides and offsets in elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowCopy {
    /// Rows copied.
    pub rows: usize,
    /// Elements per row.
    pub width: usize,
    /// (stride, offset) in src.
    pub src: (usize, usize),
    /// (stride, offset) in dst.
    pub dst: (usize, usize),
}

impl RowCopy {
    /// One past the last element touched with (stride, offset) `at`; `None` on overflow.
    fn end(&self, (stride, offset): (usize, usize)) -> Option<usize> {
        if self.rows == 0 || self.width == 0 {
            return Some(0);
        }
        (self.rows - 1)
            .checked_mul(stride)?
            .checked_add(offset)?
            .checked_add(self.width)
    }
}

impl Retention {
    /// `dst[r·ds + do + c] = src[r·ss + so + c]` for r < rows, c < width (see [`RowCopy`]),
    /// bit-exact, src and dst of one float dtype (any shapes: they are read as flat), on
    /// `stream` (this device's, or its default when `None`).
    ///
    /// # Errors
    /// A tensor or stream of another device; dtypes differing or not float; a row past the
    /// end of either tensor (naming it); on a GPU-like device 2³² elements or more.
    pub fn copy_rows_into(
        &self,
        src: &DeviceTensor,
        dst: &mut DeviceTensor,
        copy: RowCopy,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let dtype = float_dtype(src, "src")?;
        src.expect("src", self.device(), src.dtype(), src.shape())?;
        dst.expect("dst", self.device(), src.dtype(), dst.shape())?;
        for (name, t, at) in [("src", src, copy.src), ("dst", &*dst, copy.dst)] {
            if copy.end(at).is_none_or(|end| end > t.len()) {
                return Err(RetentionError::ShapeMismatch {
                    tensor: name.into(),
                    expected: format!(
                        "{} rows of {} at stride {}, offset {}",
                        copy.rows, copy.width, at.0, at.1
                    ),
                    got: format!("{} elements", t.len()),
                });
            }
        }
        let stream = self.stream_for(stream)?;
        let total = copy.rows * copy.width;
        if total == 0 {
            return Ok(());
        }
        let Some((exec, _)) = self.gpu() else {
            return match dtype {
                Dtype::F32 => cpu_copy::<f32>(src, dst, copy),
                Dtype::F16 => cpu_copy::<f16>(src, dst, copy),
                Dtype::Bf16 => cpu_copy::<bf16>(src, dst, copy),
            };
        };
        let u = |what: &str, x: usize| {
            u32::try_from(x).map_err(|_| RetentionError::Unsupported {
                what: format!("copy_rows {what}"),
                value: x.to_string(),
                reason: "at most 2^32 - 1".into(),
            })
        };
        let n = u("elements", total)?;
        let spec = KernelSpec::copy_rows(dtype, exec.arch());
        let g = launch_geometry(&spec, n, 1).map_err(RetentionError::from)?;
        let mut l = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
        l.bind("p_src", Arg::Ptr(Region::of(src)))
            .bind("p_dst", Arg::Ptr(Region::of_mut(dst)))
            .bind("p_n", Arg::U32(n))
            .bind("p_width", Arg::U32(u("width", copy.width)?))
            .bind("p_src_stride", Arg::U32(u("stride", copy.src.0)?))
            .bind("p_src_offset", Arg::U32(u("offset", copy.src.1)?))
            .bind("p_dst_stride", Arg::U32(u("stride", copy.dst.0)?))
            .bind("p_dst_offset", Arg::U32(u("offset", copy.dst.1)?));
        exec.launch(&l, &stream)
    }

    /// Write `rows` `[N, H, D]` (one token's keys or values) into a head-major cache
    /// `[N, H, L, D]` at position `pos` < L, on `stream` as [`Retention::copy_rows_into`].
    ///
    /// # Errors
    /// Shapes that disagree (naming the axis) or `pos` ≥ L; as
    /// [`Retention::copy_rows_into`].
    pub fn kv_append_into(
        &self,
        rows: &DeviceTensor,
        cache: &mut DeviceTensor,
        pos: usize,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let (&[n, h, d], &[cn, ch, l, cd]) = (rows.shape(), cache.shape()) else {
            return Err(RetentionError::ShapeMismatch {
                tensor: "kv cache".into(),
                expected: "rows [N, H, D] and cache [N, H, L, D]".into(),
                got: format!("{:?} and {:?}", rows.shape(), cache.shape()),
            });
        };
        if (n, h, d) != (cn, ch, cd) || pos >= l {
            return Err(RetentionError::ShapeMismatch {
                tensor: "kv cache".into(),
                expected: format!("[N={n}, H={h}, L > {pos}, D={d}]"),
                got: format!("{:?}", cache.shape()),
            });
        }
        let copy = RowCopy {
            rows: n * h,
            width: d,
            src: (d, 0),
            dst: (l * d, pos * d),
        };
        self.copy_rows_into(rows, cache, copy, stream)
    }

    /// f32 elements of the workspace [`Retention::attention_decode_into`] needs for `rows`
    /// queries of `heads` heads over a `context`-token cache with head dims `(dk, dv)`, in
    /// `dtype` (0 on the CPU device and when the context is not split).
    ///
    /// # Errors
    /// Head dims or sizes the attention kernels do not serve.
    pub fn attention_workspace_floats(
        &self,
        dtype: Dtype,
        (rows, heads, context): (usize, usize, usize),
        (dk, dv): (usize, usize),
    ) -> Result<usize> {
        let Some((exec, _)) = self.gpu() else {
            return Ok(0);
        };
        let spec = KernelSpec::attention_decode(dk as u32, dv as u32, dtype, exec.arch());
        let plan = attention_decode_plan(&spec, rows as u32, heads as u32, context as u32)?;
        Ok(plan.partial_floats as usize)
    }

    /// o `[N, H, V]` = Σ_t softmax_t(s · q·k_t) v_t over the whole cache, q `[N, H, K]`,
    /// k_cache `[N, H, L, K]`, v_cache `[N, H, L, V]` (head-major), one float dtype, scale s
    /// (K^(−1/2) when `None`), f32 math; `workspace` an f32 tensor of at least
    /// [`Retention::attention_workspace_floats`] elements (may be `None` when that is 0). On
    /// `stream` as [`Retention::copy_rows_into`].
    ///
    /// # Errors
    /// Shapes that disagree (naming the tensor); a head geometry the kernels do not serve; a
    /// missing or short workspace; devices and dtypes as the other ops.
    pub fn attention_decode_into(
        &self,
        (q, k_cache, v_cache): (&DeviceTensor, &DeviceTensor, &DeviceTensor),
        scale: Option<f64>,
        o: &mut DeviceTensor,
        workspace: Option<&mut DeviceTensor>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        let dtype = float_dtype(q, "q")?;
        let (&[n, h, dk], &[.., l, _], &[.., dv]) = (q.shape(), k_cache.shape(), v_cache.shape())
        else {
            return Err(RetentionError::ShapeMismatch {
                tensor: "q".into(),
                expected: "rank 3 [N, H, K]".into(),
                got: format!("{:?}", q.shape()),
            });
        };
        let dt = q.dtype();
        q.expect("q", self.device(), dt, q.shape())?;
        k_cache.expect("k_cache", self.device(), dt, &[n, h, l, dk])?;
        v_cache.expect("v_cache", self.device(), dt, &[n, h, l, dv])?;
        o.expect("o", self.device(), dt, &[n, h, dv])?;
        let stream = self.stream_for(stream)?;
        let Some((exec, _)) = self.gpu() else {
            return match dtype {
                Dtype::F32 => cpu_attention::<f32>((q, k_cache, v_cache), scale, o),
                Dtype::F16 => cpu_attention::<f16>((q, k_cache, v_cache), scale, o),
                Dtype::Bf16 => cpu_attention::<bf16>((q, k_cache, v_cache), scale, o),
            };
        };
        let s = scale.unwrap_or((dk as f64).powf(-0.5));
        if !(s.is_finite()) {
            return Err(RetentionError::Unsupported {
                what: "attention scale".into(),
                value: s.to_string(),
                reason: "must be finite".into(),
            });
        }
        let spec = KernelSpec::attention_decode(dk as u32, dv as u32, dtype, exec.arch());
        let plan = attention_decode_plan(&spec, n as u32, h as u32, l as u32)?;
        let need = plan.partial_floats as usize;
        let ws = match workspace {
            Some(w) if need > 0 => {
                w.expect("workspace", self.device(), DeviceDtype::F32, w.shape())?;
                if w.len() < need {
                    return Err(short_workspace(need, w.len()));
                }
                Some(w)
            }
            None if need > 0 => return Err(short_workspace(need, 0)),
            _ => None,
        };
        let g = plan.split;
        let mut split = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
        split
            .bind("p_q", Arg::Ptr(Region::of(q)))
            .bind("p_k_cache", Arg::Ptr(Region::of(k_cache)))
            .bind("p_v_cache", Arg::Ptr(Region::of(v_cache)))
            .bind("p_o", Arg::Ptr(Region::of_mut(o)))
            .bind("p_context", Arg::U32(l as u32))
            .bind("p_split_len", Arg::U32(plan.split_len))
            .bind("p_scale", Arg::F32(s as f32));
        let Some(ws) = ws else {
            split.bind("p_partial", Arg::Null);
            return exec.launch(&split, &stream);
        };
        split.bind("p_partial", Arg::Ptr(Region::of_mut(ws)));
        exec.launch(&split, &stream)?;
        let g = plan.combine.unwrap_or(plan.split);
        let spec = spec.attention_combine();
        let mut combine = KernelLaunch::new(spec, g.grid, g.block, g.dynamic_smem_bytes);
        combine
            .bind("p_partial", Arg::Ptr(Region::of(ws)))
            .bind("p_o", Arg::Ptr(Region::of_mut(o)))
            .bind("p_splits", Arg::U32(plan.splits));
        exec.launch(&combine, &stream)
    }
}

fn short_workspace(need: usize, got: usize) -> RetentionError {
    RetentionError::ShapeMismatch {
        tensor: "workspace".into(),
        expected: format!("at least {need} f32 (Retention::attention_workspace_floats)"),
        got: format!("{got} elements"),
    }
}

fn cpu_copy<T: CpuElement>(src: &DeviceTensor, dst: &mut DeviceTensor, c: RowCopy) -> Result<()> {
    host_view::check_disjoint(&[("dst", dst)], &[("src", src)])?;
    let src = host_view::view::<T>(src, "src")?;
    let mut dst = host_view::view_mut::<T>(dst, "dst")?;
    let (s, d) = (src.data(), dst.data_mut());
    for r in 0..c.rows {
        let (a, b) = (c.src.1 + r * c.src.0, c.dst.1 + r * c.dst.0);
        d[b..b + c.width].copy_from_slice(&s[a..a + c.width]);
    }
    Ok(())
}

fn cpu_attention<T: CpuElement>(
    (q, k, v): (&DeviceTensor, &DeviceTensor, &DeviceTensor),
    scale: Option<f64>,
    o: &mut DeviceTensor,
) -> Result<()> {
    let out = cpu::attention_decode(
        &host_view::read::<T>(q)?,
        &host_view::read::<T>(k)?,
        &host_view::read::<T>(v)?,
        scale,
    )?;
    host_view::write(o, &out)
}
