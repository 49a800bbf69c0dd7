//! Block-wide f32 tile products on the FMA units, for the chunkwise kernel's FMA path.
//!
//! Every product here is `acc (M×N) += Σ_p a_p ⊗ b_p` where, for each inner index p, a thread
//! needs four consecutive entries of a column of A and of a row of B. The operands live in
//! shared memory "inner-major" (row p holds a_p, resp. b_p), so each step is two `ld.v4`
//! from shared memory and sixteen `fma`. The CTA's threads tile the M×N output in 4×4
//! pieces, piece `tt` at rows `4·(tt div N/4)` and columns `4·(tt mod N/4)`: consecutive
//! threads take consecutive column groups, so B rows are read as whole 512-byte spans.

use crate::dsl::{Address, Cmp, KernelBuilder, Reg, Space, Ty};

/// A 4×4 f32 accumulator, `acc[r][c]` for output row r and column c of a piece.
pub type Acc4x4 = [[Reg; 4]; 4];

/// The 4×4 piece a thread owns: its first output row and column (`.u32`).
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    /// First output row of the piece.
    pub row: Reg,
    /// First output column of the piece.
    pub col: Reg,
}

/// Run `body` once for every 4×4 piece of an M×N output that thread `t` owns (pieces `t`,
/// `t + threads`, …). Pieces are unrolled at generation time; threads without a piece in a
/// round branch around it.
pub fn for_each_piece(
    kb: &mut KernelBuilder,
    t: Reg,
    threads: u32,
    m: u32,
    n: u32,
    mut body: impl FnMut(&mut KernelBuilder, Piece),
) {
    let pieces = m * n / 16;
    let across = n / 4;
    for round in 0..pieces.div_ceil(threads) {
        let tt = kb.add(t, round * threads);
        let skip = kb.label();
        if (round + 1) * threads > pieces {
            let outside = kb.setp(Cmp::Ge, tt, pieces);
            kb.bra_if(outside, false, skip);
        }
        let col_group = kb.and(tt, across - 1);
        let col = kb.shl(col_group, 2u32);
        let row_group = kb.shr(tt, across.trailing_zeros());
        let row = kb.shl(row_group, 2u32);
        body(kb, Piece { row, col });
        kb.place(skip);
    }
}

/// Sixteen f32 registers set to `0`.
pub fn zero_acc(kb: &mut KernelBuilder) -> Acc4x4 {
    std::array::from_fn(|_| std::array::from_fn(|_| kb.mov(Ty::F32, 0.0f32)))
}

/// `acc += a ⊗ b` for one inner index.
pub fn rank1_update(kb: &mut KernelBuilder, acc: &Acc4x4, a: &[Reg], b: &[Reg]) {
    for r in 0..4 {
        for c in 0..4 {
            kb.fma_into(acc[r][c], a[r], b[c], acc[r][c]);
        }
    }
}

/// Where the state update reads the staged chunk, as shared-memory offsets from `base`: the
/// transposed keys `K^T [K][rows]` (`kt`, `kt_rows` columns per row), the values `V [rows][vs]`
/// (`v`, `vs` columns).
pub struct StagedChunk {
    /// Offset of `K^T`.
    pub kt: u32,
    /// Columns of a `K^T` row (the staged rows: the chunk or block length).
    pub kt_rows: u32,
    /// Offset of `V`.
    pub v: u32,
    /// Columns of a `V` row.
    pub vs: u32,
}

/// `acc += Σ_{j < len} (K^T[row..row+4, j] · ζ_j) ⊗ V[j, col..col+4]` for the piece `p` of the
/// state: ζ_j is read backwards from address `zeta.0 + zeta.1` (ζ_0, the decay of the staged
/// rows' first token); `len` is a `.u32` register.
pub fn accumulate_decayed_outer(
    kb: &mut KernelBuilder,
    acc: &Acc4x4,
    (base, p): (Reg, &Piece),
    chunk: &StagedChunk,
    zeta: (Reg, u32),
    len: Reg,
) {
    let first = |kb: &mut KernelBuilder| kb.add(zeta.0, zeta.1);
    accumulate_walked_outer(kb, acc, (base, p), chunk, (first, WeightStep::Down), len);
}

