//! SVG charts with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Run, SetupRun};

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

fn memory(run: &Run, path: &Path) -> ChartResult {
    let budget = run.scenario.budget as f64 / MIB;
    let end = run.scenario.length().as_secs_f64();
    let peak = run
        .setups
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.memory / MIB))
        .fold(budget, f64::max);
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: allocated memory (jemalloc), budget {budget:.0} MiB",
                run.scenario.name
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..peak * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("MiB")
        .draw()?;
    for (setup, color) in run.setups.iter().zip(COLORS) {
        chart
            .draw_series(LineSeries::new(
                setup.samples.iter().map(|s| (s.t, s.memory / MIB)),
                color.stroke_width(2),
            ))?
            .label(setup.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, budget), (end, budget)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?
        .label("budget")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn admission_chart(setup: &SetupRun, end: f64, path: &Path) -> ChartResult {
    let top = setup
        .samples
        .iter()
        .map(|s| s.in_flight.max(s.queued))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "tower-admission: requests in flight and queued",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("requests")
        .draw()?;
    for (label, color, value) in [
        (
            "in flight",
            COLORS[0],
            (|s: &crate::probe::Sample| s.in_flight) as fn(&_) -> f64,
        ),
        ("queued", COLORS[1], |s| s.queued),
    ] {
        chart
            .draw_series(LineSeries::new(
                setup.samples.iter().map(|s| (s.t, value(s))),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Admitted and rejected per second, from the counters' differences between samples.
fn rates(setup: &SetupRun, end: f64, path: &Path) -> ChartResult {
    let per_second = |value: fn(&crate::probe::Sample) -> f64| -> Vec<(f64, f64)> {
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
    let admitted = per_second(|s| s.admitted);
    let rejected = per_second(|s| s.rejected);
    let top = admitted
        .iter()
        .chain(&rejected)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "tower-admission: admitted and rejected per second",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("requests/s")
        .draw()?;
    for (label, color, series) in [
        ("admitted", COLORS[0], admitted),
        ("rejected", COLORS[1], rejected),
    ] {
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
