//! The tensor-core path of the parallel forward (f16/bf16 inputs, f32 accumulation); math,
//! parameters and grid as [`super`]:
//!
//! ```text
//! warp w of B/16, lane (g = lane/4, q = lane%4), query rows 16w.. of tile i:
//!   O_w = 0                                                   (mma accumulators, f32)
//!   for each key tile j ≤ i:  S_w = Q_w K_jᵀ ⊙ band           (mma, f32, in registers)
//!                             O_w += S̃_w V_j                  (S̃: S rounded to 16 bits)
//!   o rows 16w.. = s·O_w
//! ```
//!
//! q, k and v tiles arrive by `cp.async` into XOR-swizzled shared tiles (rows past T are
//! zero-filled by the copy, so masked products are exact zeros, never stale data); k and v
//! are double-buffered, the next key tile's copy in flight while the current one is
//! multiplied. Every operand is read with `ldmatrix`, and o leaves through a swizzled shared
//! tile as whole 16-byte rows. Global traffic per query tile: q once, each visited k/v tile
//! once (a tile whose decays vanish is not even prefetched), o once.

use super::{emit_band, open_kernel, value_slice, walk_query_tiles};
use crate::GenError;
use crate::blocks::cta::{mma_types, warp_lane};
use crate::blocks::global::GlobalRows;
use crate::blocks::staging::{ColumnTail, copy_chunk_out, stage_tile_masked};
use crate::dsl::tiles::{AccTileF32, LaneFragments, SharedTile16};
use crate::dsl::{Address, Cmp, KernelBuilder, Reg, Space, Ty};
use crate::math::chunk_tiling::{exact_dims, tile_spec};
use crate::math::decay_band::tile_step_vanishes;
use crate::math::shared_window::{band_table_bytes, tiles16};
use crate::math::tile_walk::tile_rows;
use crate::spec::KernelSpec;

/// The kernel's title line.
const TITLE: &str = "retention parallel forward (tensor cores)";
/// What the kernel computes, as its header says.
const FORMULA: &str = "per warp: O = 0; for key tiles j <= i: S = Q K_j^T . band ; O += S~ V_j ; o = s O  (mma, f32 accumulators)";

/// Most value columns one CTA serves (its f32 O tile is V/2 registers per thread).
pub const MAX_VALUE_SLICE: u32 = 128;

/// Shared tiles of the tensor-core path. k and v are double-buffered: the copy of the next
/// key tile lands while the current one is multiplied; buffer 1 sits `kv_stride` bytes after
/// buffer 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcLayout {
    /// q `[B][K]`.
    pub q: SharedTile16,
    /// k `[B][K]`, buffer 0.
    pub k: SharedTile16,
    /// v `[B][vs]` (this CTA's value slice), buffer 0.
    pub v: SharedTile16,
    /// Bytes from buffer 0 of k and v to buffer 1.
    pub kv_stride: u32,
    /// o `[B][vs]` on its way out.
    pub o: SharedTile16,
    /// The band table γ^n, 2B − 1 f32 (padded to 2B).
    pub band: u32,
    /// Total bytes.
    pub total: u32,
}

impl TcLayout {
    /// The layout for head dim `k`, value slice `vs` and tile `b`.
    pub const fn new(k: u32, vs: u32, b: u32) -> Self {
        // k and v, then their second buffer, then o.
        let ([q, kt, vt], buffer1) = tiles16(0, [(b, k), (b, k), (b, vs)]);
        let kv_stride = buffer1 - kt.offset;
        let ([o], band) = tiles16(buffer1 + kv_stride, [(b, vs)]);
        TcLayout {
            q,
            k: kt,
            v: vt,
            kv_stride,
            o,
            band,
            total: band + band_table_bytes(b),
        }
    }
}

/// Where one token-major tensor's tile comes from: the tensor's row width `dim` (elements
/// between heads) and the global address of column `col0` of token 0, head 0.
struct Source {
    at: Reg,
    dim: u32,
    /// The real columns of a tile padded past the rows (`None` at catalog dims).
    tail: Option<ColumnTail>,
}

