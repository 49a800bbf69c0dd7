//! The FMA generator of the parallel backward (every pass, every dtype); math, parameters
//! and grid as [`super`]. With X the owned score-side tile (scaled by s), Y and Z the walked
//! tile's score-side and output-side rows (dQ: X = dO_i, Y = V_j, Z = K_j; dK: X = V_j,
//! Y = dO_i, Z = Q_i; dV: X = K_j, Y = Q_i, Z = dO_i):
//!
//! ```text
//! owned tile a:  Xᵀ staged once (scaled), A = 0                  (A [B][ws] in shared memory)
//!   walked tile: Sᵀ[c][r] = (X_r · Y_c) · band[d(r, c)]           (4×4 pieces per thread)
//!                A[r] += Σ_{c < L} Sᵀ[c][r] Z_c
//!   output rows < L_a, columns < dim = A
//! ```
//!
//! d(r, c) = r − c + B − 1 when the CTA owns a query tile (r the query row), c − r + B − 1
//! when it owns a key tile (c the query row): the exponent is always query − key.

use super::{Pass, THREADS, value_slice};
use crate::GenError;
use crate::blocks::cta::cta_row_head;
use crate::blocks::decay;
use crate::blocks::fma::{accumulate_shared, for_each_piece, load_piece, store_piece, zero_acc};
use crate::blocks::global::{GlobalRows, row_limit, store_from_f32_masked};
use crate::blocks::staging::Stager;
use crate::blocks::tile_f32::{TileLayout, stage_tile_f32};
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, ParamRef, Reg, Space, Sreg, Ty};
use crate::math::chunk_params::declare_runtime_gamma;
use crate::math::chunk_tiling::tile_spec;
use crate::math::decay_band::{emit_band_table, tile_step_vanishes};
use crate::math::kernel_head::open_kernel;
use crate::math::tile_walk::{
    GridZ, TilePairLayout, for_each_owned_tile, for_steps, tile_count, tile_rows,
};
use crate::spec::KernelSpec;

/// The parameters, declared in the order of the module table.
struct Params {
    q: ParamRef,
    k: ParamRef,
    v: ParamRef,
    d_o: ParamRef,
    out: ParamRef,
    t: ParamRef,
    scale: ParamRef,
    runtime: Option<(ParamRef, ParamRef)>,
}

impl Params {
    fn declare(kb: &mut KernelBuilder, pass: Pass, runtime_gamma: bool) -> Self {
        Params {
            q: kb.param("p_q", Ty::U64),
            k: kb.param("p_k", Ty::U64),
            v: kb.param("p_v", Ty::U64),
            d_o: kb.param("p_do", Ty::U64),
            out: kb.param(pass.output_param(), Ty::U64),
            t: kb.param("p_t", Ty::U32),
            scale: kb.param("p_scale", Ty::F32),
            runtime: declare_runtime_gamma(kb, runtime_gamma),
        }
    }

    /// (X, Y, Z) of `pass`: owned score-side, walked score-side, walked output-side.
    fn roles(&self, pass: Pass) -> (&ParamRef, &ParamRef, &ParamRef) {
        match pass {
            Pass::Dq => (&self.d_o, &self.v, &self.k),
            Pass::Dk | Pass::DlogGamma => (&self.v, &self.d_o, &self.q),
            Pass::Dv => (&self.k, &self.q, &self.d_o),
        }
    }
}

/// What the tile phases read, fixed per kernel.
struct BackwardCta<'a> {
    spec: &'a KernelSpec,
    pass: Pass,
    t: Reg,
    /// Row's first token, T, H and h.
    tok_row: Reg,
    seq_len: Reg,
    heads: Reg,
    h: Reg,
    /// ⌈T/B⌉.
    tiles: Reg,
    /// Global X, Y, Z and the output.
    g: (Reg, Reg, Reg, Reg),
    /// Global k (the d log γ pass: dotted with the owned tile's A).
    gx_key: Option<Reg>,
    scale: Reg,
    log2_gamma: Reg,
    /// The slice's first output column.
    w_col0: Reg,
    /// Staging of score-side rows (ds wide) and of output-side slices (ws wide).
    stage_s: Stager,
    stage_w: Stager,
    /// Shared addresses: Xᵀ, Yᵀ, Z, Sᵀ, A, band.
    smem: (Reg, Reg, Reg, Reg, Reg, Reg),
    /// The thread's first group of four in A.
    my_acc: Reg,
    /// The thread's d log γ sum (f32).
    dlog_gamma: Reg,
    /// (padded score dim, real score dim, output slice, real output dim, B).
    dims: (u32, u32, u32, u32, u32),
}

