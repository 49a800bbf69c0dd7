//! The model suite's report as text: the rows as an aligned table (or Markdown), the
//! Figure-1 ratios and where each model ran out of memory.

use std::fmt::Write as _;

use super::report::{ModelReport, ModelRow, Summary};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

fn mib(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), |b| format!("{:.1}", b as f64 / MIB))
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn cells(r: &ModelRow) -> Vec<String> {
    vec![
        format!("{:?}", r.sweep).to_lowercase(),
        r.arch.name().into(),
        r.batch.to_string(),
        r.context.to_string(),
        num(
            r.latency_ms,
            if r.latency_ms.is_some_and(|m| m < 1.0) {
                4
            } else {
                1
            },
        ),
        num(r.tokens_per_s, 2),
        mib(r.weights_bytes),
        mib(r.cache_bytes),
        mib(r.activation_bytes),
        mib(r.total_bytes),
        if r.fits {
            r.note.clone().unwrap_or_default()
        } else {
            "out of memory".into()
        },
    ]
}

const HEAD: [&str; 11] = [
    "sweep",
    "arch",
    "batch",
    "context",
    "ms/token",
    "tokens/s",
    "weights MiB",
    "cache MiB",
    "act. MiB",
    "total MiB",
    "note",
];

/// The ratios in one sentence, and the batch limits.
pub fn summary_lines(s: &Summary) -> String {
    let x = |r: Option<f64>| r.map_or_else(|| "not measured".into(), |r| format!("{r:.2}x"));
    let b = |b: Option<usize>| b.map_or_else(|| "none".into(), |b| b.to_string());
    let mut out = format!(
        "Figure 1 at {} / {} tokens (Transformer over RetNet): memory {} (batch 1), \
         throughput {} (RetNet batch {} vs Transformer batch {}), latency {} (batch 1)\n",
        s.model,
        s.context,
        x(s.memory_ratio),
        x(s.throughput_ratio),
        b(s.retnet_best_batch),
        b(s.transformer_best_batch),
        x(s.latency_ratio),
    );
    let limit = |largest: Option<usize>, ran_out: bool| match (largest, ran_out) {
        (_, true) => format!("{} (out of memory beyond)", b(largest)),
        (Some(l), false) => format!("{l} (the batch cap; more would fit)"),
        (None, false) => "not measured".into(),
    };
    for m in &s.max_batch {
        let _ = writeln!(
            out,
            "largest batch at {} tokens: RetNet {}, Transformer {}",
            m.context,
            limit(m.retnet, m.retnet_ran_out),
            limit(m.transformer, m.transformer_ran_out),
        );
    }
    let ms = |t: Option<f64>| t.map_or_else(|| "not measured".into(), |t| format!("{t:.1} ms"));
    let _ = writeln!(
        out,
        "time to first token, {}-token prompt: RetNet {} (chunkwise), Transformer {} (causal \
         attention); ratio {}",
        s.prefill_tokens,
        ms(s.retnet_ttft_ms),
        ms(s.transformer_ttft_ms),
        x(s.ttft_ratio),
    );
    out
}

/// The report as a table, Markdown pipes when `markdown`.
pub fn render(report: &ModelReport, markdown: bool) -> String {
    let rows: Vec<Vec<String>> = report.rows.iter().map(cells).collect();
    let mut out = format!(
        "model suite: {} ({}), {} on {}, memory limit {:.2} GiB\n\n",
        report.summary.model,
        report.dtype,
        report
            .models
            .iter()
            .map(|m| format!(
                "{} {:.2}B params",
                m.config.arch.name(),
                m.params as f64 / 1e9
            ))
            .collect::<Vec<_>>()
            .join(", "),
        report.device,
        report.memory_limit_bytes as f64 / GIB,
    );
    if markdown {
        let _ = writeln!(out, "| {} |", HEAD.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(HEAD.len()));
        for r in &rows {
            let _ = writeln!(out, "| {} |", r.join(" | "));
        }
    } else {
        let widths: Vec<usize> = (0..HEAD.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .max()
                    .unwrap_or(0)
                    .max(HEAD[i].len())
            })
            .collect();
        let line = |r: &[&str]| {
            r.iter()
                .zip(&widths)
                .enumerate()
                // Numbers right-aligned; the note, last, left-aligned.
                .map(|(i, (c, w))| {
                    if i + 1 == HEAD.len() {
                        (*c).to_string()
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let _ = writeln!(out, "{}", line(&HEAD));
        for r in &rows {
            let refs: Vec<&str> = r.iter().map(String::as_str).collect();
            let _ = writeln!(out, "{}", line(&refs));
        }
    }
    out.push('\n');
    out.push_str(&summary_lines(&report.summary));
    out
}
