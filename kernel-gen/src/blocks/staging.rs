//! Staging global tiles into shared memory: per-thread vector rounds ([`Stager`], the FMA
//! paths) and `cp.async` copies into swizzled 16-bit tiles ([`stage_tile`], the tensor-core
//! paths). Rows past a partial chunk are skipped ([`Stager`]) or zero-filled ([`stage_tile`]).

use retention_core::Dtype;

use super::global::{GlobalRows, load4_f32, load4_f32_masked, row_limit};
use crate::dsl::tiles::SharedTile16;
use crate::dsl::{Address, Cmp, CpAsyncCache, KernelBuilder, Operand, Reg, Space, Ty};

/// Per-thread staging of one `[C][D]` operand from global memory: thread t moves the four
/// elements `4·(t mod D/4)..` of rows `t div (D/4) + j·rows_per_round`.
pub struct Stager {
    /// Column of the thread's four elements.
    pub col: Reg,
    /// First row.
    pub row: Reg,
    /// Rows between rounds.
    pub rows_per_round: u32,
    /// Rounds per chunk.
    rounds: u32,
}

impl Stager {
    /// Positions for `threads` threads staging a `[c][d]` operand.
    pub fn new(kb: &mut KernelBuilder, t: Reg, d: u32, c: u32, threads: u32) -> Self {
        let groups = d / 4;
        let g = kb.and(t, groups - 1);
        let col = kb.shl(g, 2u32);
        let row = kb.shr(t, groups.trailing_zeros());
        let rows_per_round = threads / groups;
        Stager {
            col,
            row,
            rows_per_round,
            rounds: c / rows_per_round,
        }
    }

    /// A runtime loop over the rounds (an unrolled one lets ptxas hoist every round's loads
    /// and run out of registers): `body(kb, global address, shared address)` runs where the
    /// round's row is below the chunk's length `len`. Global addresses start at `first` and
    /// advance `row_step` bytes a round, shared ones at `shared_first` by `shared_step`.
    pub fn run(
        &self,
        kb: &mut KernelBuilder,
        first: Reg,
        row_step: Reg,
        len: Reg,
        shared_first: Reg,
        shared_step: u32,
        body: impl FnOnce(&mut KernelBuilder, Reg, Reg),
    ) {
        self.for_each_round(
            kb,
            (first, row_step),
            (shared_first, shared_step),
            |kb, at, sh, row| {
                let inside = kb.setp(Cmp::Lt, row, len);
                kb.guarded(inside, false, |kb| body(kb, at, sh));
            },
        );
    }
}

impl Stager {
    /// A runtime loop over the rounds: `body(kb, global address, shared address, row)` with
    /// addresses from `global.0` and `shared.0`, advancing `global.1` and `shared.1` bytes and
    /// `rows_per_round` rows a round.
    fn for_each_round(
        &self,
        kb: &mut KernelBuilder,
        (first, row_step): (Reg, Reg),
        (shared_first, shared_step): (Reg, u32),
        body: impl FnOnce(&mut KernelBuilder, Reg, Reg, Reg),
    ) {
        let at = kb.mov(Ty::U64, first);
        let sh = kb.mov(Ty::U32, shared_first);
        let row = kb.mov(Ty::U32, self.row);
        let rows_per_round = self.rows_per_round;
        kb.for_range(0u32, self.rounds, 1, |kb, _| {
            body(kb, at, sh, row);
            let next = kb.add(at, row_step);
            kb.assign(at, next);
            let next = kb.add(sh, shared_step);
            kb.assign(sh, next);
            let next = kb.add(row, rows_per_round);
            kb.assign(row, next);
        });
    }

    /// Stage a chunk of a token-major tensor as f32: each round's four elements are loaded
    /// (widened to f32) and handed to `store(kb, values, shared address)`. With `tail =
    /// None`, rows at or past `len` are skipped ([`Stager::run`]); with `tail = Some((col,
    /// dim))` — a tile padded past the tensor's `dim` real columns, `col` the tensor column
    /// of the thread's first element — every round runs, and rows at or past `len` and
    /// columns at or past `dim` stage zeros (masked loads: never read), so the padded tile
    /// holds exact zeros and every staged shared byte is written.
    #[allow(clippy::too_many_arguments)]
    pub fn stage_f32(
        &self,
        kb: &mut KernelBuilder,
        dtype: Dtype,
        (first, row_step): (Reg, Reg),
        len: Reg,
        (shared_first, shared_step): (Reg, u32),
        tail: Option<(Reg, u32)>,
        store: impl FnOnce(&mut KernelBuilder, Vec<Reg>, Reg),
    ) {
        let Some((col, dim)) = tail else {
            self.run(
                kb,
                first,
                row_step,
                len,
                shared_first,
                shared_step,
                |kb, at, sh| {
                    let xs = load4_f32(kb, dtype, Address::reg(at, 0));
                    store(kb, xs, sh);
                },
            );
            return;
        };
        self.for_each_round(
            kb,
            (first, row_step),
            (shared_first, shared_step),
            |kb, at, sh, row| {
                let inside = kb.setp(Cmp::Lt, row, len);
                let limit = row_limit(kb, inside, dim);
                let xs = load4_f32_masked(kb, dtype, Address::reg(at, 0), col, limit, dim);
                store(kb, xs, sh);
            },
        );
    }
}

