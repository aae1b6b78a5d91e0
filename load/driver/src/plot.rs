//! SVG charts with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::{
    probe::Sample,
    report::{ScenarioRun, SetupRun},
};

const MIB: f64 = crate::MIB as f64;
pub const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub fn charts(run: &ScenarioRun, dir: &Path) -> Result<(), String> {
    memory(run, &dir.join("memory.svg")).map_err(|e| format!("memory chart: {e}"))?;
    if run.scenario.cpu {
        latency_frontier(run, &dir.join("frontier.svg"))
            .map_err(|e| format!("frontier chart: {e}"))?;
        heartbeat(run, &dir.join("heartbeat.svg")).map_err(|e| format!("heartbeat chart: {e}"))?;
    } else if run.verdict().is_some() {
        frontier(run, &dir.join("frontier.svg")).map_err(|e| format!("frontier chart: {e}"))?;
    }
    if run.scenario.baseline {
        first_phase(run, &dir.join("ordinary.svg"))
            .map_err(|e| format!("first phase chart: {e}"))?;
    }
    for (index, phase) in run.scenario.phases.iter().enumerate() {
        if phase.priority.is_some() {
            served(run, index, &dir.join(format!("{}.svg", phase.label)))
                .map_err(|e| format!("{} chart: {e}", phase.label))?;
        }
    }
    if let Some(admission) = run.setups.iter().find(|s| s.is_admission()) {
        let end = run.scenario.length().as_secs_f64();
        admission_chart(admission, end, &dir.join("admission.svg"))
            .map_err(|e| format!("admission chart: {e}"))?;
        rates(admission, end, &dir.join("rates.svg")).map_err(|e| format!("rates chart: {e}"))?;
    }
    Ok(())
}

pub type ChartResult = Result<(), Box<dyn std::error::Error>>;

pub type Series = (String, RGBColor, Vec<(f64, f64)>);

/// Memory over time: tower-admission, the best safe static N and the largest N of a sweep
/// (or the one N), and no limit.
fn memory(run: &ScenarioRun, path: &Path) -> ChartResult {
    let budget = run.scenario.budget as f64 / MIB;
    let best = run.best_safe_static().map(|s| s.name.as_str());
    let largest_n = run.setups.iter().filter_map(|s| s.tower_n).max();
    let shown = run
        .setups
        .iter()
        .filter(|s| s.tower_n.is_none() || Some(s.name.as_str()) == best || s.tower_n == largest_n);
    let series = shown
        .zip(COLORS)
        .map(|(setup, color)| {
            let points = setup
                .samples
                .iter()
                .map(|s| (s.t, s.memory / MIB))
                .collect();
            (setup.name.clone(), color, points)
        })
        .collect();
    let caption = format!(
        "{}: allocated memory (jemalloc), budget {budget:.0} MiB",
        run.scenario.name
    );
    let end = run.scenario.length().as_secs_f64();
    line_chart(path, &caption, "MiB", end, series, Some(("budget", budget)))
}

fn admission_chart(setup: &SetupRun, end: f64, path: &Path) -> ChartResult {
    let points =
        |value: fn(&Sample) -> f64| setup.samples.iter().map(|s| (s.t, value(s))).collect();
    let series = vec![
        ("in flight".into(), COLORS[0], points(|s| s.in_flight)),
        ("queued".into(), COLORS[1], points(|s| s.queued)),
        (
            "live concurrency limit".into(),
            COLORS[2],
            points(|s| s.limit.min(512.0)),
        ),
    ];
    let caption = "tower-admission: requests in flight, queued, and the live limit";
    line_chart(path, caption, "requests", end, series, None)
}

/// Admitted and rejected per second, from the counters' differences between samples.
fn rates(setup: &SetupRun, end: f64, path: &Path) -> ChartResult {
    let series = vec![
        (
            "admitted".into(),
            COLORS[0],
            per_second(&setup.samples, 1, |s| s.admitted),
        ),
        (
            "rejected".into(),
            COLORS[1],
            per_second(&setup.samples, 1, |s| s.rejected),
        ),
    ];
    let caption = "tower-admission: admitted and rejected per second";
    line_chart(path, caption, "requests/s", end, series, None)
}

