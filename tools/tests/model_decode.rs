//! The model suite's whole-model decode step and prefill on a tiny model (2 layers, width 16)
//! equal a straightforward f64 implementation of the same layers written here, for both
//! architectures; memory figures are measured (the ledger and the state pool), RetNet's flat
//! in context and the Transformer's growing linearly with it.
//!
//! Tolerance: the model computes in f32 (GEMMs accumulate in f32); with activations of order
//! one, each output must be within 2e-4·(1 + |reference|).

#[allow(
    dead_code,
    unused_imports,
    reason = "the tests use part of the model's API"
)]
#[path = "../src/bench/model/net/mod.rs"]
mod net;

use net::ledger::Tracked;
use net::weights::LayerWeights;
use net::{Kind, Ledger, NetConfig, RetNet, Transformer, fill};

const TOL: f64 = 2e-4;
const EPS: f64 = 1e-6;

fn tiny() -> NetConfig {
    NetConfig::custom(2, 8, 16, 2).unwrap()
}

fn f64s(t: &Tracked<f32>) -> Vec<f64> {
    t.data().iter().map(|&x| f64::from(x)).collect()
}

/// Row vector x `[k]` times W `[k, n]`.
fn vec_mat(x: &[f64], w: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for (i, xi) in x.iter().enumerate() {
        for (o, wij) in out.iter_mut().zip(&w[i * n..(i + 1) * n]) {
            *o += xi * wij;
        }
    }
    out
}

fn rms_norm(x: &[f64], gain: &[f64]) -> Vec<f64> {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + EPS).sqrt();
    x.iter().zip(gain).map(|(v, g)| v * inv * g).collect()
}

fn gelu(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
}

/// `x += W_down · gelu(RMSNorm(x) · W_up)`.
fn ffn(x: &mut [f64], w: &LayerWeights<f32>, ffn: usize) {
    let d = x.len();
    let h: Vec<f64> = vec_mat(&rms_norm(x, &f64s(&w.norm_ffn)), &f64s(&w.w_up), ffn)
        .into_iter()
        .map(gelu)
        .collect();
    for (xi, yi) in x.iter_mut().zip(vec_mat(&h, &f64s(&w.w_down), d)) {
        *xi += yi;
    }
}

fn random_rows(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut x = vec![0f32; rows * d];
    fill::uniform(&mut x, seed, 1.0);
    x
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= TOL * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w} (error {err:.2e})"
        );
    }
    // The comparison means something only if the outputs are not all tiny.
    assert!(
        want.iter().any(|w| w.abs() > 0.1),
        "{what}: degenerate reference"
    );
}

/// One RetNet layer's reference for one sequence: state `[H][K·V]` updated in place.
fn retnet_layer(cfg: &NetConfig, w: &LayerWeights<f32>, x: &mut [f64], state: &mut [Vec<f64>]) {
    let (h, dk, dv, d) = (cfg.heads, cfg.dk, cfg.dv, cfg.d_model);
    let (kw, vw) = (h * dk, h * dv);
    let p = vec_mat(
        &rms_norm(x, &f64s(&w.norm_mix)),
        &f64s(&w.w_in),
        cfg.projection_width(),
    );
    let (q, k, v, g) = (
        &p[..kw],
        &p[kw..2 * kw],
        &p[2 * kw..2 * kw + vw],
        &p[2 * kw + vw..],
    );
    let scale = (dk as f64).powf(-0.5);
    let mut gated = vec![0.0; vw];
    for head in 0..h {
        let gamma = 1.0 - 2f64.powi(-5 - head as i32);
        let s = &mut state[head];
        let mut o = vec![0.0; dv];
        for a in 0..dk {
            for b in 0..dv {
                let e = &mut s[a * dv + b];
                *e = gamma * *e + k[head * dk + a] * v[head * dv + b];
                o[b] += scale * q[head * dk + a] * *e;
            }
        }
        let inv = 1.0 / (o.iter().map(|x| x * x).sum::<f64>() / dv as f64 + EPS).sqrt();
        for b in 0..dv {
            let gv = g[head * dv + b];
            gated[head * dv + b] = o[b] * inv * gv / (1.0 + (-gv).exp());
        }
    }
    for (xi, yi) in x.iter_mut().zip(vec_mat(&gated, &f64s(&w.w_out), d)) {
        *xi += yi;
    }
    ffn(x, w, cfg.ffn);
}

#[test]
fn retnet_decode_steps_equal_the_f64_layers() {
    let cfg = tiny();
    let ledger = Ledger::new(1 << 30);
    let mut model = RetNet::<f32>::new(&cfg, &ledger, 5).unwrap();
    let (batch, d) = (2, cfg.d_model);
    model.start(batch).unwrap();
    let mut states = vec![vec![vec![vec![0.0; cfg.dk * cfg.dv]; cfg.heads]; cfg.layers]; batch];
    for step in 0..3 {
        let mut x = random_rows(batch, d, 100 + step);
        let mut want: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        model.step(&mut x).unwrap();
        for (b, row) in want.chunks_mut(d).enumerate() {
            for (l, w) in model.layers().iter().enumerate() {
                retnet_layer(&cfg, w, row, &mut states[b][l]);
            }
        }
        assert_close(&x, &want, &format!("retnet step {step}"));
    }
}

