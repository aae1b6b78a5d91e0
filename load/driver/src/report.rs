//! Tables, CSVs and `report.md`.

use std::{fmt::Write as _, path::Path, time::Duration};

use crate::{oha::Outcome, probe::Sample, scenario::Scenario};

const MIB: f64 = crate::MIB as f64;

/// The documented bound for the memory check: peak allocated bytes at most 10 % plus 16 MiB
/// over the budget, for requests that allocate within about 1 MiB of their reservation.
pub fn memory_bound(budget: f64) -> f64 {
    budget * 1.10 + 16.0 * MIB
}

pub struct SetupRun {
    pub name: String,
    /// N, for tower's limit.
    pub tower_n: Option<usize>,
    /// Run with the ordinary phases alone (a baseline for slow clients).
    pub alone: bool,
    pub outcomes: Vec<Outcome>,
    pub samples: Vec<Sample>,
    pub health: Vec<Option<f64>>,
}

impl SetupRun {
    /// Whether this is tower-admission (or a variant of it).
    pub fn is_admission(&self) -> bool {
        self.name.starts_with(crate::scenario::ADMISSION)
    }

    /// The name, marked when the run had the ordinary load alone.
    pub fn label(&self) -> String {
        if self.alone {
            format!("{} (ordinary load alone)", self.name)
        } else {
            self.name.clone()
        }
    }

    /// 2xx per second of the first phase, the load the others disturb.
    fn first_goodput(&self) -> f64 {
        self.outcomes.first().map_or(0.0, |o| o.goodput())
    }

    fn load_seconds(&self) -> f64 {
        self.outcomes
            .iter()
            .map(|o| o.seconds)
            .fold(0.0, f64::max)
            .max(1e-9)
    }

    /// The requests answered 2xx, over all phases.
    pub fn served(&self) -> u64 {
        self.outcomes.iter().map(Outcome::served).sum()
    }

    pub fn goodput(&self) -> f64 {
        self.served() as f64 / self.load_seconds()
    }

    pub fn count(&self, status: u16) -> u64 {
        self.outcomes.iter().map(|o| o.count(|s| s == status)).sum()
    }

    pub fn no_answer(&self) -> u64 {
        self.outcomes.iter().map(|o| o.errors).sum()
    }

    pub fn peak(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        self.samples.iter().map(f).fold(0.0, f64::max)
    }

    pub fn health_p99(&self) -> Option<f64> {
        let mut ok: Vec<f64> = self.health.iter().flatten().copied().collect();
        ok.sort_by(f64::total_cmp);
        percentile(&ok, 0.99)
    }

    /// Whether `/health` p99 stayed within [`HEARTBEAT_SAFE`].
    pub fn heartbeat_safe(&self) -> bool {
        self.health_p99().is_some_and(|p99| p99 <= HEARTBEAT_SAFE)
    }

    /// The 2xx p99 of the first phase (the load the scenario is about).
    pub fn ok_p99(&self) -> f64 {
        self.outcomes.first().map_or(f64::NAN, |o| o.ok_p99)
    }

    pub fn health_failures(&self) -> usize {
        self.health.iter().filter(|h| h.is_none()).count()
    }

    /// In flight, queued and charged bytes at the last sample (admission only).
    pub fn end_state(&self) -> Option<(f64, f64, f64)> {
        let last = self.samples.last()?;
        self.is_admission()
            .then_some((last.in_flight, last.queued, last.reserved))
    }
}

impl ScenarioRun {
    /// Peak allocated memory that holds the budget: the budget plus one largest request.
    pub fn bound(&self) -> f64 {
        (self.scenario.budget + self.scenario.largest_request) as f64
    }

    pub fn admission(&self) -> Option<&SetupRun> {
        self.setups
            .iter()
            .find(|s| s.name == crate::scenario::ADMISSION && !s.alone)
    }

