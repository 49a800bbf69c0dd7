//! SVG plots of the decode results against context length (batch 1, whole model): latency per
//! token, and memory (retention's state against attention's KV cache).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::CliError;
use crate::output_file::write_atomic;

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

/// One labelled line of (context, value) points.
struct Line<'a> {
    label: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

struct Figure<'a> {
    title: &'a str,
    y_desc: &'a str,
    lines: Vec<Line<'a>>,
}

fn render(fig: &Figure<'_>) -> Result<String, String> {
    let points: Vec<(f64, f64)> = fig
        .lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(fig.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (x0 / 1.5..x1 * 1.5).log_scale(),
                (y0 / 2.0..y1 * 2.0).log_scale(),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("context length (tokens)")
            .y_desc(fig.y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        for Line {
            label,
            color,
            points: line,
        } in &fig.lines
        {
            let color = *color;
            chart
                .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
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
        title: "decode latency per token (batch 1, whole model)",
        y_desc: "ms per token",
        lines: vec![
            Line {
                label: "retention",
                color: RED,
                points: series(report, Op::RetentionDecode, ms),
            },
            Line {
                label: "attention (KV cache)",
                color: BLUE,
                points: series(report, Op::AttentionDecode, ms),
            },
        ],
    };
    let memory = Figure {
        title: "decode memory (batch 1, whole model)",
        y_desc: "MiB",
        lines: vec![
            Line {
                label: "retention state",
                color: RED,
                points: series(report, Op::RetentionDecode, |r| mib(r.state_bytes)),
            },
            Line {
                label: "attention KV cache",
                color: BLUE,
                points: series(report, Op::AttentionDecode, |r| mib(r.kv_cache_bytes)),
            },
        ],
    };
    let mut written = Vec::new();
    for (file, mut fig) in FILES.into_iter().zip([latency, memory]) {
        fig.lines.retain(|l| !l.points.is_empty());
        if fig.lines.is_empty() {
            continue;
        }
        let path = dir.join(file);
        let svg = render(&fig).map_err(|e| CliError::write_output(&path, &e))?;
        write_atomic(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
