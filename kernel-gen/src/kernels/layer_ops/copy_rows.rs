//! A strided copy of rows, `dst[r·ds + do + c] = src[r·ss + so + c]` for r < rows, c < width
//! (element units), bit-exact in the spec's dtype, one thread per element: the moves a model
//! step makes between its fused projections, the parts it feeds on (q, k, v, g), and a KV
//! cache's row at the current position (see [`super`]).
//!
//! | # | name            | type   | meaning                                      |
//! |---|-----------------|--------|----------------------------------------------|
//! | 0 | `p_src`         | `.u64` | src (read)                                   |
//! | 1 | `p_dst`         | `.u64` | dst (written)                                |
//! | 2 | `p_n`           | `.u32` | rows · width, elements copied                |
//! | 3 | `p_width`       | `.u32` | width ≥ 1                                    |
//! | 4 | `p_src_stride`  | `.u32` | ss, elements between src rows                |
//! | 5 | `p_src_offset`  | `.u32` | so, src element of row 0, column 0          |
//! | 6 | `p_dst_stride`  | `.u32` | ds                                           |
//! | 7 | `p_dst_offset`  | `.u32` | do                                           |
//!
//! Traffic: each copied element read once and written once; consecutive threads touch
//! consecutive columns, so accesses coalesce along a row.

use super::{COPY_ROWS_PARAMS, open_kernel};
use crate::GenError;
use crate::blocks::global::elem_ty;
use crate::dsl::{Address, Axis, Cmp, Space, Sreg, Ty};
use crate::spec::KernelSpec;

/// Emit the kernel for a validated `spec`.
pub(super) fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    let scalars: Vec<_> = COPY_ROWS_PARAMS[2..]
        .iter()
        .map(|&n| (n, Ty::U32))
        .collect();
    let formula = "dst[r*ds + do + c] = src[r*ss + so + c], r < n / width, c < width";
    let (mut kb, params) = open_kernel(
        spec,
        ("strided row copy", formula),
        COPY_ROWS_PARAMS,
        &scalars,
    );
    let [p_src, p_dst, p_n, p_width, p_ss, p_so, p_ds, p_do] = &params;
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let cta = kb.sreg(Sreg::Ctaid(Axis::X));
    let i = kb.mad_lo(cta, spec.tile.threads, t);
    let n = kb.ld_param(p_n);
    let past = kb.setp(Cmp::Ge, i, n);
    let done = kb.label();
    kb.bra_if(past, false, done);
    let width = kb.ld_param(p_width);
    let r = kb.div(i, width);
    let c = kb.rem(i, width);
    let es = spec.dtype.size_bytes() as u32;
    let ty = elem_ty(spec.dtype);
    kb.comment("element index r * stride + offset + c, in u64 bytes");
    let at = |kb: &mut crate::dsl::KernelBuilder, p_ptr, p_stride, p_offset| {
        let stride = kb.ld_param(p_stride);
        let offset = kb.ld_param(p_offset);
        let row = kb.mul_wide(r, stride);
        let off = kb.add(offset, c);
        let col = kb.cvt(Ty::U64, off, None);
        let elem = kb.add(row, col);
        let bytes = kb.mul_lo(elem, u64::from(es));
        let base = kb.global_ptr(p_ptr);
        kb.add(base, bytes)
    };
    let src_at = at(&mut kb, p_src, p_ss, p_so);
    let dst_at = at(&mut kb, p_dst, p_ds, p_do);
    let x = kb.ld(Space::Global, ty, Address::reg(src_at, 0));
    kb.st(Space::Global, Address::reg(dst_at, 0), x);
    kb.place(done);
    kb.ret();
    kb.finish()
}
