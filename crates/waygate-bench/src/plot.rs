//! `--plot FILE.png`: latency percentiles per second (left) and the latency CDF (right).
//!
//! Text is drawn with plotters' `ab_glyph` backend from a TrueType font read at run time
//! (`WAYGATE_BENCH_FONT`, else DejaVu Sans / Liberation Sans from the usual system paths), so
//! the build needs no font libraries.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::BenchError;
use crate::report::Report;

const FONT: &str = "waygate-bench";

type Pick = fn(&crate::report::TimelinePoint) -> u64;

fn register_font() -> Result<(), BenchError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut candidates: Vec<String> = std::env::var("WAYGATE_BENCH_FONT").into_iter().collect();
        candidates.extend(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            ]
            .map(String::from),
        );
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // Registered once per process; plotters needs 'static bytes.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font found (set WAYGATE_BENCH_FONT to a .ttf file; Debian: fonts-dejavu-core)".to_owned())
    })
    .clone()
    .map_err(BenchError::Plot)
}

fn plot_err<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Plot(e.to_string())
}

/// Writes a 1200×480 PNG with the timeline and the CDF of `report`.
pub fn write_png(report: &Report, path: &Path) -> Result<(), BenchError> {
    register_font()?;
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let title = format!("waygate bench {} — {}", report.workload, report.target);
    let root = root.titled(&title, (FONT, 18)).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);

    // Percentiles per second.
    let tl = &report.timeline;
    let t_max = tl.last().map(|p| p.t).unwrap_or(1.0).max(1.0);
    let y_max = tl.iter().map(|p| p.max).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("latency per second (µs)", (FONT, 15))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the measured phase")
        .label_style((FONT, 12))
        .draw()
        .map_err(plot_err)?;
    let series: [(&str, RGBColor, Pick); 3] =
        [("p50", BLUE, |p| p.p50), ("p99", RED, |p| p.p99), ("max", RGBColor(120, 120, 120), |p| p.max)];
    for (name, color, get) in series {
        chart
            .draw_series(LineSeries::new(tl.iter().filter(|p| p.count > 0).map(|p| (p.t, get(p) as f64)), color))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;

    // CDF with the tail stretched: x = -log10(1 - q).
    let nines = |pct: f64| -(1.0 - pct / 100.0).max(1e-4).log10();
    let cdf_max = report.cdf.iter().map(|c| c.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("latency CDF (µs)", (FONT, 15))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4f64, 0f64..cdf_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(5)
        .x_label_formatter(&|x| format!("{}", 100.0 * (1.0 - 10f64.powf(-*x))))
        .label_style((FONT, 12))
        .draw()
        .map_err(plot_err)?;
    chart.draw_series(LineSeries::new(report.cdf.iter().map(|&(p, us)| (nines(p), us)), BLUE)).map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