    /// With a baseline: each setup's goodput of the first phase against that phase alone,
    /// with the target tower-admission must meet (0.95 for critical requests, 0.90 for
    /// ordinary ones beside slow clients).
    pub fn baseline_verdict(&self) -> Option<String> {
        if !self.scenario.baseline {
            return None;
        }
        let first = self.scenario.phases.first()?;
        let target = if first.priority.is_some() { 0.95 } else { 0.90 };
        let lines: Vec<String> = self
            .setups
            .iter()
            .filter(|s| !s.alone)
            .filter_map(|with| {
                let alone = self.setups.iter().find(|s| s.alone && s.name == with.name)?;
                let ratio = with.first_goodput() / alone.first_goodput().max(1e-9);
                let target = match (with.name == crate::scenario::ADMISSION, ratio >= target) {
                    (false, _) => String::new(),
                    (true, true) => format!(" (target ≥ {target:.2}: met)"),
                    (true, false) => format!(" (target ≥ {target:.2}: MISSED)"),
                };
                let cut_off = if first.priority.is_some() {
                    String::new()
                } else {
                    format!(
                        "; bodies cut off (request / response): {:.0} / {:.0}",
                        with.peak(|s| s.cut_off_request),
                        with.peak(|s| s.cut_off_response)
                    )
                };
                Some(format!(
                    "- {}: {} load {:.0} 2xx/s with the rest, {:.0} alone: {ratio:.2}{target}{cut_off}",
                    with.name,
                    first.label,
                    with.first_goodput(),
                    alone.first_goodput(),
                ))
            })
            .collect();
        Some(lines.join("\n"))
    }

    /// The static limit with the best goodput among those whose peak stays within the bound.
    pub fn best_safe_static(&self) -> Option<&SetupRun> {
        self.setups
            .iter()
            .filter(|s| s.tower_n.is_some() && s.peak(|x| x.memory) <= self.bound())
            .max_by(|a, b| a.goodput().total_cmp(&b.goodput()))
    }

    /// The headline of a sweep: tower-admission against the best safe static N, and whether
    /// it is on or above the frontier (no static N with a peak as low does better).
    pub fn verdict(&self) -> Option<String> {
        if self.scenario.sweep.is_empty() {
            return None;
        }
        if self.scenario.cpu {
            return self.cpu_verdict();
        }
        let admission = self.admission()?;
        let (goodput, peak) = (admission.goodput(), admission.peak(|s| s.memory));
        let held = if peak <= self.bound() {
            "within"
        } else {
            "OVER"
        };
        let mut text = format!(
            "tower-admission: {goodput:.0} 2xx/s at a peak of {} MiB, {held} the bound of budget + one largest request ({} MiB).",
            mib(peak),
            mib(self.bound())
        );
        match self.best_safe_static() {
            Some(best) => {
                let _ = write!(
                    text,
                    " Best safe static N = {}: {:.0} 2xx/s at {} MiB; ratio {:.2}x.",
                    best.tower_n.unwrap_or(0),
                    best.goodput(),
                    mib(best.peak(|s| s.memory)),
                    goodput / best.goodput().max(1e-9)
                );
            }
            None => text.push_str(" No static N held the bound."),
        }
        let beaten: Vec<String> = self
            .setups
            .iter()
            .filter(|s| {
                s.tower_n.is_some() && s.peak(|x| x.memory) <= peak && s.goodput() > goodput
            })
            .map(|s| format!("N = {}", s.tower_n.unwrap_or(0)))
            .collect();
        if beaten.is_empty() {
            text.push_str(" On or above the frontier: no static N with a peak as low did better.");
        } else {
            let _ = write!(
                text,
                " BELOW the frontier: {} did better at no more memory.",
                beaten.join(", ")
            );
        }
        Some(text)
    }
}

/// `/health` p99 at most this keeps the heartbeat: a static N is heartbeat-safe below it.
pub const HEARTBEAT_SAFE: f64 = 0.025;

impl ScenarioRun {
    /// The static limit with the most goodput among those whose `/health` p99 stays within
    /// [`HEARTBEAT_SAFE`].
    pub fn best_heartbeat_safe(&self) -> Option<&SetupRun> {
        self.setups
            .iter()
            .filter(|s| s.tower_n.is_some() && s.heartbeat_safe())
            .max_by(|a, b| a.goodput().total_cmp(&b.goodput()))
    }