/// With a baseline: requests admitted per second (over 1 s windows) by each tower-admission
/// setup, with the whole load and with the first phase alone.
fn first_phase(run: &ScenarioRun, path: &Path) -> ChartResult {
    let series = run
        .setups
        .iter()
        .filter(|s| s.is_admission())
        .zip(COLORS)
        .map(|(setup, color)| {
            // Over 1 s (10 samples), to see through the 100 ms sampling's jitter.
            let points = per_second(&setup.samples, 10, |s| s.admitted);
            (setup.label(), color, points)
        })
        .collect();
    let caption = match run.scenario.phases.get(1) {
        Some(second) if second.start.as_secs() > 0 => format!(
            "{}: requests admitted per second ({} from t={} s)",
            run.scenario.name,
            second.label,
            second.start.as_secs()
        ),
        _ => format!("{}: requests admitted per second", run.scenario.name),
    };
    let end = run.scenario.length().as_secs_f64();
    line_chart(path, &caption, "admitted/s", end, series, None)
}

/// One phase's 2xx per second (in 1 s bins, by arrival) for every setup, from its clients.
fn served(run: &ScenarioRun, phase: usize, path: &Path) -> ChartResult {
    let end = run.scenario.length().as_secs_f64();
    let series = run
        .setups
        .iter()
        .filter(|s| !s.alone)
        .zip(COLORS)
        .map(|(setup, color)| {
            let outcome = setup.outcomes.get(phase);
            let points = per_second_of(outcome.map_or(&[][..], |o| o.ok_at.as_slice()), end);
            (setup.name.clone(), color, points)
        })
        .collect();
    let label = run.scenario.phases[phase].label;
    let caption = format!("{}: {label} requests served per second", run.scenario.name);
    line_chart(path, &caption, "2xx/s", end, series, None)
}

/// Events per second, in 1 s bins, from their times (seconds), up to `end`.
pub fn per_second_of(times: &[f64], end: f64) -> Vec<(f64, f64)> {
    // Whole seconds only: a last, partial one would look like a fall.
    let mut bins = vec![0.0; end.floor() as usize];
    for at in times {
        if let Some(bin) = bins.get_mut(*at as usize) {
            *bin += 1.0;
        }
    }
    bins.into_iter()
        .enumerate()
        .map(|(second, n)| (second as f64 + 1.0, n))
        .collect()
}

/// A counter's rate: its difference over `span` samples, per second of that span.
fn per_second(samples: &[Sample], span: usize, value: fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    samples
        .windows(span + 1)
        .filter(|w| w[span].t > w[0].t)
        .map(|w| {
            let rate = (value(&w[span]) - value(&w[0])).max(0.0) / (w[span].t - w[0].t);
            (w[span].t, rate)
        })
        .collect()
}

