//! `explore`: workloads nobody here chose. Each seed draws one (routes, sizes, hold times,
//! parses, clients, a classifier or not, the budget), which runs against the layer's
//! defaults and a sweep of four static limits, and is checked against what the README and
//! the guide promise. A seed that fails is shrunk (fewer routes, fewer clients) to the
//! smallest workload that still fails; `EXPLORE_SEEDS=17` runs one again.
//!
//! `EXPLORE_SEEDS` (`1-40` by default, or a list: `3,17`), `EXPLORE_SECONDS` (6 by default).
//! With `EXPLORE_REPORT_ONLY=1` failures are reported and the run still succeeds (CI's
//! smoke, on a loaded machine where goodput and latency mean little).

use std::{fmt::Write as _, path::Path, time::Duration};

use crate::{
    MIB, ServerSetup,
    client::Draw,
    plot,
    report::SetupRun,
    run_setup,
    scenario::{ADMISSION, Phase, Scenario},
};

/// What a request holds besides its work while it waits or runs (its connection's buffers).
const CONNECTION_BYTES: u64 = 28 << 10;
/// A parsed JSON tree takes up to this many times its text (see `examples/common`).
const TREE_PER_BODY_BYTE: u64 = 16;
/// The promises, as thresholds.
const GOODPUT_RATIO: f64 = 0.95;
const HEALTH_P99: f64 = 0.025;

/// One route of a workload and the clients that drive it.
#[derive(Debug, Clone)]
enum Route {
    /// `GET /work`: allocates `kib` and holds it `ms`, sizes drawn per request by weight.
    Work(Vec<(u64, u64, u32)>),
    /// `POST /ingest` of a JSON body of `kib` KiB, parsed (CPU, and a tree it reserves).
    Ingest(u64),
}

/// A workload drawn from a seed.
#[derive(Debug, Clone)]
pub struct Workload {
    seed: u64,
    /// Each route with its clients (closed loop, backing off 100 ms after a 503).
    routes: Vec<(Route, u32)>,
    /// Whether `/work` requests are told apart by their size (`WORK_CLASSES=kib`).
    classifier: bool,
    budget: u64,
}

impl Workload {
    /// Draws the workload of `seed`.
    pub fn of(seed: u64) -> Self {
        let mut draw = Draw(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let routes = (0..1 + draw.next() % 3)
            .map(|_| {
                let clients = log_uniform(&mut draw, 4, 256) as u32;
                let route = if draw.next().is_multiple_of(4) {
                    Route::Ingest([64, 256, 1024, 4096][(draw.next() % 4) as usize])
                } else {
                    let sizes = [1, 2, 3, 5][(draw.next() % 4) as usize];
                    let mut mix: Vec<(u64, u64, u32)> = (0..sizes)
                        .map(|_| {
                            let kib = log_uniform(&mut draw, 16, 64 << 10);
                            let ms = [0, 5, 20, 100, 500][(draw.next() % 5) as usize];
                            (kib, ms, 1)
                        })
                        .collect();
                    // Heavy-tailed: the larger, the rarer.
                    mix.sort_by_key(|(kib, _, _)| *kib);
                    let n = mix.len() as u32;
                    for (rank, size) in mix.iter_mut().enumerate() {
                        size.2 = 4u32.pow(n - 1 - rank as u32);
                    }
                    Route::Work(mix)
                };
                (route, clients)
            })
            .collect();
        let mut workload = Self {
            seed,
            routes,
            classifier: draw.next().is_multiple_of(2),
            budget: 0,
        };
        // Room for 2 to 16 of the largest requests, 32 MiB at least.
        let times = 2 + draw.next() % 15;
        workload.budget = (workload.largest() * times).clamp(32 * MIB, 1 << 30);
        workload
    }

    /// The most one request allocates.
    fn largest(&self) -> u64 {
        self.routes
            .iter()
            .map(|(route, _)| match route {
                Route::Work(mix) => mix.iter().map(|(kib, _, _)| kib << 10).max().unwrap_or(0),
                Route::Ingest(kib) => (kib << 10) * (1 + TREE_PER_BODY_BYTE),
            })
            .max()
            .unwrap_or(0)
    }

    fn clients(&self) -> u32 {
        self.routes.iter().map(|(_, clients)| clients).sum()
    }

    /// The workload in plain words.
    pub fn describe(&self) -> String {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|(route, clients)| match route {
                Route::Work(mix) => {
                    let sizes: Vec<String> = mix
                        .iter()
                        .map(|(kib, ms, w)| format!("{} x {ms} ms ({w})", size(kib << 10)))
                        .collect();
                    format!("{clients} clients of /work: {}", sizes.join(", "))
                }
                Route::Ingest(kib) => {
                    format!("{clients} clients posting {} of JSON", size(kib << 10))
                }
            })
            .collect();
        format!(
            "{}; {}; budget {}",
            routes.join("; "),
            if self.classifier {
                "told apart by size"
            } else {
                "no classifier"
            },
            size(self.budget)
        )
    }