/// Which way the weight address moves per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStep {
    /// Token j + 1's weight is 4 bytes above token j's (ξ_j = γ^(j+1)).
    Up,
    /// Token j + 1's weight is 4 bytes below token j's (ζ_j = γ^(L−1−j)).
    Down,
}

/// `acc += Σ_{j < len} (Aᵀ[row..row+4, j] · u_j) ⊗ B[j, col..col+4]` for the piece `p`: Aᵀ is
/// `chunk.kt` (`chunk.kt_rows` columns a row), B is `chunk.v` (`chunk.vs` columns), both
/// offsets from `base`; `first` emits the register walking the weights (u_0's shared address,
/// a fresh register the loop moves by `step`); `len` is a `.u32` register.
pub fn accumulate_walked_outer(
    kb: &mut KernelBuilder,
    acc: &Acc4x4,
    (base, p): (Reg, &Piece),
    chunk: &StagedChunk,
    (first, step): (impl FnOnce(&mut KernelBuilder) -> Reg, WeightStep),
    len: Reg,
) {
    let c = chunk.kt_rows;
    let kt_elem = kb.mul_lo(p.row, c);
    let kt_off = kb.shl(kt_elem, 2u32);
    let kt_at = kb.add(base, kt_off);
    let a_ptr = kb.add(kt_at, chunk.kt);
    let u_ptr = first(kb);
    let b_off = kb.shl(p.col, 2u32);
    let b_at = kb.add(base, b_off);
    let b_ptr = kb.add(b_at, chunk.v);
    kb.for_range(0u32, len, 1, |kb, _| {
        let u = kb.ld(Space::Shared, Ty::F32, Address::reg(u_ptr, 0));
        let au: Vec<Reg> = (0..4u32)
            .map(|r| {
                let x = kb.ld(
                    Space::Shared,
                    Ty::F32,
                    Address::reg(a_ptr, i64::from(r * c * 4)),
                );
                kb.mul(x, u)
            })
            .collect();
        let bv = kb.ld_vec(Space::Shared, Ty::F32, 4, Address::reg(b_ptr, 0));
        rank1_update(kb, acc, &au, &bv);
        let na = kb.add(a_ptr, 4u32);
        kb.assign(a_ptr, na);
        let nu = match step {
            WeightStep::Up => kb.add(u_ptr, 4u32),
            WeightStep::Down => kb.sub(u_ptr, 4u32),
        };
        kb.assign(u_ptr, nu);
        let nb = kb.add(b_ptr, chunk.vs * 4);
        kb.assign(b_ptr, nb);
    });
}

/// `acc += Σ_{p < count} A[p][0..4] ⊗ B[p][0..4]` with A and B inner-major in shared memory:
/// `a` and `b` are the shared addresses of `A[0][0]` and `B[0][0]` of the piece, rows
/// `a_stride`/`b_stride` bytes apart. `count` is a `.u32` register or immediate.
pub fn accumulate_shared(
    kb: &mut KernelBuilder,
    acc: &Acc4x4,
    a: Reg,
    a_stride: u32,
    b: Reg,
    b_stride: u32,
    count: impl Into<crate::dsl::Operand>,
) {
    let a_ptr = kb.mov(Ty::U32, a);
    let b_ptr = kb.mov(Ty::U32, b);
    kb.for_range(0u32, count, 1, |kb, _| {
        let av = kb.ld_vec(Space::Shared, Ty::F32, 4, Address::reg(a_ptr, 0));
        let bv = kb.ld_vec(Space::Shared, Ty::F32, 4, Address::reg(b_ptr, 0));
        rank1_update(kb, acc, &av, &bv);
        let na = kb.add(a_ptr, a_stride);
        kb.assign(a_ptr, na);
        let nb = kb.add(b_ptr, b_stride);
        kb.assign(b_ptr, nb);
    });
}

/// Load a 4×4 f32 piece whose rows start `row_stride` bytes apart at shared address `at`.
pub fn load_piece(kb: &mut KernelBuilder, at: Reg, row_stride: u32) -> Acc4x4 {
    std::array::from_fn(|r| {
        let v = kb.ld_vec(
            Space::Shared,
            Ty::F32,
            4,
            Address::reg(at, i64::from(r as u32 * row_stride)),
        );
        [v[0], v[1], v[2], v[3]]
    })
}