    /// The headline of a CPU sweep: the heartbeat, goodput against the best heartbeat-safe
    /// static N, the 2xx p99 against the lowest of the static N that serve at least 60 % of
    /// the most any setup serves, and the latency frontier.
    fn cpu_verdict(&self) -> Option<String> {
        let admission = self.admission()?;
        let (goodput, p99) = (admission.goodput(), admission.ok_p99());
        let health = admission.health_p99().unwrap_or(f64::INFINITY);
        let met = |ok: bool| if ok { "met" } else { "MISSED" };
        let mut text = format!(
            "tower-admission: {goodput:.0} 2xx/s, 2xx p99 {}, /health p99 {} (target ≤ {}: {}).",
            ms(p99),
            ms(health),
            ms(HEARTBEAT_SAFE),
            met(health <= HEARTBEAT_SAFE)
        );
        match self.best_heartbeat_safe() {
            Some(best) => {
                let ratio = goodput / best.goodput().max(1e-9);
                let _ = write!(
                    text,
                    " Best heartbeat-safe static N = {}: {:.0} 2xx/s; ratio {ratio:.2}x (target ≥ 1: {}).",
                    best.tower_n.unwrap_or(0),
                    best.goodput(),
                    met(ratio >= 1.0)
                );
            }
            None => text.push_str(" No static N kept the heartbeat."),
        }
        let most = self
            .setups
            .iter()
            .map(SetupRun::goodput)
            .fold(0.0, f64::max);
        let lowest = self
            .setups
            .iter()
            .filter(|s| s.tower_n.is_some() && s.goodput() >= 0.6 * most)
            .min_by(|a, b| a.ok_p99().total_cmp(&b.ok_p99()));
        if let Some(lowest) = lowest {
            let ratio = p99 / lowest.ok_p99().max(1e-9);
            let _ = write!(
                text,
                " Lowest 2xx p99 among static N serving ≥ 60 % of the most ({most:.0}/s): N = {}, {}; ratio {ratio:.2}x (target ≤ 3: {}).",
                lowest.tower_n.unwrap_or(0),
                ms(lowest.ok_p99()),
                met(ratio <= 3.0)
            );
        }
        let beaten: Vec<String> = self
            .setups
            .iter()
            .filter(|s| {
                s.tower_n.is_some()
                    && s.heartbeat_safe()
                    && s.ok_p99() <= p99
                    && s.goodput() > 1.05 * goodput
            })
            .map(|s| format!("N = {}", s.tower_n.unwrap_or(0)))
            .collect();
        if beaten.is_empty() {
            text.push_str(
                " On or above the latency frontier: no heartbeat-safe static N with a p99 as low served more than 1.05x as much.",
            );
        } else {
            let _ = write!(
                text,
                " BELOW the latency frontier: {} served more at a p99 as low.",
                beaten.join(", ")
            );
        }
        Some(text)
    }
}

pub struct ScenarioRun {
    pub scenario: Scenario,
    pub setups: Vec<SetupRun>,
    pub took: Duration,
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q).round() as usize])
}

fn ms(seconds: f64) -> String {
    if seconds.is_nan() {
        "–".into()
    } else {
        format!("{:.1}", seconds * 1000.0)
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.0}", bytes / MIB)
}