/// Emit the kernel of `pass` for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec, pass: Pass) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (ds, wd); global rows keep the real (dsg, wdg).
    let (ds, wd) = pass.dims(&tile_spec(spec));
    let (dsg, wdg) = pass.dims(spec);
    let ws = value_slice(spec);
    let bt = spec.chunk.unwrap_or_default();
    let lay = TilePairLayout::new(ds, ws, bt);

    let formula = match pass {
        Pass::Dq => "dQ_i = sum_{j<=i} (s dO_i V_j^T . D) K_j  (f32 tiles on chip)",
        Pass::Dk => "dK_j = sum_{i>=j} (s dO_i V_j^T . D)^T Q_i  (f32 tiles on chip)",
        Pass::Dv => "dV_j = sum_{i>=j} (s Q_i K_j^T . D)^T dO_i  (f32 tiles on chip)",
        Pass::DlogGamma => {
            "dlog_gamma partial = sum_j K_j . sum_{i>=j} (s dO_i V_j^T . nD)^T Q_i  (nD: n gamma^n)"
        }
    };
    let doc = format!(
        "f32 (sX)^T [ds,B] @{}, Y^T [ds,B] @{}, Z [B,ws] @{}, S^T [B,B] @{}, A [B,ws] @{}, band [2B] @{}",
        lay.xt, lay.yt, lay.z, lay.st, lay.acc, lay.band
    );
    let head = ("retention parallel backward", formula, THREADS);
    let declare = |kb: &mut KernelBuilder, runtime| Params::declare(kb, pass, runtime);
    let opened = open_kernel(spec, head, (lay.total, 16, &doc), declare)?;
    let (mut kb, params, log2_gammas) = (opened.kb, opened.params, opened.log2_gammas);

    kb.comment("CTA (row = ctaid.x, head h = ctaid.y, output slice and owned tiles from ctaid.z)");
    let (row, h) = cta_row_head(&mut kb);
    let grid = GridZ::new(&mut kb, wd / ws);
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) =
        decay::heads_and_log2_gamma(&mut kb, params.runtime.as_ref(), log2_gammas.as_deref(), h);
    let seq_len = kb.ld_param(&params.t);
    let tok_row = kb.mul_lo(row, seq_len);
    let scale = kb.ld_param(&params.scale);
    let base = kb.shared_addr(&opened.smem);
    let (px, py, pz) = params.roles(pass);
    let (gx, gy, gz) = (kb.global_ptr(px), kb.global_ptr(py), kb.global_ptr(pz));
    let out = kb.global_ptr(&params.out);
    let gx_key = (pass == Pass::DlogGamma).then(|| kb.global_ptr(&params.k));
    let w_col0 = kb.mul_lo(grid.slice, ws);
    let tiles = tile_count(&mut kb, seq_len, bt);
    let stage_s = Stager::new(&mut kb, t, ds, bt, THREADS);
    let stage_w = Stager::new(&mut kb, t, ws, bt, THREADS);
    let (xt, yt, zs) = (
        kb.add(base, lay.xt),
        kb.add(base, lay.yt),
        kb.add(base, lay.z),
    );
    let (st, acc_at, band) = (
        kb.add(base, lay.st),
        kb.add(base, lay.acc),
        kb.add(base, lay.band),
    );
    let my_acc = kb.mad_lo(t, 16u32, acc_at);
    let dlog_gamma = kb.mov(Ty::F32, 0.0f32);
    let x = BackwardCta {
        spec,
        pass,
        t,
        tok_row,
        seq_len,
        heads,
        h,
        tiles,
        g: (gx, gy, gz, out),
        gx_key,
        scale,
        log2_gamma,
        w_col0,
        stage_s,
        stage_w,
        smem: (xt, yt, zs, st, acc_at, band),
        my_acc,
        dlog_gamma,
        dims: (ds, dsg, ws, wdg, bt),
    };

    kb.comment(format!("owned tiles of {bt} rows, longest walk first"));
    for_each_owned_tile(&mut kb, &grid, tiles, !pass.owns_keys(), |kb, own| {
        x.owned_tile(kb, own);
    });
    if pass == Pass::DlogGamma {
        x.write_partial(&mut kb, row, &grid);
    }
    kb.ret();
    kb.finish()
}

