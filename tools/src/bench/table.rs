//! The report as text: an aligned terminal table or Markdown, with the retention-vs-attention
//! ratios under the results.

use std::fmt::Write as _;

use super::report::{BenchResult, Op, Report, Suite};

/// How tables are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Space-aligned columns.
    Terminal,
    /// GitHub Markdown pipes.
    Markdown,
}

/// `1.23 ms`, `45.6 µs`, `1.20 s`.
pub fn duration(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else {
        format!("{:.1} µs", seconds * 1e6)
    }
}

/// `512 KiB`, `96.0 MiB`, `1.50 GiB`.
pub fn bytes(b: u64) -> String {
    let b = b as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

fn opt(x: Option<String>) -> String {
    x.unwrap_or_else(|| "-".into())
}

fn suite_name(s: Suite) -> &'static str {
    match s {
        Suite::Decode => "decode",
        Suite::Prefill => "prefill",
        Suite::Compare => "compare",
    }
}

/// Whole-model latency per new token of one sequence.
fn model_latency(r: &BenchResult, layers: usize) -> f64 {
    r.seconds * layers as f64 / r.tokens as f64
}

fn result_rows(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "suite",
        "op",
        "batch",
        "context",
        "tokens",
        "chunk",
        "per layer",
        "per token (model)",
        "tokens/s (model)",
        "GB/s",
        "% copy",
        "GFLOP/s",
        "% gemm",
        "state (model)",
        "KV cache (model)",
    ];
    let l = &report.limits;
    let rows = report
        .results
        .iter()
        .map(|r| {
            vec![
                suite_name(r.suite).to_string(),
                r.op.name().to_string(),
                r.batch.to_string(),
                r.context.to_string(),
                r.tokens.to_string(),
                opt(r.chunk.map(|c| c.to_string())),
                duration(r.seconds),
                duration(model_latency(r, report.model.layers)),
                format!("{:.1}", r.tokens_per_s),
                opt(r.gbps.map(|g| format!("{g:.1}"))),
                opt(r.gbps.map(|g| format!("{:.0}%", 100.0 * g / l.copy_gbps))),
                opt(r.gflops.map(|g| format!("{g:.1}"))),
                opt(r
                    .gflops
                    .zip(l.gemm_gflops)
                    .map(|(g, peak)| format!("{:.0}%", 100.0 * g / peak))),
                opt(r.state_bytes.map(bytes)),
                opt(r.kv_cache_bytes.map(bytes)),
            ]
        })
        .collect();
    (header, rows)
}

/// Retention against attention at each compared context: (context, retention, attention).
pub fn compare_pairs(report: &Report) -> Vec<(usize, &BenchResult, &BenchResult)> {
    let of = |op: Op, ctx: usize| {
        report
            .results
            .iter()
            .find(|r| r.suite == Suite::Compare && r.op == op && r.context == ctx)
    };
    let mut contexts: Vec<usize> = report
        .results
        .iter()
        .filter(|r| r.suite == Suite::Compare)
        .map(|r| r.context)
        .collect();
    contexts.dedup();
    contexts
        .into_iter()
        .filter_map(|c| Some((c, of(Op::RetentionDecode, c)?, of(Op::AttentionDecode, c)?)))
        .collect()
}

fn ratio_rows(report: &Report) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let header = vec![
        "context",
        "retention per token",
        "attention per token",
        "latency ratio (attn/ret)",
        "throughput ratio (ret/attn)",
        "retention state",
        "attention KV cache",
        "memory ratio (attn/ret)",
    ];
    let layers = report.model.layers;
    let rows = compare_pairs(report)
        .into_iter()
        .map(|(c, ret, att)| {
            let (sb, kb) = (
                ret.state_bytes.unwrap_or(0),
                att.kv_cache_bytes.unwrap_or(0),
            );
            vec![
                c.to_string(),
                duration(model_latency(ret, layers)),
                duration(model_latency(att, layers)),
                format!("{:.2}x", att.seconds / ret.seconds),
                format!("{:.2}x", ret.tokens_per_s / att.tokens_per_s),
                bytes(sb),
                bytes(kb),
                if sb == 0 {
                    "-".into()
                } else {
                    format!("{:.2}x", kb as f64 / sb as f64)
                },
            ]
        })
        .collect();
    (header, rows)
}

fn draw(out: &mut String, style: Style, header: &[&str], rows: &[Vec<String>]) {
    match style {
        Style::Markdown => {
            let _ = writeln!(out, "| {} |", header.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
            for row in rows {
                let _ = writeln!(out, "| {} |", row.join(" | "));
            }
        }
        Style::Terminal => {
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<&str>| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:>w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let _ = writeln!(out, "{}", line(header.to_vec()));
            for row in rows {
                let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
            }
        }
    }
}

/// The whole report as text in `style`.
pub fn render(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let heading = |out: &mut String, level: &str, text: &str| match style {
        Style::Markdown => {
            let _ = writeln!(out, "{level} {text}\n");
        }
        Style::Terminal => {
            let _ = writeln!(out, "{text}");
        }
    };
    heading(
        &mut out,
        "#",
        &format!(
            "retention bench: {} on {}",
            report.model.describe(),
            report.device
        ),
    );
    let dtype = report.results.first().map_or("-", |r| r.dtype);
    let gemm = report
        .limits
        .gemm_gflops
        .map_or("none measured".to_string(), |g| format!("{g:.1} GFLOP/s"));
    let source = if report.limits.predicted {
        "limits of the emulator's GPU model"
    } else {
        "limits measured in this run"
    };
    let timing = if report.results.iter().any(|r| r.predicted) {
        "; seconds are PREDICTED by the PTX emulator, not measured"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "inputs {dtype}, f32 state; {source}: copy {:.1} GB/s, gemm {gemm}{timing}\n",
        report.limits.copy_gbps
    );
    let (h, rows) = result_rows(report);
    if rows.is_empty() {
        let _ = writeln!(out, "no results\n");
    } else {
        draw(&mut out, style, &h, &rows);
        let _ = writeln!(out);
    }
    let (h, rows) = ratio_rows(report);
    if !rows.is_empty() {
        heading(
            &mut out,
            "##",
            "retention vs attention KV cache (batch 1, mixer only: retention or attention × layers, no weights)",
        );
        draw(&mut out, style, &h, &rows);
        let _ = writeln!(out);
    }
    if !report.notes.is_empty() {
        heading(&mut out, "##", "notes");
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