/// The comparison table of one scenario, in Markdown.
pub fn table(run: &ScenarioRun) -> String {
    let budget = run.scenario.budget as f64;
    let mut out = format!(
        "### {} ({:.0} s)\n\n{}.\n\n",
        run.scenario.name,
        run.took.as_secs_f64(),
        run.scenario.demonstrates
    );
    if let Some(verdict) = run.verdict() {
        let _ = writeln!(out, "**{verdict}**\n");
    }
    if let Some(verdict) = run.baseline_verdict() {
        let _ = writeln!(out, "{verdict}\n");
    }
    if let Some(classes) = classes_table(run) {
        let _ = writeln!(out, "{classes}\n");
    }
    out.push_str("| setup | goodput (2xx/s) | per phase | 503 | 503 per 2xx | 413 | no answer | p50 / p99 of 2xx (ms) | job p50 / p99 (ms) | /health p99 (ms) | peak memory (MiB) | budget (MiB) | peak RSS (MiB) | after the load |\n");
    out.push_str("|---|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---|\n");
    for setup in &run.setups {
        let latencies: Vec<String> = setup
            .outcomes
            .iter()
            .map(|o| format!("{} / {}", ms(o.ok_p50), ms(o.ok_p99)))
            .collect();
        let jobs: Vec<String> = setup
            .outcomes
            .iter()
            .map(|o| format!("{} / {}", ms(o.job_p50), ms(o.job_p99)))
            .collect();
        let ok = setup.served();
        let per_phase: Vec<String> = setup
            .outcomes
            .iter()
            .map(|o| format!("{:.0}", o.goodput()))
            .collect();
        let health = match (setup.health_p99(), setup.health_failures()) {
            (Some(p99), 0) => ms(p99),
            (Some(p99), failed) => format!("{} ({failed} failed)", ms(p99)),
            (None, failed) => format!("– ({failed} failed)"),
        };
        let after = match setup.end_state() {
            Some((0.0, 0.0, 0.0)) => "0 in flight, 0 queued, 0 B charged".to_owned(),
            Some((f, q, r)) => format!("{f} in flight, {q} queued, {r} B charged"),
            None => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            setup.label(),
            setup.goodput(),
            per_phase.join("; "),
            setup.count(503),
            setup.count(503) as f64 / ok.max(1) as f64,
            setup.count(413),
            setup.no_answer(),
            latencies.join("; "),
            jobs.join("; "),
            health,
            mib(setup.peak(|s| s.memory)),
            if setup.is_admission() {
                mib(budget)
            } else {
                "–".into()
            },
            mib(setup.peak(|s| s.rss)),
            after,
        );
    }
    let phases: Vec<String> = run
        .scenario
        .phases
        .iter()
        .map(|p| {
            format!(
                "`{}` ({}): {} connections for {} s from t={} s{}{}",
                p.path,
                p.label,
                p.connections,
                p.duration.as_secs(),
                p.start.as_secs(),
                p.timeout
                    .map(|t| format!(", giving up after {} ms", t.as_millis()))
                    .unwrap_or_default(),
                p.post_json
                    .map(|b| format!(", POST {} MiB JSON", b >> 20))
                    .unwrap_or_default(),
            ) + &p
                .backoff
                .map(|b| match p.honors_retry_after {
                    true => ", waiting as long as Retry-After says after a 503".to_owned(),
                    false => format!(", backing off {} ms after a 503", b.as_millis()),
                })
                .unwrap_or_default()
                + &p.priority
                    .map(|p| format!(", x-priority: {p}"))
                    .unwrap_or_default()
        })
        .collect();
    let env: Vec<String> = run
        .scenario
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = write!(
        out,
        "\nLoad: {}. tower-admission: `{}`. Bound on peak memory: budget + {} MiB (one largest request). Per phase: goodput, and latencies, of each load phase, in that order.\n",
        phases.join("; "),
        env.join(" "),
        run.scenario.largest_request >> 20,
    );
    out
}

/// With priorities: each setup's 2xx per second and 503s per 2xx, by priority (phase), and
/// the 503s per 2xx over all: what a served request costs in refusals.
fn classes_table(run: &ScenarioRun) -> Option<String> {
    let phases = &run.scenario.phases;
    if phases.iter().all(|p| p.priority.is_none()) {
        return None;
    }
    let per_served = |refused: u64, served: u64| refused as f64 / served.max(1) as f64;
    let heads: Vec<String> = phases
        .iter()
        .map(|p| format!("{}: 2xx/s, 503s per 2xx", p.label))
        .collect();
    let mut out = format!(
        "| setup | {} | all: 503s per 2xx |\n|---|{}---:|\n",
        heads.join(" | "),
        "---:|".repeat(phases.len())
    );
    for setup in run.setups.iter().filter(|s| !s.alone) {
        let cells: Vec<String> = setup
            .outcomes
            .iter()
            .map(|o| {
                let served = o.served();
                format!(
                    "{:.0}, {:.2}",
                    served as f64 / o.seconds.max(1e-9),
                    per_served(o.count(|s| s == 503), served)
                )
            })
            .collect();
        let served = setup.served();
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} |",
            setup.name,
            cells.join(" | "),
            per_served(setup.count(503), served)
        );
    }
    Some(out)
}

