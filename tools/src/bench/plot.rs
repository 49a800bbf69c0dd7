//! SVG plots of the decode results against context length at batch 1: the retention or
//! attention layer's time times the layer count (the mixer alone: no projections, no FFN,
//! no weights — `--suite model` measures whole models), and retention's state against
//! attention's KV cache. Axes and ticks are `model::chart`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::{BLUE, RED};

use crate::error::CliError;
use crate::output_file::write_atomic;

use super::model::chart::{Figure, Line, XAxis, render};
use super::report::{Op, Report};

/// The files `--plot DIR` writes.
pub const FILES: [&str; 2] = ["latency_vs_context.svg", "memory_vs_context.svg"];

/// (context, value) points of `op` at batch 1 across the decode and compare suites; a context
/// measured in both keeps the later (compare) value.
fn series(
    report: &Report,
    op: Op,
    value: impl Fn(&super::report::BenchResult) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut by_context = BTreeMap::new();
    for r in report.results.iter().filter(|r| r.op == op && r.batch == 1) {
        if let Some(v) = value(r) {
            by_context.insert(r.context, v);
        }
    }
    by_context.into_iter().map(|(c, v)| (c as f64, v)).collect()
}

/// Write the plots into `dir` (which must exist). Returns the files written, or none when the
/// report has no batch-1 decode results to plot.
///
/// # Errors
/// [`CliError::WriteOutput`] when a plot cannot be drawn or written.
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let layers = report.model.layers as f64;
    let ms = |r: &super::report::BenchResult| Some(r.seconds * layers * 1e3);
    let mib = |b: Option<u64>| b.map(|b| b as f64 / (1u64 << 20) as f64);
    let latency = Figure {
        title: "retention vs attention layer decode × layers (batch 1; mixer only, no weights)"
            .into(),
        x_desc: "context length (tokens)".into(),
        x_axis: XAxis::Tokens,
        y_desc: "ms per token (mixer only)".into(),
        lines: vec![
            Line {
                label: "retention decode".into(),
                color: RED,
                points: series(report, Op::RetentionDecode, ms),
            },
            Line {
                label: "attention decode (KV cache)".into(),
                color: BLUE,
                points: series(report, Op::AttentionDecode, ms),
            },
        ],
    };
    let memory = Figure {
        title: "recurrent state vs KV cache, all layers (batch 1; weights excluded)".into(),
        x_desc: "context length (tokens)".into(),
        x_axis: XAxis::Tokens,
        y_desc: "MiB".into(),
        lines: vec![
            Line {
                label: "retention state".into(),
                color: RED,
                points: series(report, Op::RetentionDecode, |r| mib(r.state_bytes)),
            },
            Line {
                label: "attention KV cache".into(),
                color: BLUE,
                points: series(report, Op::AttentionDecode, |r| mib(r.kv_cache_bytes)),
            },
        ],
    };
    let mut written = Vec::new();
    for (file, fig) in FILES.into_iter().zip([latency, memory]) {
        let path = dir.join(file);
        let Some(svg) = render(&fig).map_err(|e| CliError::write_output(&path, &e))? else {
            continue;
        };
        write_atomic(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