#[test]
fn transformer_decode_step_equals_the_f64_layers() {
    let cfg = tiny().transformer_twin();
    assert_eq!((cfg.heads, cfg.dk, cfg.ffn), (2, 8, 64));
    assert_eq!(cfg.params(), tiny().params(), "same parameter count");
    let ledger = Ledger::new(1 << 30);
    let mut model = Transformer::<f32>::new(&cfg, &ledger, 6).unwrap();
    let (batch, context, d, h, hd) = (2, 5, cfg.d_model, cfg.heads, cfg.dk);
    model.start(batch, context, 7).unwrap();
    let caches: Vec<(Vec<f64>, Vec<f64>)> = (0..cfg.layers)
        .map(|l| {
            let c = model.cache(l).unwrap();
            (f64s(&c.k), f64s(&c.v))
        })
        .collect();
    let mut x = random_rows(batch, d, 8);
    let mut want: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    model.step(&mut x).unwrap();
    let scale = (hd as f64).powf(-0.5);
    for (b, row) in want.chunks_mut(d).enumerate() {
        for (l, w) in model.layers().iter().enumerate() {
            let p = vec_mat(&rms_norm(row, &f64s(&w.norm_mix)), &f64s(&w.w_in), 3 * d);
            let mut o = vec![0.0; d];
            for head in 0..h {
                let at = |t: usize| ((b * h + head) * context + t) * hd;
                let key = |t: usize| -> &[f64] {
                    if t + 1 == context {
                        &p[d + head * hd..d + (head + 1) * hd]
                    } else {
                        &caches[l].0[at(t)..at(t) + hd]
                    }
                };
                let value = |t: usize| -> &[f64] {
                    if t + 1 == context {
                        &p[2 * d + head * hd..2 * d + (head + 1) * hd]
                    } else {
                        &caches[l].1[at(t)..at(t) + hd]
                    }
                };
                let q = &p[head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (0..context)
                    .map(|t| scale * q.iter().zip(key(t)).map(|(a, c)| a * c).sum::<f64>())
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                for (t, s) in scores.iter().enumerate() {
                    let pt = (s - max).exp() / z;
                    for (oi, vi) in o[head * hd..(head + 1) * hd].iter_mut().zip(value(t)) {
                        *oi += pt * vi;
                    }
                }
            }
            for (xi, yi) in row.iter_mut().zip(vec_mat(&o, &f64s(&w.w_out), d)) {
                *xi += yi;
            }
            ffn(row, w, cfg.ffn);
        }
    }
    assert_close(&x, &want, "transformer step");
}

/// Softmax attention of one query over `keys`/`values` (one head), scale K^(-1/2).
fn attend(q: &[f64], keys: &[&[f64]], values: &[&[f64]]) -> Vec<f64> {
    let scale = (q.len() as f64).powf(-0.5);
    let scores: Vec<f64> = keys
        .iter()
        .map(|k| scale * q.iter().zip(*k).map(|(a, c)| a * c).sum::<f64>())
        .collect();
    let max = scores.iter().copied().fold(f64::MIN, f64::max);
    let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    let mut o = vec![0.0; values[0].len()];
    for (s, v) in scores.iter().zip(values) {
        for (oi, vi) in o.iter_mut().zip(*v) {
            *oi += (s - max).exp() / z * vi;
        }
    }
    o
}

#[test]
fn transformer_prefill_equals_the_f64_causal_layers_and_fills_the_cache() {
    let cfg = tiny().transformer_twin();
    let ledger = Ledger::new(1 << 30);
    let mut model = Transformer::<f32>::new(&cfg, &ledger, 6).unwrap();
    let (tokens, d, h, hd) = (70, cfg.d_model, cfg.heads, cfg.dk);
    model.start(1, tokens, 7).unwrap();
    let mut x = random_rows(tokens, d, 9);
    let mut rows: Vec<Vec<f64>> = x
        .chunks(d)
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    model.prefill(&mut x, tokens).unwrap();
    for (l, w) in model.layers().iter().enumerate() {
        let p: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| vec_mat(&rms_norm(r, &f64s(&w.norm_mix)), &f64s(&w.w_in), 3 * d))
            .collect();
        let cache = model.cache(l).unwrap();
        let head_of = |part: usize, t: usize, head: usize| {
            &p[t][part * d + head * hd..part * d + (head + 1) * hd]
        };
        // The cache, head-major [1, H, T, hd]: every prompt token's key and value.
        let head_major = |part: usize| -> Vec<f64> {
            (0..h)
                .flat_map(|head| (0..tokens).flat_map(move |t| head_of(part, t, head).to_vec()))
                .collect()
        };
        assert_close(cache.k.data(), &head_major(1), "cached keys");
        assert_close(cache.v.data(), &head_major(2), "cached values");
        for (t, row) in rows.iter_mut().enumerate() {
            let mut o = Vec::with_capacity(d);
            for head in 0..h {
                let keys: Vec<&[f64]> = (0..=t).map(|u| head_of(1, u, head)).collect();
                let values: Vec<&[f64]> = (0..=t).map(|u| head_of(2, u, head)).collect();
                o.extend(attend(head_of(0, t, head), &keys, &values));
            }
            for (xi, yi) in row.iter_mut().zip(vec_mat(&o, &f64s(&w.w_out), d)) {
                *xi += yi;
            }
            ffn(row, w, cfg.ffn);
        }
    }
    assert_close(&x, &rows.concat(), "transformer prefill");
    // A prefill needs the matching start.
    model.start(2, tokens, 7).unwrap();
    assert!(matches!(
        model.prefill(&mut x, tokens),
        Err(net::ModelError::Config(_))
    ));
}