/// Copy rows `tok0..tok0+B` (columns of `tile.cols` from the source's `col0`) into a
/// swizzled tile with `cp.async`; rows at or past `len` are zero-filled (their source is
/// row 0, read for 0 bytes).
#[allow(clippy::too_many_arguments)]
fn stage_tile(
    kb: &mut KernelBuilder,
    tile: SharedTile16,
    base: Reg,
    src: &Source,
    t: Reg,
    threads: u32,
    es: u32,
    tok0: Reg,
    heads: Reg,
    h: Reg,
    len: Reg,
) {
    let rows = GlobalRows {
        src: src.at,
        row_bytes: src.dim * es,
        tok_c: tok0,
        heads,
        h,
        len,
    };
    stage_tile_masked(kb, tile, base, t, threads, &rows, src.tail);
}

/// What staging a key tile's k and v needs, fixed per kernel.
struct KvStager<'a> {
    lay: TcLayout,
    k: &'a Source,
    v: &'a Source,
    t: Reg,
    threads: u32,
    es: u32,
    heads: Reg,
    h: Reg,
}

impl KvStager<'_> {
    /// `cp.async` tokens `tok0..tok0+B` of k and v (rows at or past `len` zero-filled) into
    /// the buffer whose k tile starts at `buf_base + lay.k.offset`.
    fn stage(&self, kb: &mut KernelBuilder, buf_base: Reg, tok0: Reg, len: Reg) {
        for (tile, src) in [(self.lay.k, self.k), (self.lay.v, self.v)] {
            stage_tile(
                kb,
                tile,
                buf_base,
                src,
                self.t,
                self.threads,
                self.es,
                tok0,
                self.heads,
                self.h,
                len,
            );
        }
    }
}

/// The per-lane registers and tiles the query-tile phases read, fixed per kernel.
struct QueryTiles<'a> {
    lay: TcLayout,
    kv: KvStager<'a>,
    src_q: &'a Source,
    base: Reg,
    pty: Ty,
    ab: Ty,
    lanes: LaneFragments,
    /// Per-lane row bases of the q (rows 16w..), k and v tiles (buffer 0).
    rows: (Reg, Reg, Reg),
    /// The band table and the lane's entry band[i0 + g − 2q + B − 1].
    band: (Reg, Reg),
    /// 16w, g = lane/4 and q4 = lane%4.
    lane_rows: (Reg, Reg, Reg),
    scale: Reg,
    log2_gamma: Reg,
    /// The sequence length and row b's first token.
    seq: (Reg, Reg),
    full: Reg,
    /// o's per-thread 16-byte chunks: chunk, first row, address, column (padded tiles).
    o_ch: (Reg, Reg, Reg, Option<Reg>),
    /// (K padded, V slice, B, real V).
    dims: (u32, u32, u32, u32),
}