/// The static-limit sweep: goodput against peak memory for each N (a line through the
/// points, labelled with N), tower-admission as one point, and the bound as a dashed line.
/// What a frontier chart puts on its x axis.
struct Axis {
    caption: String,
    desc: &'static str,
    /// Each setup's x value.
    x: fn(&SetupRun) -> f64,
    /// A dashed vertical line (the memory bound), if any.
    bound: Option<(&'static str, f64)>,
}

/// Goodput against peak memory, with the bound.
fn frontier(run: &ScenarioRun, path: &Path) -> ChartResult {
    let budget = run.scenario.budget as f64 / MIB;
    let axis = Axis {
        caption: format!(
            "{}: goodput against peak memory (budget {budget:.0} MiB)",
            run.scenario.name
        ),
        desc: "peak allocated memory (MiB)",
        x: |s| s.peak(|x| x.memory) / MIB,
        bound: Some(("budget + one largest request", run.bound() / MIB)),
    };
    frontier_chart(run, path, axis)
}

/// Goodput against the 2xx p99 (the latency frontier).
fn latency_frontier(run: &ScenarioRun, path: &Path) -> ChartResult {
    let axis = Axis {
        caption: format!("{}: goodput against p99 of 2xx answers", run.scenario.name),
        desc: "p99 of 2xx answers (ms)",
        x: |s| s.ok_p99() * 1000.0,
        bound: None,
    };
    frontier_chart(run, path, axis)
}

/// Goodput against `axis`: every static N a point on tower's line, every other setup
/// (tower-admission's, no limit) a point of its own.
fn frontier_chart(run: &ScenarioRun, path: &Path, axis: Axis) -> ChartResult {
    let point = |s: &SetupRun| ((axis.x)(s), s.goodput());
    let mut tower: Vec<(usize, (f64, f64))> = run
        .setups
        .iter()
        .filter_map(|s| Some((s.tower_n?, point(s))))
        .collect();
    tower.sort_by_key(|(n, _)| *n);
    let others: Vec<(&str, (f64, f64))> = run
        .setups
        .iter()
        .filter(|s| s.tower_n.is_none() && !s.alone)
        .map(|s| (s.name.as_str(), point(s)))
        .collect();
    let points = tower
        .iter()
        .map(|(_, p)| *p)
        .chain(others.iter().map(|(_, p)| *p));
    let (right, top) = points
        .chain(axis.bound.map(|(_, x)| (x, 0.0)))
        .filter(|p| p.0.is_finite())
        .fold((1.0_f64, 1.0_f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&axis.caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..right * 1.15, 0.0..top * 1.15)?;
    chart
        .configure_mesh()
        .x_desc(axis.desc)
        .y_desc("goodput (2xx/s)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let color = COLORS[1];
    chart
        .draw_series(LineSeries::new(
            tower.iter().map(|(_, p)| *p),
            color.stroke_width(2),
        ))?
        .label("tower LoadShed + GlobalConcurrencyLimit, one point per N")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(tower.iter().map(|(n, p)| {
        EmptyElement::at(*p)
            + Circle::new((0, 0), 4, color.filled())
            + Text::new(format!("N={n}"), (6, -14), ("sans-serif", 13))
    }))?;
    for (index, (name, p)) in others.iter().enumerate() {
        let (color, size) = if *name == crate::scenario::ADMISSION {
            (COLORS[0], 8)
        } else if name.starts_with(crate::scenario::ADMISSION) {
            (COLORS[3], 5)
        } else {
            (RGBColor(127, 127, 127), 5)
        };
        let offset = 14 + 14 * index as i32;
        chart.draw_series(std::iter::once(
            EmptyElement::at(*p)
                + Circle::new((0, 0), size, color.filled())
                + Text::new(name.to_string(), (10, -offset), ("sans-serif", 13)),
        ))?;
    }
    if let Some((label, x)) = axis.bound {
        chart
            .draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, top * 1.15)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `/health` latency over time: tower-admission, the best heartbeat-safe static N, the
/// largest N and no limit. A probe that failed is drawn at the top.
fn heartbeat(run: &ScenarioRun, path: &Path) -> ChartResult {
    let best = run.best_heartbeat_safe().map(|s| s.name.as_str());
    let largest_n = run.setups.iter().filter_map(|s| s.tower_n).max();
    let shown = run.setups.iter().filter(|s| {
        s.name == crate::scenario::ADMISSION
            || (s.tower_n.is_none() && !s.is_admission())
            || Some(s.name.as_str()) == best
            || s.tower_n == largest_n
    });
    let period = 0.05;
    let series = shown
        .zip(COLORS)
        .map(|(setup, color)| {
            let points = setup
                .health
                .iter()
                .enumerate()
                .map(|(i, h)| (i as f64 * period, h.map_or(1000.0, |h| h * 1000.0)))
                .collect();
            (setup.name.clone(), color, points)
        })
        .collect();
    let caption = format!(
        "{}: /health latency (bypassed), probed every 50 ms",
        run.scenario.name
    );
    let end = run.scenario.length().as_secs_f64();
    let target = crate::report::HEARTBEAT_SAFE * 1000.0;
    line_chart(path, &caption, "ms", end, series, Some(("25 ms", target)))
}

/// Lines over time (seconds on x), with an optional dashed `limit` line.
pub fn line_chart(
    path: &Path,
    caption: &str,
    y_desc: &str,
    end: f64,
    series: Vec<Series>,
    limit: Option<(&str, f64)>,
) -> ChartResult {
    xy_chart(path, caption, "seconds", y_desc, end, series, limit)
}

/// Lines of `y` against `x` from 0 to `end`, with an optional dashed `limit` line.
pub fn xy_chart(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    end: f64,
    series: Vec<Series>,
    limit: Option<(&str, f64)>,
) -> ChartResult {
    let top = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .chain(limit.map(|(_, value)| value))
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
        .x_desc(x_desc)
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
    if let Some((label, limit)) = limit {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, limit), (end, limit)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?
            .label(label)
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
