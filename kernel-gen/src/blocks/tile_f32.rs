//! f32 tiles of a token-major tensor in shared memory, for the FMA paths: B rows (tokens) of
//! one head staged either transposed (`[cols][B]`, inner-major: what
//! [`super::fma::accumulate_shared`] reads as its A or B operand over the columns) or as rows
//! (`[B][cols]`, inner-major over the tokens). Every round of the [`Stager`] runs with masked
//! loads, so rows at or past the tile's length and columns at or past the tensor's row hold
//! exact zeros and every staged byte is written.

use retention_core::Dtype;

use super::global::GlobalRows;
use super::staging::Stager;
use crate::dsl::{Address, KernelBuilder, Operand, Reg, Space};

/// How a staged tile lies in shared memory.
#[derive(Debug, Clone, Copy)]
pub enum TileLayout {
    /// `[cols][rows]`: element (row, col) at `4·(col·rows + row)`.
    Transposed {
        /// Rows of the tile (B).
        rows: u32,
    },
    /// `[rows][cols]`: element (row, col) at `4·(row·cols + col)`.
    Rows {
        /// Columns of the tile.
        cols: u32,
    },
}

/// Stage the tile of `rows` (its first `rows.len` tokens; `rows.src` points at token 0,
/// head 0, column 0) into shared memory at `dst`, widened to f32 and multiplied by `scale`
/// when given. The tile's columns are tensor columns `col0..` (`None`: from 0); the tensor's
/// rows hold `dim` elements (`rows.row_bytes` bytes), columns past them stage zeros.
#[allow(clippy::too_many_arguments)]
pub fn stage_tile_f32(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    stager: &Stager,
    rows: &GlobalRows,
    (col0, dim): (Option<Reg>, u32),
    dst: Reg,
    layout: TileLayout,
    scale: Option<Reg>,
) {
    let es = dtype.size_bytes() as u32;
    let tok = kb.add(rows.tok_c, stager.row);
    let th = kb.mad_lo(tok, rows.heads, rows.h);
    let col = match col0 {
        Some(c0) => kb.add(stager.col, c0),
        None => stager.col,
    };
    let col_bytes = kb.mul_wide(col, es);
    let off = kb.mad_wide(th, rows.row_bytes, col_bytes);
    let first = kb.add(rows.src, off);
    let round_step = kb.mul_wide(rows.heads, stager.rows_per_round * rows.row_bytes);
    let (elem, step, elem_stride) = match layout {
        TileLayout::Transposed { rows: b } => (
            kb.mad_lo(stager.col, b, stager.row),
            stager.rows_per_round * 4,
            Some(b * 4),
        ),
        TileLayout::Rows { cols } => (
            kb.mad_lo(stager.row, cols, stager.col),
            stager.rows_per_round * cols * 4,
            None,
        ),
    };
    let sh = kb.mad_lo(elem, 4u32, dst);
    stager.stage_f32(
        kb,
        dtype,
        (first, round_step),
        rows.len,
        (sh, step),
        Some((col, dim)),
        |kb, xs, sh| {
            let xs: Vec<Reg> = match scale {
                Some(s) => xs.into_iter().map(|x| kb.mul(x, s)).collect(),
                None => xs,
            };
            if let Some(stride) = elem_stride {
                for (e, &x) in xs.iter().enumerate() {
                    let at = Address::reg(sh, i64::from(e as u32 * stride));
                    kb.st(Space::Shared, at, x);
                }
            } else {
                let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
                kb.st_vec(Space::Shared, crate::dsl::Ty::F32, Address::reg(sh, 0), &xs);
            }
        },
    );
}
