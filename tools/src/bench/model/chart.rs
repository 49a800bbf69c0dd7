//! Log–log line charts as SVG with clean ticks: the x axis at powers of two (labelled 1k, 2k,
//! 4k … for token counts, 1, 2, 4 … for batches), the y axis at 1-2-5 steps, every label
//! drawn once (plotters' own log key points overlap: "6000.07000.08000.0…").

use plotters::prelude::*;

/// How x values are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    /// Token counts: 1k = 1024.
    Tokens,
    /// Plain counts (batch).
    Count,
}

/// One labelled line of (x, y) points.
pub struct Line {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// A chart: title, axis descriptions, lines.
pub struct Figure {
    /// Caption.
    pub title: String,
    /// What x is.
    pub x_desc: String,
    /// How x is labelled.
    pub x_axis: XAxis,
    /// What y is.
    pub y_desc: String,
    /// The lines (empty ones are dropped).
    pub lines: Vec<Line>,
}

/// Colours of successive lines.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(200, 30, 30),
    RGBColor(30, 80, 200),
    RGBColor(230, 130, 20),
    RGBColor(40, 150, 60),
    RGBColor(140, 60, 170),
    RGBColor(90, 90, 90),
];

/// Powers of two in [lo, hi], every n-th kept so there are at most `max`.
pub fn powers_of_two(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut t = 2f64.powi(lo.max(1e-300).log2().ceil() as i32);
    while t <= hi * (1.0 + 1e-9) {
        ticks.push(t);
        t *= 2.0;
    }
    thin(ticks, max)
}

/// 1, 2, 5 × 10^k in [lo, hi] (every 1…9 × 10^k when that gives fewer than four ticks);
/// only powers of ten when that would pass `max`.
pub fn one_two_five(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    let ticks = steps(lo, hi, &[1.0, 2.0, 5.0]);
    let mut ticks = if ticks.len() < 4 {
        steps(lo, hi, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    } else {
        ticks
    };
    if ticks.len() > max {
        ticks.retain(|t| (t.log10() - t.log10().round()).abs() < 1e-9);
    }
    thin(ticks, max)
}

/// `mantissas` × 10^k in [lo, hi].
fn steps(lo: f64, hi: f64, mantissas: &[f64]) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powi(lo.max(1e-300).log10().floor() as i32);
    while decade <= hi {
        for &m in mantissas {
            let t = decade * m;
            if t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9) {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

fn thin(ticks: Vec<f64>, max: usize) -> Vec<f64> {
    let step = ticks.len().div_ceil(max.max(1)).max(1);
    ticks.into_iter().step_by(step).collect()
}

/// `1k`, `32k`, `1M` for multiples of 1024, else the integer.
pub fn token_label(x: f64) -> String {
    let n = x.round() as u64;
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{}k", n >> 10)
    } else {
        n.to_string()
    }
}

/// A 1-2-5 tick value without trailing zeros: `0.05`, `2`, `500`, `20000`.
pub fn value_label(y: f64) -> String {
    if y >= 1.0 {
        format!("{y:.0}")
    } else {
        let digits = (-y.log10().floor()) as usize;
        format!("{y:.digits$}")
    }
}

/// The chart as an SVG document; `None` when no line has points.
///
/// # Errors
/// plotters' drawing error, as text.
pub fn render(fig: &Figure) -> Result<Option<String>, String> {
    let lines: Vec<&Line> = fig.lines.iter().filter(|l| !l.points.is_empty()).collect();
    let points: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let (xr, yr) = ((x0 / 1.4)..(x1 * 1.4), (y0 / 2.0)..(y1 * 2.0));
    let x_ticks = powers_of_two(xr.start, xr.end, 10);
    let y_ticks = one_two_five(yr.start, yr.end, 10);
    let x_axis = fig.x_axis;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&fig.title, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(
                xr.log_scale().with_key_points(x_ticks),
                yr.log_scale().with_key_points(y_ticks),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(&fig.x_desc)
            .y_desc(&fig.y_desc)
            .x_label_formatter(&|x| match x_axis {
                XAxis::Tokens => token_label(*x),
                XAxis::Count => format!("{}", x.round() as u64),
            })
            .y_label_formatter(&|y| value_label(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for line in lines {
            let color = line.color;
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.filled())),
                )
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
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_clean_and_few() {
        assert_eq!(
            powers_of_two(700.0, 50_000.0, 10),
            vec![1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0]
        );
        assert_eq!(powers_of_two(1.0, 1024.0, 6).len(), 6);
        assert_eq!(
            one_two_five(0.3, 30.0, 10),
            vec![0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        );
        assert_eq!(one_two_five(0.001, 1e6, 10).len(), 10);
        assert_eq!(
            one_two_five(1.2, 10.8, 10),
            vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
        );
        let labels: Vec<String> = [1024.0, 32768.0, 1_048_576.0, 512.0]
            .into_iter()
            .map(token_label)
            .collect();
        assert_eq!(labels, ["1k", "32k", "1M", "512"]);
        assert_eq!(value_label(0.05), "0.05");
        assert_eq!(value_label(20000.0), "20000");
    }
}
