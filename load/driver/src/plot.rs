//! SVG charts with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::{
    probe::Sample,
    report::{Run, SetupRun},
};

const MIB: f64 = (1 << 20) as f64;
const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

pub fn charts(run: &Run, dir: &Path) -> Result<(), String> {
    memory(run, &dir.join("memory.svg")).map_err(|e| format!("memory chart: {e}"))?;
    if let Some(admission) = run.setups.iter().find(|s| s.is_admission()) {
        let end = run.scenario.length().as_secs_f64();
        admission_chart(admission, end, &dir.join("admission.svg"))
            .map_err(|e| format!("admission chart: {e}"))?;
        rates(admission, end, &dir.join("rates.svg")).map_err(|e| format!("rates chart: {e}"))?;
    }
    Ok(())
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

fn memory(run: &Run, path: &Path) -> ChartResult {
    let budget = run.scenario.budget as f64 / MIB;
    let series = run
        .setups
        .iter()
        .zip(COLORS)
        .map(|(setup, color)| {
            let points = setup
                .samples
                .iter()
                .map(|s| (s.t, s.memory / MIB))
                .collect();
            (setup.name, color, points)
        })
        .collect();
    let caption = format!(
        "{}: allocated memory (jemalloc), budget {budget:.0} MiB",
        run.scenario.name
    );
    let end = run.scenario.length().as_secs_f64();
    line_chart(path, &caption, "MiB", end, series, Some(budget))
}

fn admission_chart(setup: &SetupRun, end: f64, path: &Path) -> ChartResult {
    let points =
        |value: fn(&Sample) -> f64| setup.samples.iter().map(|s| (s.t, value(s))).collect();
    let series = vec![
        ("in flight", COLORS[0], points(|s| s.in_flight)),
        ("queued", COLORS[1], points(|s| s.queued)),
    ];
    let caption = "tower-admission: requests in flight and queued";
    line_chart(path, caption, "requests", end, series, None)
}

/// Admitted and rejected per second, from the counters' differences between samples.
fn rates(setup: &SetupRun, end: f64, path: &Path) -> ChartResult {
    let per_second = |value: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        setup
            .samples
            .windows(2)
            .filter(|w| w[1].t > w[0].t)
            .map(|w| {
                (
                    w[1].t,
                    (value(&w[1]) - value(&w[0])).max(0.0) / (w[1].t - w[0].t),
                )
            })
            .collect()
    };
    let series = vec![
        ("admitted", COLORS[0], per_second(|s| s.admitted)),
        ("rejected", COLORS[1], per_second(|s| s.rejected)),
    ];
    let caption = "tower-admission: admitted and rejected per second";
    line_chart(path, caption, "requests/s", end, series, None)
}

/// Lines over time (seconds on x), with an optional dashed `limit` line.
fn line_chart(
    path: &Path,
    caption: &str,
    y_desc: &str,
    end: f64,
    series: Vec<Series>,
    limit: Option<f64>,
) -> ChartResult {
    let top = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .chain(limit)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (900, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .draw()?;
    for (label, color, points) in series {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    if let Some(limit) = limit {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, limit), (end, limit)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label("budget")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