    /// The bound peak memory must stay within: the budget, one largest request, and what
    /// every client's connection holds.
    fn bound(&self) -> u64 {
        self.budget + self.largest() + u64::from(self.clients()) * CONNECTION_BYTES
    }

    /// The scenario that drives it for `seconds`.
    pub fn scenario(&self, seconds: u64) -> Scenario {
        let duration = Duration::from_secs(seconds);
        let phases = self
            .routes
            .iter()
            .map(|(route, clients)| match route {
                Route::Work(mix) => {
                    let paths: Vec<(String, u32)> = mix
                        .iter()
                        .map(|(kib, ms, w)| (format!("/work?kib={kib}&ms={ms}"), *w))
                        .collect();
                    let mut phase = Phase::get_owned("work", &paths[0].0, *clients, duration);
                    if paths.len() > 1 {
                        phase.mix = paths;
                    }
                    phase.backing_off(100)
                }
                Route::Ingest(kib) => Phase::get_owned("ingest", "/ingest", *clients, duration)
                    .post(kib << 10)
                    .backing_off(100),
            })
            .collect();
        let mut env = vec![("ADMISSION_MEMORY_BUDGET", self.budget.to_string())];
        if self.classifier {
            env.push(("WORK_CLASSES", "kib".into()));
        }
        // Static limits around what the budget holds of the largest request.
        let fits = (self.budget / self.largest().max(1)).max(1) as usize;
        let mut sweep = vec![fits.div_ceil(2), fits, fits * 2, fits * 4];
        sweep.dedup();
        Scenario {
            name: Box::leak(format!("explore-{}", self.seed).into_boxed_str()),
            demonstrates: "a workload drawn from a seed",
            env,
            budget: self.budget,
            largest_request: self.largest(),
            tower_concurrency: fits,
            sweep,
            phases,
            settle: Duration::from_secs(2),
            variants: Vec::new(),
            baseline: false,
            cpu: false,
        }
    }

    /// The same workload with fewer routes or clients, for shrinking.
    fn smaller(&self) -> Vec<Self> {
        let mut smaller = Vec::new();
        for dropped in 0..self.routes.len() {
            if self.routes.len() > 1 {
                let mut fewer = self.clone();
                fewer.routes.remove(dropped);
                smaller.push(fewer);
            }
        }
        if self.routes.iter().any(|(_, clients)| *clients > 2) {
            let mut halved = self.clone();
            for (_, clients) in &mut halved.routes {
                *clients = (*clients / 2).max(1);
            }
            smaller.push(halved);
        }
        smaller
    }
}

fn log_uniform(draw: &mut Draw, lo: u64, hi: u64) -> u64 {
    let (lo, hi) = ((lo as f64).ln(), (hi as f64).ln());
    (lo + draw.unit() * (hi - lo)).exp().round() as u64
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= MIB => format!("{} MiB", b / MIB),
        b => format!("{} KiB", b >> 10),
    }
}

/// What the oracle found of one run of a workload.
struct Checked {
    admission_goodput: f64,
    best_static: Option<(usize, f64)>,
    peak: f64,
    health_p99: Option<f64>,
    failures: Vec<String>,
}

/// Checks a run against the promises: peak memory within the bound; in flight, queued and
/// charged back to zero; every answer readable; `/health` p99 within 25 ms; goodput at least
/// 0.95 times the best static limit that holds the same bound (when the sweep ran).
fn check(workload: &Workload, setups: &[SetupRun]) -> Checked {
    let mut failures = Vec::new();
    let bound = workload.bound() as f64;
    let Some(admission) = setups.iter().find(|s| s.name == ADMISSION) else {
        return Checked {
            admission_goodput: 0.0,
            best_static: None,
            peak: 0.0,
            health_p99: None,
            failures: vec!["the layer did not run".into()],
        };
    };
    let peak = admission.peak(|s| s.memory);
    if peak > bound {
        failures.push(format!(
            "memory: peak {:.0} MiB over the bound {:.0} MiB",
            peak / MIB as f64,
            bound / MIB as f64
        ));
    }
    match admission.end_state() {
        Some((0.0, 0.0, 0.0)) => {}
        state => failures.push(format!(
            "after the load (in flight, queued, charged): {state:?}"
        )),
    }
    if admission.no_answer() > 0 {
        failures.push(format!("{} requests got no answer", admission.no_answer()));
    }
    let health_p99 = admission.health_p99();
    if health_p99.is_none_or(|p99| p99 > HEALTH_P99) {
        failures.push(format!("/health p99 {health_p99:?} s over 25 ms"));
    }
    let best_static = setups
        .iter()
        .filter(|s| s.tower_n.is_some() && s.peak(|x| x.memory) <= bound)
        .max_by(|a, b| a.goodput().total_cmp(&b.goodput()))
        .and_then(|s| Some((s.tower_n?, s.goodput())));
    if let Some((n, goodput)) = best_static
        && admission.goodput() < GOODPUT_RATIO * goodput
    {
        failures.push(format!(
            "goodput {:.0}/s under {GOODPUT_RATIO} x the best safe static N={n} ({goodput:.0}/s)",
            admission.goodput()
        ));
    }
    Checked {
        admission_goodput: admission.goodput(),
        best_static,
        peak,
        health_p99,
        failures,
    }
}