/// Emit the tensor-core parallel forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (kd, vd); global rows keep the real (kg, vg).
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let vs = value_slice(spec);
    let bt = spec.chunk.unwrap_or_default(); // tile rows B
    let es = spec.dtype.size_bytes() as u32;
    let (ab, pty) = mma_types(spec.dtype);
    let threads = 32 * bt / 16;
    let lay = TcLayout::new(kd, vs, bt);
    let doc = format!(
        "swizzled 16-bit q [B,K] @{}, k [B,K] @{}, v [B,vs] @{}, o [B,vs] @{}; f32 band [2B] @{}",
        lay.q.offset, lay.k.offset, lay.v.offset, lay.o.offset, lay.band
    );
    let head = (TITLE, FORMULA, threads);
    let (mut kb, open) = open_kernel(spec, head, (lay.total, 128, &doc), vd / vs)?;
    let (params, grid, (h, t)) = (&open.params, &open.grid, (open.h, open.t));
    let (lane, warp, g, q4) = warp_lane(&mut kb, t);
    let q2 = kb.shl(q4, 1u32);
    let row = open.row(&mut kb, lay.band);
    let (heads, log2_gamma, seq_len, tok_row) =
        (row.heads, row.log2_gamma, row.seq_len, row.tok_row);
    let (scale, base, band) = (row.scale, row.base, row.band);

    kb.comment("per-lane ldmatrix rows; warp w owns query rows 16w.. of the tile");
    let lanes = LaneFragments::new(&mut kb, lane);
    let zero = kb.mov(Ty::U32, 0u32);
    let i0 = kb.shl(warp, 4u32);
    let q_rows = lay.q.lane_rows(&mut kb, base, i0, lanes.p1_row);
    let k_rows = lay.k.lane_rows(&mut kb, base, zero, lanes.p2_row);
    let v_rows = lay.v.lane_rows(&mut kb, base, zero, lanes.p1_row);
    // band[r − c + B − 1] for r = i0 + g (+8), c = 2q (+8nt, +1): one base, immediate offsets.
    let d0 = kb.add(i0, g);
    let d1 = kb.add(d0, bt - 1);
    let d2 = kb.sub(d1, q2);
    let d4 = kb.shl(d2, 2u32);
    let band_lane = kb.add(band, d4);

    let (q, k, v, o) = (
        kb.global_ptr(&params.q),
        kb.global_ptr(&params.k),
        kb.global_ptr(&params.v),
        kb.global_ptr(&params.o),
    );
    let col0 = kb.mul_lo(grid.slice, vs);
    let col0_bytes = kb.mul_wide(col0, es);
    let v_at = kb.add(v, col0_bytes);
    let o_at = kb.add(o, col0_bytes);
    let k_tail = tail.then(|| ColumnTail::new(&mut kb, None, kg));
    let v_tail = tail.then(|| ColumnTail::new(&mut kb, Some(col0), vg));
    let src = |at, dim, tail| Source { at, dim, tail };
    let (src_q, src_k, src_v) = (
        src(q, kg, k_tail),
        src(k, kg, k_tail),
        src(v_at, vg, v_tail),
    );
    let full = kb.mov(Ty::U32, bt);
    let kv = KvStager {
        lay,
        k: &src_k,
        v: &src_v,
        t,
        threads,
        es,
        heads,
        h,
    };
    let o_per_row = vs / 8;
    let o_ch = kb.and(t, o_per_row - 1);
    let o_row0 = kb.shr(t, o_per_row.trailing_zeros());
    let o_ch_bytes = kb.mul_wide(o_ch, 16u32);
    let o_ch_at = kb.add(o_at, o_ch_bytes);
    let o_ch8 = tail.then(|| kb.shl(o_ch, 3u32));
    let x = QueryTiles {
        lay,
        kv,
        src_q: &src_q,
        base,
        pty,
        ab,
        lanes,
        rows: (q_rows, k_rows, v_rows),
        band: (band, band_lane),
        lane_rows: (i0, g, q4),
        scale,
        log2_gamma,
        seq: (seq_len, tok_row),
        full,
        o_ch: (o_ch, o_row0, o_ch_at, o_ch8),
        dims: (kd, vs, bt, vg),
    };

    walk_query_tiles(kb, grid, (seq_len, bt), |kb, i| x.query_tile(kb, i))
}