/// Store a 4×4 f32 piece whose rows start `row_stride` bytes apart at shared address `at`.
pub fn store_piece(kb: &mut KernelBuilder, acc: &Acc4x4, at: Reg, row_stride: u32) {
    for (r, row) in acc.iter().enumerate() {
        let srcs: Vec<_> = row.iter().map(|&x| x.into()).collect();
        kb.st_vec(
            Space::Shared,
            Ty::F32,
            Address::reg(at, i64::from(r as u32 * row_stride)),
            &srcs,
        );
    }
}

/// `acc += Σ_{p < count} A[p][row..row+4] ⊗ B[p][col..col+4]` for piece `p`, with A at shared
/// offset `a.0` from `base` (rows `a.1` bytes apart) and B at `b.0` (rows `b.1` bytes
/// apart). Returns the piece's bases `base + 4·p.row` and `base + 4·p.col`, for further
/// operands of the same piece.
pub fn product_piece(
    kb: &mut KernelBuilder,
    acc: &Acc4x4,
    (base, p): (Reg, &Piece),
    a: (u32, u32),
    b: (u32, u32),
    count: impl Into<crate::dsl::Operand>,
) -> (Reg, Reg) {
    let a_off = kb.shl(p.row, 2u32);
    let a_base = kb.add(base, a_off);
    let a_at = kb.add(a_base, a.0);
    let b_off = kb.shl(p.col, 2u32);
    let b_base = kb.add(base, b_off);
    let b_at = kb.add(b_base, b.0);
    accumulate_shared(kb, acc, a_at, a.1, b_at, b.1, count);
    (a_base, b_base)
}

/// Where the rows of 4×4 output pieces go: a token-major global tensor of `dim`-element
/// rows in `dtype`, the piece rows `row` being tokens `tok0 + row` of head `h`.
pub struct PieceRowsOut {
    /// Address of token 0, head 0, column 0.
    pub dst: Reg,
    /// Token of piece row 0.
    pub tok0: Reg,
    /// H and this CTA's head.
    pub heads_h: (Reg, Reg),
    /// First column of this CTA's slice.
    pub col0: Reg,
    /// Element type and row length (elements) of the tensor.
    pub dtype: retention_core::Dtype,
    /// Row length of the tensor in elements.
    pub dim: u32,
    /// Rows below this (`.u32`) are stored.
    pub len: Reg,
    /// The tile is padded past `dim`: columns at or past it are not stored.
    pub tail: bool,
    /// Bytes between tokens (`None`: computed after the piece's address).
    pub tok_stride: Option<Reg>,
}

/// Store the piece `acc` of thread piece `p` to rows `< out.len` of `out` (rounded to its
/// dtype; one guard per row, and per column group when the tile is padded).
pub fn store_piece_rows(kb: &mut KernelBuilder, acc: &Acc4x4, p: &Piece, out: &PieceRowsOut) {
    use super::global::{row_limit, store_from_f32_masked, store4_from_f32};
    let (heads, h) = out.heads_h;
    let es = out.dtype.size_bytes() as u32;
    let tok = kb.add(out.tok0, p.row);
    let th = kb.mad_lo(tok, heads, h);
    let col = kb.add(p.col, out.col0);
    let col_bytes = kb.mul_wide(col, es);
    let off = kb.mad_wide(th, out.dim * es, col_bytes);
    let mut at = kb.add(out.dst, off);
    let tok_stride = match out.tok_stride {
        Some(s) => s,
        None => kb.mul_wide(heads, out.dim * es),
    };
    for (r, row) in acc.iter().enumerate() {
        if r > 0 {
            at = kb.add(at, tok_stride);
        }
        let i = kb.add(p.row, r as u32);
        let inside = kb.setp(Cmp::Lt, i, out.len);
        if out.tail {
            // Rows past L and columns past the dim are not stored (one guard each).
            let limit = row_limit(kb, inside, out.dim);
            let at = Address::reg(at, 0);
            store_from_f32_masked(kb, out.dtype, at, row, col, limit, out.dim);
        } else {
            kb.guarded(inside, false, |kb| {
                store4_from_f32(kb, out.dtype, Address::reg(at, 0), row);
            });
        }
    }
}