/// What should fail the run: leaks, and (for the steady and smoke runs, whose requests
/// allocate 1 MiB against a 64 KiB reservation) memory beyond the documented bound.
pub fn problems(run: &ScenarioRun) -> Vec<String> {
    let mut problems = Vec::new();
    for setup in run.setups.iter().filter(|s| s.is_admission()) {
        match setup.end_state() {
            Some((0.0, 0.0, 0.0)) => {}
            Some(state) => problems.push(format!(
                "{}: after the load, (in flight, queued, charged bytes) = {state:?}, not zero",
                run.scenario.name
            )),
            None => problems.push(format!("{}: no metrics were sampled", run.scenario.name)),
        }
        let budget = run.scenario.budget as f64;
        let peak = setup.peak(|s| s.memory);
        if matches!(run.scenario.name, "steady" | "smoke") && peak > memory_bound(budget) {
            problems.push(format!(
                "{}: peak memory {} MiB exceeds the bound {} MiB (budget {} MiB)",
                run.scenario.name,
                mib(peak),
                mib(memory_bound(budget)),
                mib(budget)
            ));
        }
        // In `disconnect` every client gives up before its answer, by design.
        if run.scenario.name != "disconnect" && setup.goodput() <= 0.0 {
            problems.push(format!("{}: no 2xx answers at all", run.scenario.name));
        }
    }
    problems
}

/// Writes the `/health` probes, one a line in the order they were sent (one every
/// `period_ms`, or as soon as the one before answered): its number and how long it took
/// (empty: no answer).
pub fn write_health(path: &Path, period_ms: u64, health: &[Option<f64>]) -> Result<(), String> {
    let mut csv = format!("probe (every {period_ms} ms),latency_seconds\n");
    for (i, latency) in health.iter().enumerate() {
        let latency = latency.map_or(String::new(), |l| format!("{l:.6}"));
        let _ = writeln!(csv, "{i},{latency}");
    }
    std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn write_samples(path: &Path, samples: &[Sample]) -> Result<(), String> {
    let mut csv = String::from(
        "t_seconds,memory_bytes,budget_bytes,in_flight,queued,charged_bytes,admitted_total,rejected_total,rss_bytes,concurrency_limit,held_bytes,connections\n",
    );
    for s in samples {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{},{},{},{},{},{},{},{},{}",
            s.t,
            s.memory,
            s.budget,
            s.in_flight,
            s.queued,
            s.reserved,
            s.admitted,
            s.rejected,
            s.rss,
            s.limit,
            s.held,
            s.connections
        );
    }
    std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn write(out: &Path, runs: &[ScenarioRun]) -> Result<(), String> {
    let mut md = String::from("# tower-admission under load\n\n");
    let _ = writeln!(
        md,
        "Each scenario runs against three builds of the same axum service, one after the other on \
         this machine ({} cores): tower-admission (`examples/server.rs`), tower's `LoadShed` + \
         `GlobalConcurrencyLimit` wired globally (`examples/compare.rs`, `LIMITER=tower`), and no \
         limit (`LIMITER=none`). Load comes from `oha`; a second client probes `/health` every \
         100 ms on its own connection; `/metrics` and the server's RSS are sampled every 100 ms. \
         \"no answer\" counts requests the client gave up on or `oha` aborted at the end of its \
         run. Scenarios with a sweep run tower's limit at each N; their clients (`load/driver/src/client.rs`) \
         back off after a 503, the same for every setup. Memory is jemalloc's allocated bytes as the server samples them.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for run in runs {
        md.push_str(&table(run));
        let name = run.scenario.name;
        if run.verdict().is_some() {
            let _ = writeln!(md, "\n![frontier]({name}/frontier.svg)");
        }
        if run.scenario.baseline {
            let _ = writeln!(md, "\n![the first phase's load]({name}/ordinary.svg)");
        }
        for phase in run.scenario.phases.iter().filter(|p| p.priority.is_some()) {
            let label = phase.label;
            let _ = writeln!(md, "\n![{label} requests served]({name}/{label}.svg)");
        }
        let _ = writeln!(
            md,
            "\n![memory]({name}/memory.svg)\n\n![in flight and queued]({name}/admission.svg)\n\n![admitted and rejected per second]({name}/rates.svg)\n\nSamples: `{name}/samples-*.csv` (0 = tower-admission, then tower's limits in the table's order, last = no limit); oha's JSON: `{name}/oha-*.json`.\n"
        );
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.md"), md).map_err(|e| e.to_string())
}
