//! The model suite's SVG plots: memory against context (batch 1), throughput and latency
//! against batch (one line per architecture and context), all whole-model measurements.

use std::path::{Path, PathBuf};

use crate::error::CliError;
use crate::output_file::write_atomic;

use super::chart::{Figure, Line, PALETTE, XAxis, render};
use super::net::Arch;
use super::report::{ModelReport, ModelRow, Sweep};

/// The files `--plot DIR` writes for the model suite.
pub const FILES: [&str; 3] = [
    "memory_vs_length.svg",
    "throughput_vs_batch.svg",
    "latency_vs_batch.svg",
];

const GIB: f64 = (1u64 << 30) as f64;

fn label(arch: Arch) -> &'static str {
    match arch {
        Arch::Retnet => "RetNet",
        Arch::Transformer => "Transformer",
    }
}

/// Measured (x, y) points of the rows `keep` selects.
fn points(
    rows: &[ModelRow],
    keep: impl Fn(&ModelRow) -> bool,
    x: impl Fn(&ModelRow) -> f64,
    y: impl Fn(&ModelRow) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.fits && keep(r))
        .filter_map(|r| y(r).map(|v| (x(r), v)))
        .filter(|&(_, v)| v > 0.0)
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p
}

fn against_batch(report: &ModelReport, y: fn(&ModelRow) -> Option<f64>) -> Vec<Line> {
    let mut lines = Vec::new();
    for (i, arch) in [Arch::Retnet, Arch::Transformer].into_iter().enumerate() {
        for (j, &context) in report.grid.batch_contexts.iter().enumerate() {
            // Where the line ends because the next batch did not fit the memory limit.
            let limit = report
                .summary
                .max_batch
                .iter()
                .find(|m| m.context == context)
                .and_then(|m| match arch {
                    Arch::Retnet => m.retnet.filter(|_| m.retnet_ran_out),
                    Arch::Transformer => m.transformer.filter(|_| m.transformer_ran_out),
                })
                .map_or_else(String::new, |b| format!(" (out of memory above {b})"));
            lines.push(Line {
                label: format!("{} at {} tokens{limit}", label(arch), context),
                color: PALETTE[(2 * j + i) % PALETTE.len()],
                points: points(
                    &report.rows,
                    |r| r.arch == arch && r.sweep == Sweep::Batch && r.context == context,
                    |r| r.batch as f64,
                    y,
                ),
            });
        }
    }
    lines
}

/// Write the plots into `dir` (which must exist); returns the files written.
///
/// # Errors
/// [`CliError::WriteOutput`] when a plot cannot be drawn or written.
pub fn write(report: &ModelReport, dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let model = &report.summary.model;
    let memory = Figure {
        title: format!("{model}: measured memory at batch 1 ({})", report.dtype),
        x_desc: "context length (tokens)".into(),
        x_axis: XAxis::Tokens,
        y_desc: "GiB".into(),
        lines: [Arch::Retnet, Arch::Transformer]
            .into_iter()
            .enumerate()
            .map(|(i, arch)| Line {
                label: match arch {
                    Arch::Retnet => "RetNet: weights + state + activations".into(),
                    Arch::Transformer => "Transformer: weights + KV cache + activations".into(),
                },
                color: PALETTE[i],
                points: points(
                    &report.rows,
                    |r| r.arch == arch && r.sweep == Sweep::Context,
                    |r| r.context as f64,
                    |r| r.total_bytes.map(|b| b as f64 / GIB),
                ),
            })
            .collect(),
    };
    let throughput = Figure {
        title: format!("{model}: decode throughput, whole model ({})", report.dtype),
        x_desc: "batch (sequences)".into(),
        x_axis: XAxis::Count,
        y_desc: "tokens/s".into(),
        lines: against_batch(report, |r| r.tokens_per_s),
    };
    let latency = Figure {
        title: format!(
            "{model}: decode latency per token, whole model ({})",
            report.dtype
        ),
        x_desc: "batch (sequences)".into(),
        x_axis: XAxis::Count,
        y_desc: "ms per token".into(),
        lines: against_batch(report, |r| r.latency_ms),
    };
    let mut written = Vec::new();
    for (file, fig) in FILES.into_iter().zip([memory, throughput, latency]) {
        let path = dir.join(file);
        let Some(svg) = render(&fig).map_err(|e| CliError::write_output(&path, &e))? else {
            continue;
        };
        write_atomic(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
