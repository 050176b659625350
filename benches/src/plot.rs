//! `--plot PATH.svg`: tally's (and tally-epoll's) throughput ratios as a
//! horizontal bar chart (log scale, so that 2× faster and 2× slower are the
//! same length), with each ratio's min-max over repetition pairs as a
//! whisker, the line of parity at 1, and the target, where there is
//! one, as a red tick.

use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::report::{Report, TARGETS};

/// One bar: a label, the median ratio, its spread, and its target.
struct Bar {
    label: String,
    median: f64,
    min: f64,
    max: f64,
    target: Option<f64>,
}

fn bars(report: &Report) -> Vec<Bar> {
    let mut out = Vec::new();
    for w in &report.workloads {
        for (key, s) in w.ratios.iter().filter(|(k, _)| w.shows_ratio(k)) {
            let target =
                TARGETS.iter().find(|(n, k, _)| *n == w.name && k == key).map(|(_, _, t)| *t);
            out.push(Bar {
                label: format!("{} {key}", w.name),
                median: s.median,
                min: s.min,
                max: s.max,
                target,
            });
        }
    }
    // The first workload on top.
    out.reverse();
    out
}

fn plot_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plot: {e}"))
}

/// Draws the chart into `path`.
///
/// # Errors
///
/// The file cannot be written, or there is nothing to draw.
pub fn draw(path: &Path, report: &Report) -> io::Result<()> {
    let bars = bars(report);
    if bars.is_empty() {
        return Err(plot_err("no ratios to draw"));
    }
    let n = bars.len();
    let lowest = bars.iter().flat_map(|b| [b.min, b.target.unwrap_or(1.0)]).fold(1.0, f64::min);
    let highest = bars.iter().flat_map(|b| [b.max, b.target.unwrap_or(1.0)]).fold(1.0, f64::max);
    let (lo, hi) = (lowest / 2.0, highest * 2.0);
    let height = 110 + 30 * n as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let caption = format!(
        "tally (or tally-epoll) throughput / peer throughput (log scale; right of 1 = tally faster) - {} {}",
        report.mode, report.date
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(250)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(plot_err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ratio")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let color = if b.target.is_some_and(|t| b.median < t) {
                RGBColor(230, 140, 40)
            } else {
                RGBColor(60, 120, 200)
            };
            let mut r = Rectangle::new(
                [(lo, SegmentValue::Exact(i)), (b.median, SegmentValue::Exact(i + 1))],
                color.filled(),
            );
            r.set_margin(5, 5, 0, 0);
            r
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            PathElement::new(
                vec![(b.min, SegmentValue::CenterOf(i)), (b.max, SegmentValue::CenterOf(i))],
                BLACK.stroke_width(1),
            )
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
            let t = b.target?;
            Some(PathElement::new(
                vec![(t, SegmentValue::Exact(i)), (t, SegmentValue::Exact(i + 1))],
                RED.stroke_width(3),
            ))
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(1),
        )))
        .map_err(plot_err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{:.2}", b.median),
                (b.max.max(b.median) * 1.05, SegmentValue::CenterOf(i)),
                ("sans-serif", 13).into_font(),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