impl QueryTiles<'_> {
    /// Query tile i: O = Σ_j S̃_j V_j over key tiles j = i, i−1, … (double-buffered k, v),
    /// then o rows < L = s O.
    fn query_tile(&self, kb: &mut KernelBuilder, i: Reg) {
        let (_, vs, bt, _) = self.dims;
        let (seq_len, tok_row) = self.seq;
        let (t, threads, es, heads, h) = (
            self.kv.t,
            self.kv.threads,
            self.kv.es,
            self.kv.heads,
            self.kv.h,
        );
        let (tok_i, len_i) = tile_rows(kb, i, bt, (seq_len, tok_row));
        kb.comment(
            "cp.async the query tile (rows >= L zero-filled); it lands with the first key tile",
        );
        stage_tile(
            kb, self.lay.q, self.base, self.src_q, t, threads, es, tok_i, heads, h, len_i,
        );
        let oacc = AccTileF32::zeros(kb, vs);

        kb.comment("key tiles j = i, i-1, ..., while their decays are not all zero;");
        kb.comment("the copy of key tile s+1 (buffer (s+1)&1) lands while tile s is multiplied");
        self.kv.stage(kb, self.base, tok_i, len_i);
        kb.cp_async_commit();
        let s = kb.mov(Ty::U32, 0u32);
        let top = kb.label();
        kb.place(top);
        kb.bar_sync(0);
        let (next, no_next) = self.prefetch_next(kb, i, s);
        self.key_tile(kb, s, &oacc);
        kb.assign(s, next);
        kb.bra_if(no_next, true, top);
        self.store_tile(kb, &oacc, (tok_i, len_i));
    }

    /// Start the copy of key tile s+1 (when it exists and its decays do not vanish) into
    /// buffer (s+1)&1, write tile s's band and wait for tile s; returns s+1 and "no next".
    fn prefetch_next(&self, kb: &mut KernelBuilder, i: Reg, s: Reg) -> (Reg, Reg) {
        let bt = self.dims.2;
        let next = kb.add(s, 1u32);
        let beyond = kb.setp(Cmp::Gt, next, i);
        let vanishes = tile_step_vanishes(kb, bt, next, self.log2_gamma);
        let no_next = kb.or(beyond, vanishes);
        let skip_prefetch = kb.label();
        kb.bra_if(no_next, false, skip_prefetch);
        let j_next = kb.sub(i, next);
        let key0 = kb.mul_lo(j_next, bt);
        let tok_j = kb.add(self.seq.1, key0);
        let parity = kb.and(next, 1u32);
        let buf_base = kb.mad_lo(parity, self.lay.kv_stride, self.base);
        self.kv.stage(kb, buf_base, tok_j, self.full);
        kb.place(skip_prefetch);
        kb.cp_async_commit(); // empty when there is no next tile: the wait below stays uniform
        emit_band(kb, self.band.0, self.kv.t, bt, s, self.log2_gamma);
        kb.cp_async_wait(1);
        kb.bar_sync(0);
        (next, no_next)
    }

    /// Key tile s (buffer s&1): S = Q K_sᵀ ⊙ band, then O += S̃ V_s.
    fn key_tile(&self, kb: &mut KernelBuilder, s: Reg, oacc: &AccTileF32) {
        let (kd, vs, bt, _) = self.dims;
        let (lay, pty, ab, lanes) = (&self.lay, self.pty, self.ab, &self.lanes);
        let (q_rows, k_rows, v_rows) = self.rows;
        let parity = kb.and(s, 1u32);
        let buf = kb.mul_lo(parity, lay.kv_stride);
        let k_cur = kb.add(k_rows, buf);
        let v_cur = kb.add(v_rows, buf);
        let sacc = AccTileF32::zeros(kb, bt);
        for ks in 0..kd / 16 {
            let qa = lay
                .q
                .ldmatrix_x4(kb, pty, false, q_rows, 0, 2 * ks, lanes.p1_x);
            for np in 0..bt / 16 {
                let kf = lay
                    .k
                    .ldmatrix_x4(kb, pty, false, k_cur, 16 * np, 2 * ks, lanes.p2_x);
                sacc.mma_pair(kb, ab, 2 * np as usize, qa, kf);
            }
        }
        let band_lane = self.band.1;
        // Element e of n-tile nt sits at row i0 + g + 8(e >> 1), column 8nt + 2q + (e & 1).
        let decayed = sacc.map(kb, |kb, nt, e, x| {
            let dd = 8 * (e as i64 >> 1) - 8 * nt as i64 - (e as i64 & 1);
            let dec = kb.ld(Space::Shared, Ty::F32, Address::reg(band_lane, 4 * dd));
            kb.mul(x, dec)
        });
        let sa = decayed.to_a_fragments(kb, ab);
        for (ks, a) in sa.iter().enumerate() {
            for np in 0..vs / 16 {
                let vf =
                    lay.v
                        .ldmatrix_x4(kb, pty, true, v_cur, 16 * ks as u32, 2 * np, lanes.p1_x);
                oacc.mma_pair(kb, ab, 2 * np as usize, *a, vf);
            }
        }
    }

    /// o rows < L of the tile = s O, out through the swizzled o tile.
    fn store_tile(&self, kb: &mut KernelBuilder, oacc: &AccTileF32, (tok_i, len_i): (Reg, Reg)) {
        let (_, vs, bt, vg) = self.dims;
        let (i0, g, q4) = self.lane_rows;
        let (o_ch, o_row0, o_ch_at, o_ch8) = self.o_ch;
        let threads = self.kv.threads;
        kb.comment("o rows < L of the tile = s O, out through the swizzled o tile");
        oacc.scale(kb, self.scale);
        self.lay
            .o
            .store_acc(kb, self.base, oacc, self.ab, i0, g, q4, 0);
        kb.bar_sync(0);
        let o_per_row = vs / 8;
        for round in 0..bt * o_per_row / threads {
            let row = kb.add(o_row0, round * threads / o_per_row);
            let inside = kb.setp(Cmp::Lt, row, len_i);
            let tok = kb.add(tok_i, row);
            let th = kb.mad_lo(tok, self.kv.heads, self.kv.h);
            let dst = kb.mad_wide(th, vg * self.kv.es, o_ch_at);
            let src = self.lay.o.chunk_addr(kb, self.base, row, o_ch);
            copy_chunk_out(kb, src, dst, inside, o_ch8.zip(self.kv.v.tail));
        }
    }
}