impl Stager {
    /// Byte offset, in a token-major tensor of `row_bytes`-byte rows, of the thread's first
    /// element of the tile whose first token is `tok` (tokens H rows apart, head `h`);
    /// `col_bytes` is the byte offset of the thread's column.
    pub fn row_offset(
        &self,
        kb: &mut KernelBuilder,
        tok: Reg,
        (heads, h): (Reg, Reg),
        row_bytes: u32,
        col_bytes: Reg,
    ) -> Reg {
        let tok_row = kb.add(tok, self.row);
        let th = kb.mad_lo(tok_row, heads, h);
        kb.mad_wide(th, row_bytes, col_bytes)
    }

    /// [`Stager::stage_f32`] into a transposed `[D][C]` f32 tile: element e of a round's four
    /// goes to `e·col_stride` bytes past the round's shared address, times `scale` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn stage_f32_transposed(
        &self,
        kb: &mut KernelBuilder,
        dtype: Dtype,
        global: (Reg, Reg),
        len: Reg,
        shared: (Reg, u32),
        tail: Option<(Reg, u32)>,
        (col_stride, scale): (u32, Option<Reg>),
    ) {
        self.stage_f32(kb, dtype, global, len, shared, tail, |kb, xs, sh| {
            for (e, &x) in xs.iter().enumerate() {
                let x = match scale {
                    Some(s) => kb.mul(x, s),
                    None => x,
                };
                let off = i64::from(e as u32 * col_stride);
                kb.st(Space::Shared, Address::reg(sh, off), x);
            }
        });
    }

    /// [`Stager::stage_f32`] into a row-major `[C][D]` f32 tile: a round's four elements
    /// go out as one `st.shared.v4`.
    pub fn stage_f32_rows(
        &self,
        kb: &mut KernelBuilder,
        dtype: Dtype,
        global: (Reg, Reg),
        len: Reg,
        shared: (Reg, u32),
        tail: Option<(Reg, u32)>,
    ) {
        self.stage_f32(kb, dtype, global, len, shared, tail, |kb, xs, sh| {
            let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
            kb.st_vec(Space::Shared, Ty::F32, Address::reg(sh, 0), &xs);
        });
    }
}

/// The real columns of a 16-bit tile padded past a tensor's rows: `limit` (a `.u32`
/// register) columns exist from the tile's first column on, in rows of `dim` elements.
#[derive(Debug, Clone, Copy)]
pub struct ColumnTail {
    /// Columns of the tile that exist in the tensor (0 when the tile starts past them).
    pub limit: Reg,
    /// The tensor's row length in elements.
    pub dim: u32,
}

impl ColumnTail {
    /// The tail of a tile whose first column is tensor column `col0` (`None`: 0).
    pub fn new(kb: &mut KernelBuilder, col0: Option<Reg>, dim: u32) -> Self {
        let limit = match col0 {
            Some(c0) => {
                let c = kb.min(c0, dim);
                kb.sub(dim, c)
            }
            None => kb.mov(Ty::U32, dim),
        };
        ColumnTail { limit, dim }
    }

    /// Bytes one access moves: the widest of 16, 8, 4 dividing a row's bytes, so every
    /// access is aligned and lies wholly inside or outside the row (even `dim` only: an odd
    /// 16-bit row is 2-byte aligned, below `cp.async`'s smallest copy).
    pub fn piece_bytes(&self) -> u32 {
        let row = self.dim * 2;
        [16, 8, 4]
            .into_iter()
            .find(|&p| row.is_multiple_of(p))
            .unwrap_or(4)
    }
}

/// Copy a `[C][cols]` chunk of a token-major tensor into a swizzled tile with `cp.async`;
/// rows at or past `len` are zero-filled (their source is row 0, read for 0 bytes).
pub fn stage_tile(
    kb: &mut KernelBuilder,
    tile: SharedTile16,
    base: Reg,
    t: Reg,
    threads: u32,
    rows: &GlobalRows,
) {
    stage_tile_masked(kb, tile, base, t, threads, rows, None);
}

