//! Charts the load tests draw: latency over time, because a person reads a spike or a drift
//! from a picture faster than from percentiles.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// A font for the labels: DejaVu Sans when the machine has it (Debian's fonts-dejavu-core),
/// else the chart is drawn without text.
fn font() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        let Ok(bytes) = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") else {
            return false;
        };
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .is_ok()
    })
}

/// Order-to-fill latency of every filled order (points) and projection lag (line), both in
/// milliseconds, over the run's seconds; written as PNG.
pub fn latency_png(
    path: &Path,
    title: &str,
    fills: &[(f64, f64)],
    lags: &[(f64, f64)],
    seconds: f64,
) -> Result<()> {
    let labels = font();
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let top = fills.iter().chain(lags).map(|s| s.1).fold(1.0f64, f64::max) * 1.1;
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if labels {
        builder.caption(title, ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..seconds.max(1.0), (0.1f64..top).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc("milliseconds (log)")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    // At most 50,000 points: every n-th fill.
    let step = (fills.len() / 50_000).max(1);
    let points = fills
        .iter()
        .step_by(step)
        .map(|&(t, ms)| Circle::new((t, ms.max(0.1)), 1, BLUE.mix(0.3).filled()));
    let series = chart.draw_series(points).map_err(|e| anyhow!("{e}"))?;
    if labels {
        series
            .label("order to fill")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, BLUE.filled()));
    }
    let line = LineSeries::new(
        lags.iter().map(|&(t, ms)| (t, ms.max(0.1))),
        RED.stroke_width(2),
    );
    let lag = chart.draw_series(line).map_err(|e| anyhow!("{e}"))?;
    if labels {
        lag.label("projection lag")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