#[test]
fn retnet_chunkwise_prefill_equals_the_f64_recurrent_layers() {
    let cfg = tiny();
    let ledger = Ledger::new(1 << 30);
    let mut model = RetNet::<f32>::new(&cfg, &ledger, 5).unwrap();
    let (tokens, d) = (13, cfg.d_model);
    model.start(1).unwrap();
    let mut x = random_rows(tokens, d, 10);
    let mut want: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    model.prefill(&mut x, tokens, 4).unwrap(); // a chunk that does not divide the prompt
    let mut states = vec![vec![vec![0.0; cfg.dk * cfg.dv]; cfg.heads]; cfg.layers];
    for row in want.chunks_mut(d) {
        for (l, w) in model.layers().iter().enumerate() {
            retnet_layer(&cfg, w, row, &mut states[l]);
        }
    }
    assert_close(&x, &want, "retnet prefill");
}

/// The measured figures of one decode step of `batch` sequences at `context` tokens.
fn measure(
    ledger: &Ledger,
    step: &mut dyn FnMut(usize) -> Result<(), net::ModelError>,
    context: usize,
) -> net::ledger::MemoryFigures {
    ledger.reset_peaks();
    step(context).unwrap();
    ledger.figures()
}

#[test]
fn retnet_memory_is_flat_in_context_and_the_transformers_grows_linearly() {
    let cfg = tiny();
    let twin = cfg.transformer_twin();
    let (batch, d) = (2, cfg.d_model);
    let contexts = [256, 512, 1024, 2048];

    let ledger = Ledger::new(1 << 30);
    let mut retnet = RetNet::<f32>::new(&cfg, &ledger, 1).unwrap();
    let weights = ledger.figures().weights;
    assert_eq!(
        weights,
        cfg.params() as u64 * 4,
        "weights: every parameter, f32"
    );
    let mut run = |_context: usize| {
        retnet.stop();
        retnet.start(batch)?;
        let mut x = ledger.tensor::<f32>(Kind::Activations, "x", &[batch, d])?;
        retnet.step(x.data_mut())
    };
    let r: Vec<_> = contexts
        .iter()
        .map(|&c| measure(&ledger, &mut run, c))
        .collect();
    // The state pool's high-water mark: layers·H·K·V f32 per sequence (a power of two, so
    // its size class adds nothing).
    let state = (batch * cfg.layers * cfg.heads * cfg.dk * cfg.dv * 4) as u64;
    for f in &r {
        assert_eq!(f.cache, state);
        assert_eq!(f.weights, weights);
        assert!(f.activations > 0);
        assert_eq!(*f, r[0], "RetNet memory must not depend on context");
    }

    let ledger = Ledger::new(1 << 30);
    let mut transformer = Transformer::<f32>::new(&twin, &ledger, 2).unwrap();
    let mut run = |context: usize| {
        transformer.stop();
        transformer.start(batch, context, 3)?;
        let mut x = ledger.tensor::<f32>(Kind::Activations, "x", &[batch, d])?;
        transformer.step(x.data_mut())
    };
    let t: Vec<_> = contexts
        .iter()
        .map(|&c| measure(&ledger, &mut run, c))
        .collect();
    for (f, &c) in t.iter().zip(&contexts) {
        // Keys and values of every layer, every sequence, every token.
        assert_eq!(
            f.cache,
            (2 * twin.layers * batch * twin.heads * c * twin.dk * 4) as u64
        );
        assert_eq!(f.activations, t[0].activations);
    }
    let growth: Vec<u64> = t.windows(2).map(|w| w[1].total - w[0].total).collect();
    assert_eq!(growth[1], 2 * growth[0], "linear in context");
    assert_eq!(growth[2], 2 * growth[1], "linear in context");
    assert!(
        t[0].total > r[0].total,
        "a 256-token KV cache already outweighs the state"
    );
}

#[test]
fn a_point_past_the_limit_is_out_of_memory_and_the_model_stays_usable() {
    let twin = tiny().transformer_twin();
    let ledger = Ledger::new(1 << 20);
    let mut model = Transformer::<f32>::new(&twin, &ledger, 2).unwrap();
    let err = model.start(4, 1 << 16, 3).unwrap_err();
    assert!(err.is_out_of_memory(), "{err}");
    model.start(1, 16, 3).unwrap();
    let mut x = vec![0.5f32; twin.d_model];
    model.step(&mut x).unwrap();
    assert!(x.iter().all(|v| v.is_finite()));
}