/// Runs the workload's setups: the layer alone, or with the static sweep.
fn run(
    workload: &Workload,
    seconds: u64,
    sweep: bool,
    dir: &Path,
    oha: &Path,
    bin_dir: &Path,
) -> Result<Vec<SetupRun>, String> {
    let scenario = workload.scenario(seconds);
    let setups: Vec<ServerSetup> = crate::setups(&scenario, bin_dir)
        .into_iter()
        .filter(|s| s.name == ADMISSION || (sweep && s.tower_n.is_some()))
        .collect();
    let dir = dir.join(scenario.name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    setups
        .iter()
        .enumerate()
        .map(|(index, setup)| run_setup(&scenario, setup, &dir, oha, index))
        .collect()
}

/// The seeds to run, from `EXPLORE_SEEDS`.
fn seeds() -> Result<Vec<u64>, String> {
    let spec = std::env::var("EXPLORE_SEEDS").unwrap_or_else(|_| "1-40".into());
    let bad = || format!("EXPLORE_SEEDS={spec:?}: expected `1-40` or `3,17`");
    if let Some((lo, hi)) = spec.split_once('-') {
        let (lo, hi) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        return Ok((lo..=hi).collect());
    }
    spec.split(',')
        .map(|s| s.trim().parse().map_err(|_| bad()))
        .collect()
}

/// Runs every seed; returns the report's Markdown, and whether the oracle found failures.
pub fn explore(out: &Path, bin_dir: &Path, oha: &Path) -> Result<(String, bool), String> {
    let seconds = match std::env::var("EXPLORE_SECONDS") {
        Ok(s) => s
            .parse()
            .map_err(|_| format!("EXPLORE_SECONDS={s:?}: not a number"))?,
        Err(_) => 6,
    };
    let dir = out.join("explore");
    let mut rows = String::from(
        "| seed | workload | layer (2xx/s) | best safe static N (2xx/s) | ratio | peak / bound (MiB) | /health p99 (ms) | verdict |\n|---:|---|---:|---|---:|---|---:|---|\n",
    );
    let mut ratios = Vec::new();
    let mut failed = Vec::new();
    for seed in seeds()? {
        let workload = Workload::of(seed);
        eprintln!("[explore] seed {seed}: {}", workload.describe());
        let setups = run(&workload, seconds, true, &dir, oha, bin_dir)?;
        let checked = check(&workload, &setups);
        let ratio = checked
            .best_static
            .map(|(_, goodput)| checked.admission_goodput / goodput.max(1e-9));
        if let Some(ratio) = ratio {
            ratios.push((seed as f64, ratio));
        }
        let verdict = match checked.failures.is_empty() {
            true => "ok".to_owned(),
            false => format!("**FAILS**: {}", checked.failures.join("; ")),
        };
        let _ = writeln!(
            rows,
            "| {seed} | {} | {:.0} | {} | {} | {:.0} / {:.0} | {} | {verdict} |",
            workload.describe(),
            checked.admission_goodput,
            checked
                .best_static
                .map_or("none holds the bound".into(), |(n, g)| format!(
                    "N={n} ({g:.0})"
                )),
            ratio.map_or("–".into(), |r| format!("{r:.2}")),
            checked.peak / MIB as f64,
            workload.bound() as f64 / MIB as f64,
            checked
                .health_p99
                .map_or("–".into(), |p| format!("{:.1}", p * 1000.0)),
        );
        if !checked.failures.is_empty() {
            failed.push((workload, checked.failures));
        }
    }
    let mut md = format!(
        "### explore\n\nEach seed draws a workload (1 to 3 routes: `/work` allocations of 16 KiB to 64 MiB held 0 to 500 ms, one to five sizes, the larger the rarer, or JSON bodies of 64 KiB to 4 MiB parsed; 4 to 256 closed-loop clients per route backing off 100 ms after a 503; sizes told apart or not; a budget of 2 to 16 of the largest request), run for {seconds} s against the layer's defaults (with the budget) and tower's `LoadShed` + `GlobalConcurrencyLimit` at four N around what the budget holds. The oracle: peak memory within the budget, one largest request and 28 KiB per client; in flight, queued and charged back to 0; no request without an answer; `/health` p99 within 25 ms; goodput at least {GOODPUT_RATIO} x the best static N whose peak holds the same bound.\n\n{rows}\n![each seed's goodput against its best safe static N](explore/ratios.svg)\n"
    );
    let end = ratios.iter().map(|p| p.0).fold(1.0, f64::max) + 1.0;
    let series = vec![(
        "tower-admission ÷ best safe static N".to_owned(),
        plot::COLORS[0],
        ratios,
    )];
    plot::xy_chart(
        &dir.join("ratios.svg"),
        "explore: goodput against the best safe static N, per seed",
        "seed",
        "ratio",
        end,
        series,
        Some(("0.95", GOODPUT_RATIO)),
    )
    .map_err(|e| format!("chart: {e}"))?;
    for (workload, failures) in &failed {
        let _ = writeln!(
            md,
            "\nSeed {} fails: {}.",
            workload.seed,
            failures.join("; ")
        );
        let smallest = shrink(workload, failures, seconds, &dir, oha, bin_dir)?;
        let _ = writeln!(
            md,
            "Smallest workload that still fails (the layer alone, memory, end state, answers and `/health`): {}",
            smallest.map_or(
                "not shrunk (it fails only beside the sweep, or not again)".into(),
                |w| w.describe()
            )
        );
    }
    Ok((md, !failed.is_empty()))
}

/// Shrinks a failing workload while it fails a check the layer alone can fail (all but
/// goodput): fewer routes, then fewer clients.
fn shrink(
    workload: &Workload,
    failures: &[String],
    seconds: u64,
    dir: &Path,
    oha: &Path,
    bin_dir: &Path,
) -> Result<Option<Workload>, String> {
    if failures.iter().all(|f| f.starts_with("goodput")) {
        return Ok(None);
    }
    // Apart from the full run, whose files the report points to.
    let dir = dir.join("shrink");
    let fails_alone = |w: &Workload| -> Result<bool, String> {
        let setups = run(w, seconds, false, &dir, oha, bin_dir)?;
        Ok(check(w, &setups)
            .failures
            .iter()
            .any(|f| !f.starts_with("goodput")))
    };
    let mut smallest: Option<Workload> = None;
    let mut current = workload.clone();
    // A few steps at most: each is a run.
    for _ in 0..4 {
        let Some(next) = current
            .smaller()
            .into_iter()
            .find_map(|w| fails_alone(&w).ok()?.then_some(w))
        else {
            break;
        };
        smallest = Some(next.clone());
        current = next;
    }
    Ok(smallest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_draws_the_same_workload_every_time_and_seeds_differ() {
        let one = Workload::of(7);
        assert_eq!(one.describe(), Workload::of(7).describe());
        let described: std::collections::BTreeSet<String> =
            (1..=40).map(|seed| Workload::of(seed).describe()).collect();
        assert!(described.len() >= 38, "{} of 40 differ", described.len());
    }

    #[test]
    fn workloads_stay_within_what_the_example_server_takes_and_the_budget_holds_a_request() {
        for seed in 1..=200 {
            let workload = Workload::of(seed);
            assert!((1..=3).contains(&workload.routes.len()));
            assert!(
                workload.budget >= workload.largest().min(1 << 30),
                "seed {seed}"
            );
            for (route, clients) in &workload.routes {
                assert!((4..=256).contains(clients), "seed {seed}");
                match route {
                    Route::Work(mix) => assert!(mix.iter().all(|(kib, ms, w)| {
                        (16..=64 << 10).contains(kib) && *ms <= 500 && *w >= 1
                    })),
                    Route::Ingest(kib) => assert!(*kib <= 4096),
                }
            }
            let scenario = workload.scenario(5);
            assert_eq!(scenario.phases.len(), workload.routes.len());
            assert!(scenario.sweep.iter().all(|n| *n >= 1));
        }
    }

    #[test]
    fn shrinking_drops_a_route_or_halves_the_clients() {
        let workload = (1..)
            .map(Workload::of)
            .find(|w| w.routes.len() == 3)
            .unwrap();
        let smaller = workload.smaller();
        assert_eq!(smaller.len(), 4, "three routes to drop, clients to halve");
        assert!(smaller[..3].iter().all(|w| w.routes.len() == 2));
        assert!(smaller[3].clients() < workload.clients());
    }
}