/// The shared address of f32 element `elem` of the array at `base`.
fn kb_addr(kb: &mut KernelBuilder, elem: Reg, base: Reg) -> Reg {
    kb.mad_lo(elem, 4u32, base)
}

impl BackwardCta<'_> {
    /// (first token, valid rows) of tile `tile`.
    fn tile(&self, kb: &mut KernelBuilder, tile: Reg) -> (Reg, Reg) {
        tile_rows(kb, tile, self.dims.4, (self.seq_len, self.tok_row))
    }

    /// The global rows of tensor `src` (rows of `dim` elements) from token `tok`, `len` valid.
    fn rows(&self, src: Reg, dim: u32, (tok, len): (Reg, Reg)) -> GlobalRows {
        GlobalRows {
            src,
            row_bytes: dim * self.spec.dtype.size_bytes() as u32,
            tok_c: tok,
            heads: self.heads,
            h: self.h,
            len,
        }
    }

    /// Stage the score-side rows `tile` (first token, valid rows) of `src`, transposed
    /// `[ds][B]` at `dst`, times `scale` when given.
    fn stage_score_side(
        &self,
        kb: &mut KernelBuilder,
        src: Reg,
        tile: (Reg, Reg),
        dst: Reg,
        scale: Option<Reg>,
    ) {
        let (_, dsg, _, _, bt) = self.dims;
        let rows = self.rows(src, dsg, tile);
        let layout = TileLayout::Transposed { rows: bt };
        let dtype = self.spec.dtype;
        stage_tile_f32(
            kb,
            dtype,
            &self.stage_s,
            &rows,
            (None, dsg),
            dst,
            layout,
            scale,
        );
    }

    /// Stage the slice's columns of the output-side rows `tile` of `src`, `[B][ws]` at `dst`.
    fn stage_output_side(&self, kb: &mut KernelBuilder, src: Reg, tile: (Reg, Reg), dst: Reg) {
        let (_, _, ws, wdg, _) = self.dims;
        let rows = self.rows(src, wdg, tile);
        let layout = TileLayout::Rows { cols: ws };
        let cols = (Some(self.w_col0), wdg);
        stage_tile_f32(
            kb,
            self.spec.dtype,
            &self.stage_w,
            &rows,
            cols,
            dst,
            layout,
            None,
        );
    }

    /// Owned tile `own`: Xᵀ staged (scaled), A = 0; the walk adds the walked tiles; then
    /// the output rows (or, in the d log γ pass, the thread's sum of A ⊙ K).
    fn owned_tile(&self, kb: &mut KernelBuilder, own: Reg) {
        let (_, _, ws, _, bt) = self.dims;
        let (t, pass) = (self.t, self.pass);
        let tile = self.tile(kb, own);
        kb.bar_sync(0);
        kb.comment("stage (s X)^T of the owned tile; A = 0");
        self.stage_score_side(kb, self.g.0, tile, self.smem.0, Some(self.scale));
        for r in 0..(bt * ws / 4).div_ceil(THREADS) {
            let zero: Operand = 0.0f32.into();
            let at = Address::reg(self.my_acc, i64::from(r * THREADS * 16));
            if (r + 1) * THREADS * 4 > bt * ws {
                let inside = kb.setp(Cmp::Lt, t, bt * ws / 4 - r * THREADS);
                kb.guarded(inside, false, |kb| {
                    kb.st_vec(Space::Shared, Ty::F32, at, &[zero; 4]);
                });
            } else {
                kb.st_vec(Space::Shared, Ty::F32, at, &[zero; 4]);
            }
        }

        kb.comment("walked tiles, nearest first, while their decays are not all zero");
        let s0 = kb.mov(Ty::U32, 0u32);
        let exits = |kb: &mut KernelBuilder, s, done| {
            let ended = if pass.owns_keys() {
                let other = kb.add(own, s);
                kb.setp(Cmp::Ge, other, self.tiles)
            } else {
                kb.setp(Cmp::Gt, s, own)
            };
            let vanished = tile_step_vanishes(kb, bt, s, self.log2_gamma);
            kb.bra_if(ended, false, done);
            kb.bra_if(vanished, false, done);
        };
        for_steps(kb, s0, 1u32, exits, |kb, s| {
            let other = if pass.owns_keys() {
                kb.add(own, s)
            } else {
                kb.sub(own, s)
            };
            self.walk_tile(kb, other, s);
        });
        kb.bar_sync(0);

        match self.gx_key {
            Some(gx_key) => self.add_dlog_gamma(kb, gx_key, tile),
            None => self.store_output(kb, tile),
        }
    }

    /// The d log γ pass: the thread's sum += A ⊙ K over the owned rows and slice columns.
    fn add_dlog_gamma(&self, kb: &mut KernelBuilder, gx_key: Reg, tile: (Reg, Reg)) {
        let (_, _, ws, _, bt) = self.dims;
        let (_, _, zs, _, acc_at, _) = self.smem;
        let dlog_gamma = self.dlog_gamma;
        kb.comment("dlog_gamma += sum of A . K over the owned rows and slice columns");
        self.stage_output_side(kb, gx_key, tile, zs);
        kb.bar_sync(0);
        for_each_piece(kb, self.t, THREADS, bt, ws, |kb, p| {
            let elem = kb.mad_lo(p.row, ws, p.col);
            let a_at = kb_addr(kb, elem, acc_at);
            let a = load_piece(kb, a_at, ws * 4);
            let k_at = kb_addr(kb, elem, zs);
            let k = load_piece(kb, k_at, ws * 4);
            for (ar, kr) in a.iter().zip(&k) {
                for (&x, &y) in ar.iter().zip(kr) {
                    kb.fma_into(dlog_gamma, x, y, dlog_gamma);
                }
            }
        });
    }

    /// Output rows < L and columns < dim of the owned tile = A.
    fn store_output(&self, kb: &mut KernelBuilder, (tok_own, len_own): (Reg, Reg)) {
        let (_, _, ws, wdg, bt) = self.dims;
        let acc_at = self.smem.4;
        let (heads, h, out) = (self.heads, self.h, self.g.3);
        let dtype = self.spec.dtype;
        let es = dtype.size_bytes() as u32;
        kb.comment("output rows < L and columns < dim of the owned tile = A");
        for_each_piece(kb, self.t, THREADS, bt, ws, |kb, p| {
            let a_elem = kb.mad_lo(p.row, ws, p.col);
            let a_at = kb.mad_lo(a_elem, 4u32, acc_at);
            let acc = load_piece(kb, a_at, ws * 4);
            let tok = kb.add(tok_own, p.row);
            let th = kb.mad_lo(tok, heads, h);
            let col = kb.add(p.col, self.w_col0);
            let col_bytes = kb.mul_wide(col, es);
            let g_off = kb.mad_wide(th, wdg * es, col_bytes);
            let mut at = kb.add(out, g_off);
            let tok_stride = kb.mul_wide(heads, wdg * es);
            for (r, vals) in acc.iter().enumerate() {
                if r > 0 {
                    at = kb.add(at, tok_stride);
                }
                let row_r = kb.add(p.row, r as u32);
                let inside = kb.setp(Cmp::Lt, row_r, len_own);
                let limit = row_limit(kb, inside, wdg);
                store_from_f32_masked(kb, dtype, Address::reg(at, 0), vals, col, limit, wdg);
            }
        });
    }

    /// The CTA's d log γ partial: thread 0 sums the threads' sums, in thread order, into
    /// slot `[row][h][ctaid.z]`.
    fn write_partial(&self, kb: &mut KernelBuilder, row: Reg, grid: &GridZ) {
        let (t, st) = (self.t, self.smem.3);
        kb.comment("the CTA's partial: thread 0 sums the threads' sums, in thread order");
        kb.bar_sync(0);
        let mine = kb.mad_lo(t, 4u32, st);
        kb.st(Space::Shared, Address::reg(mine, 0), self.dlog_gamma);
        kb.bar_sync(0);
        let skip = kb.label();
        let other_thread = kb.setp(Cmp::Ne, t, 0u32);
        kb.bra_if(other_thread, false, skip);
        let sum = kb.mov(Ty::F32, 0.0f32);
        kb.for_range(0u32, THREADS, 1, |kb, i| {
            let at = kb_addr(kb, i, st);
            let x = kb.ld(Space::Shared, Ty::F32, Address::reg(at, 0));
            let next = kb.add(sum, x);
            kb.assign(sum, next);
        });
        let rh = kb.mad_lo(row, self.heads, self.h);
        let slot = kb.mad_lo(rh, grid.nz, grid.z);
        let off = kb.mul_wide(slot, 4u32);
        let at = kb.add(self.g.3, off);
        kb.st(Space::Global, Address::reg(at, 0), sum);
        kb.place(skip);
    }

    /// One walked tile `other` at tile step `s`: stage Yᵀ, Z and the band, form Sᵀ, A += Sᵀᵀ Z.
    fn walk_tile(&self, kb: &mut KernelBuilder, other: Reg, s: Reg) {
        let (ds, _, ws, _, bt) = self.dims;
        let (xt, yt, zs, st, acc_at, band) = self.smem;
        let pass = self.pass;
        let tile = self.tile(kb, other);
        kb.bar_sync(0);
        kb.comment("stage Y^T and the Z slice of the walked tile, and its decay band");
        self.stage_score_side(kb, self.g.1, tile, yt, None);
        self.stage_output_side(kb, self.g.2, tile, zs);
        let weighted = pass == Pass::DlogGamma;
        emit_band_table(kb, band, self.t, (bt, weighted), s, self.log2_gamma);
        kb.bar_sync(0);

        kb.comment("S^T[c][r] = ((s X_r) . Y_c) band[d(r, c)]");
        for_each_piece(kb, self.t, THREADS, bt, bt, |kb, p| {
            let acc = zero_acc(kb);
            let a = kb.mad_lo(p.row, 4u32, xt);
            let b = kb.mad_lo(p.col, 4u32, yt);
            accumulate_shared(kb, &acc, a, bt * 4, b, bt * 4, ds);
            // Band index of owned row p.row + r and walked row p.col + c: query − key + B − 1.
            let (from, less) = if pass.owns_keys() {
                (p.col, p.row)
            } else {
                (p.row, p.col)
            };
            let d0 = kb.add(from, bt - 1);
            let d = kb.sub(d0, less);
            let band_at = kb.mad_lo(d, 4u32, band);
            let mut decayed = [[acc[0][0]; 4]; 4];
            for r in 0..4i64 {
                for c in 0..4i64 {
                    let shift = if pass.owns_keys() { c - r } else { r - c };
                    let dec = kb.ld(Space::Shared, Ty::F32, Address::reg(band_at, 4 * shift));
                    decayed[c as usize][r as usize] = kb.mul(acc[r as usize][c as usize], dec);
                }
            }
            let dst_elem = kb.mad_lo(p.col, bt, p.row);
            let dst = kb.mad_lo(dst_elem, 4u32, st);
            store_piece(kb, &decayed, dst, bt * 4);
        });
        kb.bar_sync(0);

        kb.comment("A[r] += sum_{c < L} S^T[c][r] Z_c");
        let len_o = tile.1;
        for_each_piece(kb, self.t, THREADS, bt, ws, |kb, p| {
            let a_elem = kb.mad_lo(p.row, ws, p.col);
            let a_at = kb.mad_lo(a_elem, 4u32, acc_at);
            let acc = load_piece(kb, a_at, ws * 4);
            let a = kb.mad_lo(p.row, 4u32, st);
            let b = kb.mad_lo(p.col, 4u32, zs);
            accumulate_shared(kb, &acc, a, bt * 4, b, ws * 4, len_o);
            store_piece(kb, &acc, a_at, ws * 4);
        });
    }
}