/// [`stage_tile`] into a tile padded past the tensor's rows (`tail`): each 16-byte chunk of
/// the tile is copied in [`ColumnTail::piece_bytes`] pieces (`cp.async.cg` 16, else
/// `cp.async.ca` 8 or 4), and pieces past the row, like rows past `len`, read 0 bytes from
/// the row's start and are zero-filled (PTX ISA: src-size below cp-size fills the rest of
/// the destination with zeros).
pub fn stage_tile_masked(
    kb: &mut KernelBuilder,
    tile: SharedTile16,
    base: Reg,
    t: Reg,
    threads: u32,
    rows: &GlobalRows,
    tail: Option<ColumnTail>,
) {
    let GlobalRows {
        src,
        row_bytes,
        tok_c,
        heads,
        h,
        len,
    } = *rows;
    let per_row = tile.cols / 8;
    let ch = kb.and(t, per_row - 1);
    let row0 = kb.shr(t, per_row.trailing_zeros());
    let ch_bytes = kb.mul_wide(ch, 16u32);
    let src_ch = kb.add(src, ch_bytes);
    let pieces = tile.rows * per_row;
    let ch8 = tail.map(|_| kb.shl(ch, 3u32));
    let copy_row = |kb: &mut KernelBuilder, row: Reg| {
        if let (Some(tail), Some(ch8)) = (tail, ch8) {
            let valid = kb.setp(Cmp::Lt, row, len);
            let limit = kb.selp(tail.limit, 0u32, valid);
            let src_row = kb.selp(row, 0u32, valid);
            let tok = kb.add(tok_c, src_row);
            let th = kb.mad_lo(tok, heads, h);
            let row_at = kb.mad_wide(th, row_bytes, src);
            let dst = tile.chunk_addr(kb, base, row, ch);
            let piece = tail.piece_bytes();
            let cache = if piece == 16 {
                CpAsyncCache::Cg
            } else {
                CpAsyncCache::Ca
            };
            for e in 0..16 / piece {
                let col = kb.add(ch8, e * piece / 2);
                let ok = kb.setp(Cmp::Lt, col, limit);
                let full = kb.mov(Ty::U32, piece);
                let bytes = kb.selp(full, 0u32, ok);
                let src_col = kb.selp(col, 0u32, ok);
                let col_bytes = kb.mul_wide(src_col, 2u32);
                let at = kb.add(row_at, col_bytes);
                kb.cp_async(
                    cache,
                    piece,
                    Address::reg(dst, i64::from(e * piece)),
                    Address::reg(at, 0),
                    Some(bytes.into()),
                );
            }
            return;
        }
        let valid = kb.setp(Cmp::Lt, row, len);
        let src_row = kb.selp(row, 0u32, valid);
        let sixteen = kb.mov(Ty::U32, 16u32);
        let bytes = kb.selp(sixteen, 0u32, valid);
        let tok = kb.add(tok_c, src_row);
        let th = kb.mad_lo(tok, heads, h);
        let at = kb.mad_wide(th, row_bytes, src_ch);
        let dst = tile.chunk_addr(kb, base, row, ch);
        kb.cp_async(
            CpAsyncCache::Cg,
            16,
            Address::reg(dst, 0),
            Address::reg(at, 0),
            Some(bytes.into()),
        );
    };
    for round in 0..pieces / threads {
        let row = kb.add(row0, round * threads / per_row);
        copy_row(kb, row);
    }
    if !pieces.is_multiple_of(threads) {
        // A tile with fewer 16-byte pieces than threads (or not a multiple): the last round
        // runs on the threads whose row is still inside the tile.
        let row = kb.add(row0, pieces / threads * threads / per_row);
        let inside = kb.setp(Cmp::Lt, row, tile.rows);
        kb.guarded(inside, false, |kb| copy_row(kb, row));
    }
}

/// Copy one 16-byte chunk of a 16-bit shared tile (at `src`) to global memory (at `dst`)
/// where the predicate `inside` holds. With `tail` (the chunk's first tile column and the
/// tile's [`ColumnTail`]) the chunk moves in [`ColumnTail::piece_bytes`] pieces and pieces
/// past the row are skipped.
pub fn copy_chunk_out(
    kb: &mut KernelBuilder,
    src: Reg,
    dst: Reg,
    inside: Reg,
    tail: Option<(Reg, ColumnTail)>,
) {
    let Some((col0, tail)) = tail else {
        kb.guarded(inside, false, |kb| {
            let x = kb.ld_vec(Space::Shared, Ty::U32, 4, Address::reg(src, 0));
            let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
            kb.st_vec(Space::Global, Ty::U32, Address::reg(dst, 0), &x);
        });
        return;
    };
    let limit = kb.selp(tail.limit, 0u32, inside);
    let piece = tail.piece_bytes();
    let words = (piece / 4) as usize;
    for e in 0..16 / piece {
        let col = kb.add(col0, e * piece / 2);
        let ok = kb.setp(Cmp::Lt, col, limit);
        let off = i64::from(e * piece);
        kb.guarded(ok, false, |kb| {
            let x = kb.ld_vec(Space::Shared, Ty::U32, words, Address::reg(src, off));
            let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
            kb.st_vec(Space::Global, Ty::U32, Address::reg(dst, off), &x);
        });
    }
}
