//! One line of the verify table per spec.

use std::fmt::Write as _;

use kernel_gen::KernelSpec;
use kernel_gen::ptxas::PtxasInfo;

use crate::bench::duration;

/// How a spec fared.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Emulated and within `tolerance` of the reference.
    Passed {
        /// The output tolerance it was held to.
        tolerance: f64,
    },
    /// Emitted, parsed (and assembled) but not emulated; the reason says why.
    NotEmulated(String),
    /// Something failed; the reason says what.
    Failed(String),
}

impl Status {
    /// The status column.
    pub fn text(&self) -> String {
        match self {
            Status::Passed { tolerance } => format!("ok (≤ {tolerance:.0e})"),
            Status::NotEmulated(why) => format!("ok, not emulated: {why}"),
            Status::Failed(why) => format!("FAIL: {why}"),
        }
    }
}

/// What verify found for one spec.
#[derive(Debug, Clone)]
pub struct Row {
    /// The spec's name.
    pub slug: String,
    /// ptxas figures, when ptxas ran.
    pub ptxas: Option<PtxasInfo>,
    /// Dynamic shared memory of the emulated launch, bytes.
    pub dynamic_smem: Option<u32>,
    /// Worst error against the reference (output or state).
    pub error: Option<f64>,
    /// Predicted time of the emulated launch on the named GPU (a roofline model, not a
    /// measurement).
    pub predicted: Option<(&'static str, f64)>,
    /// The verdict.
    pub status: Status,
}

impl Row {
    /// A row for `spec` with nothing checked yet.
    pub fn new(spec: &KernelSpec) -> Self {
        Self {
            slug: spec.slug(),
            ptxas: None,
            dynamic_smem: None,
            error: None,
            predicted: None,
            status: Status::NotEmulated("not checked".into()),
        }
    }

    /// This row, failed with `why`.
    pub fn fail(mut self, why: impl Into<String>) -> Self {
        self.status = Status::Failed(why.into());
        self
    }
}

fn cell<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or_else(|| "-".into(), f)
}

/// The table.
pub fn render(rows: &[Row]) -> String {
    let header = [
        "spec",
        "registers",
        "spills (B)",
        "shared static/dyn (B)",
        "max error vs ref",
        "predicted time",
        "status",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.slug.clone(),
                cell(r.ptxas, |p| p.registers.to_string()),
                cell(r.ptxas, |p| {
                    (p.spill_store_bytes + p.spill_load_bytes).to_string()
                }),
                format!(
                    "{}/{}",
                    cell(r.ptxas, |p| p.shared_bytes.to_string()),
                    cell(r.dynamic_smem, |d| d.to_string())
                ),
                cell(r.error, |e| format!("{e:.2e}")),
                cell(r.predicted, |(gpu, s)| format!("{} ({gpu})", duration(s))),
                r.status.text(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, c: &[&str]| {
        let text: Vec<String> = c
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| {
                if i == 0 || i + 1 == c.len() {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut out, &header);
    for c in &cells {
        line(&mut out, &c.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}
