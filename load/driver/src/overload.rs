//! `overload`: open-loop arrivals at 0.5 to 8 times the service's capacity, each attempt
//! with a 1 s deadline and no retry, on a CPU-bound route (`POST /ingest` of 1 MiB of JSON,
//! parsed); `overload-memory` the same on a memory-bound route (`GET /work` holding 16 MiB
//! for 100 ms, with a budget of 128 MiB). The capacity C is measured first, in the same run:
//! closed loop, no limit (on the memory-bound route with as many clients as the budget holds
//! requests). Every setup sees the same arrivals; each point on a fresh server. Reports
//! goodput (2xx within the deadline) against offered load, the textbook curve: flat at C is
//! the ideal, and no limit collapses; and the peak of allocated bytes.

use std::{
    fmt::Write as _,
    path::Path,
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{
    client,
    experiment::Experiment,
    openloop::{self, Arrivals, Attempt, Load, Retry},
    plot, probe,
    scenario::Phase,
    server::Server,
};

/// One setup: which server, with which environment.
pub struct OverloadSetup {
    name: &'static str,
    binary: &'static str,
    env: &'static [(&'static str, &'static str)],
}

const SETUPS: [OverloadSetup; 9] = [
    OverloadSetup {
        name: "tower-admission (defaults)",
        binary: "server",
        env: &[],
    },
    OverloadSetup {
        name: "tower LoadShed+GlobalConcurrencyLimit N=2",
        binary: "compare",
        env: &[("LIMITER", "tower"), ("TOWER_CONCURRENCY", "2")],
    },
    OverloadSetup {
        name: "tower LoadShed+GlobalConcurrencyLimit N=4",
        binary: "compare",
        env: &[("LIMITER", "tower"), ("TOWER_CONCURRENCY", "4")],
    },
    OverloadSetup {
        name: "tower LoadShed+GlobalConcurrencyLimit N=8",
        binary: "compare",
        env: &[("LIMITER", "tower"), ("TOWER_CONCURRENCY", "8")],
    },
    OverloadSetup {
        name: "no limit",
        binary: "compare",
        env: &[("LIMITER", "none")],
    },
    // The Rust peers, wired as their documentation shows (see `examples/compare.rs`).
    OverloadSetup {
        name: "little-loadshedder (100 ms target)",
        binary: "compare",
        env: &[("LIMITER", "little")],
    },
    OverloadSetup {
        name: "congestion-limiter AIMD",
        binary: "compare",
        env: &[("LIMITER", "aimd")],
    },
    OverloadSetup {
        name: "congestion-limiter gradient",
        binary: "compare",
        env: &[("LIMITER", "gradient")],
    },
    OverloadSetup {
        name: "congestion-limiter Vegas",
        binary: "compare",
        env: &[("LIMITER", "vegas")],
    },
];

/// Offered load, in multiples of the capacity.
const MULTIPLES: [f64; 6] = [0.5, 1.0, 1.5, 2.0, 4.0, 8.0];
const LOAD: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(1);

/// What the offered load asks of the service.
pub struct Route {
    /// Its index in [`CAPACITY`] (which capacity it measured).
    index: usize,
    /// The experiment's name: its section and folder.
    name: &'static str,
    /// The load in a few words, for the chart's title.
    short: &'static str,
    /// The load in words, for the report.
    what: &'static str,
    path: &'static str,
    /// A JSON body of this many bytes (`POST`), or none (`GET`).
    body: Option<u64>,
    /// The memory budget every server runs with (the static limits ignore it), if any.
    budget_mib: Option<u64>,
    /// The most one request allocates, for the bound on the peak (budget + one request).
    request_mib: u64,
    /// Closed-loop clients that measure the capacity against no limit.
    capacity_clients: u32,
}

/// CPU-bound: each request parses a 1 MiB JSON body.
const INGEST: Route = Route {
    index: 0,
    name: "overload",
    short: "POST /ingest 1 MiB",
    what: "`POST /ingest` of 1 MiB of JSON (parsed)",
    path: "/ingest",
    body: Some(1 << 20),
    budget_mib: None,
    request_mib: 16,
    capacity_clients: 8,
};

/// Memory-bound: each request holds 16 MiB (touched) for 100 ms; the budget holds eight.
const HOLD: Route = Route {
    index: 1,
    name: "overload-memory",
    short: "GET /work 16 MiB held 100 ms",
    what: "`GET /work?kib=16384&ms=100` (16 MiB touched and held 100 ms) with a memory budget of 128 MiB",
    path: "/work?kib=16384&ms=100",
    body: None,
    budget_mib: Some(128),
    request_mib: 16,
    capacity_clients: 8,
};

/// Arrivals repeat from setup to setup.
const SEED: u64 = 0x5eed;

/// `OVERLOAD_MULTIPLES=2,4` runs only those offered loads (to compare builds quickly).
fn multiples() -> Vec<f64> {
    std::env::var("OVERLOAD_MULTIPLES")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|m| m.trim().parse().ok())
                .collect()
        })
        .filter(|list: &Vec<f64>| !list.is_empty())
        .unwrap_or_else(|| MULTIPLES.to_vec())
}

/// One point of the curve.
pub struct Point {
    multiple: f64,
    offered: f64,
    served: f64,
    refused: f64,
    timed_out: f64,
    failed: f64,
    p50_ms: f64,
    p99_ms: f64,
    health_p99_ms: f64,
    /// The peak of allocated bytes, in MiB (`/metrics`, every 100 ms).
    peak_mib: f64,
}

/// One setup's curve.
pub struct OverloadRun {
    name: &'static str,
    route: &'static Route,
    capacity: f64,
    points: Vec<Point>,
}

/// The capacity of each route, measured once per run (closed loop, no limit).
static CAPACITY: [OnceLock<Result<f64, String>>; 2] = [const { OnceLock::new() }; 2];

fn capacity(route: &Route, dir: &Path, bin_dir: &Path) -> Result<f64, String> {
    CAPACITY[route.index]
        .get_or_init(|| {
            let env = vec![("LIMITER".to_owned(), "none".to_owned())];
            let log = dir.join("capacity.log");
            let server = Server::start(&bin_dir.join("compare"), &env, &log)?;
            let clients = route.capacity_clients;
            let mut phase =
                Phase::get_owned("capacity", route.path, clients, Duration::from_secs(4));
            phase.post_json = route.body;
            let outcome = client::run(server.addr, &phase, Duration::from_millis(100))?;
            server.stop();
            Ok(outcome.goodput())
        })
        .clone()
}

pub const OVERLOAD: Experiment<OverloadSetup, OverloadRun> = Experiment {
    name: "overload",
    setups: &SETUPS,
    describe: |setup| setup.name.to_owned(),
    run_one: |setup, dir, bin_dir| run_one(&INGEST, setup, dir, bin_dir),
    section,
    chart_file: "goodput.svg",
    chart,
};

pub const OVERLOAD_MEMORY: Experiment<OverloadSetup, OverloadRun> = Experiment {
    name: "overload-memory",
    run_one: |setup, dir, bin_dir| run_one(&HOLD, setup, dir, bin_dir),
    ..OVERLOAD
};

impl OverloadSetup {
    fn env(&self, route: &Route) -> Vec<(String, String)> {
        let budget = route.budget_mib.map(|mib| {
            let value = format!("{mib}MiB");
            ("ADMISSION_MEMORY_BUDGET".to_owned(), value)
        });
        budget
            .into_iter()
            .chain(
                self.env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
            .collect()
    }
}

fn run_one(
    route: &'static Route,
    setup: &OverloadSetup,
    dir: &Path,
    bin_dir: &Path,
) -> Result<OverloadRun, String> {
    let capacity = capacity(route, dir, bin_dir)?;
    let env = setup.env(route);
    let mut points = Vec::new();
    for multiple in multiples() {
        let log = dir.join(format!("server-{multiple}.log"));
        let server = Server::start(&bin_dir.join(setup.binary), &env, &log)?;
        let load = Load {
            path: route.path.into(),
            body: route.body,
            segments: vec![(LOAD, multiple * capacity)],
            arrivals: Arrivals::Poisson,
            deadline: DEADLINE,
            retry: Retry::None,
        };
        let heartbeat = probe::heartbeat(server.addr, Duration::from_millis(50));
        let period = Duration::from_millis(100);
        let sampler = probe::sampler(server.addr, server.pid(), Instant::now(), period);
        let outcome = openloop::run(server.addr, &load, SEED);
        // Per second of arrivals; answers within the last deadline count too.
        let until = outcome.seconds.max(LOAD.as_secs_f64()) + DEADLINE.as_secs_f64();
        let per_second = LOAD.as_secs_f64() / until;
        let health = heartbeat.finish();
        let samples = sampler.finish();
        server.stop();
        let rate = |kind: fn(&Attempt) -> bool| outcome.rate(0.0, until, kind) / per_second;
        points.push(Point {
            multiple,
            offered: outcome.jobs as f64 / LOAD.as_secs_f64(),
            served: rate(|a| matches!(a, Attempt::Served { .. })),
            refused: rate(|a| matches!(a, Attempt::Refused { .. })),
            timed_out: rate(|a| matches!(a, Attempt::TimedOut { .. })),
            failed: rate(|a| matches!(a, Attempt::Failed { .. })),
            p50_ms: outcome.served_quantile(0.5) * 1000.0,
            p99_ms: outcome.served_quantile(0.99) * 1000.0,
            health_p99_ms: health_p99(&health) * 1000.0,
            peak_mib: samples.iter().map(|s| s.memory).fold(0.0, f64::max) / crate::MIB as f64,
        });
    }
    Ok(OverloadRun {
        name: setup.name,
        route,
        capacity,
        points,
    })
}

/// The 99th percentile of `/health` latencies, a failed probe counting as 1 s.
fn health_p99(latencies: &[Option<f64>]) -> f64 {
    let mut all: Vec<f64> = latencies.iter().map(|l| l.unwrap_or(1.0)).collect();
    all.sort_by(f64::total_cmp);
    client::quantile(&all, 0.99)
}

fn section(runs: &[OverloadRun]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let (route, capacity) = (first.route, first.capacity);
    let name = route.name;
    let bound = match route.budget_mib {
        Some(budget) => format!(
            " The bound on the peak of allocated bytes is the budget plus one request: {} MiB.",
            budget + route.request_mib
        ),
        None => String::new(),
    };
    let mut out = format!(
        "### {name}\n\nOpen-loop arrivals (Poisson) at 0.5 to 8 times the capacity C = {capacity:.0}/s (measured first in the same run: closed loop, {} clients, no limit), for {} s each on a fresh server: {}, one connection per attempt, the whole request written before the answer is read, each attempt abandoned after {} s, no retries. Goodput: 2xx within the deadline.{bound}\n\n",
        route.capacity_clients,
        LOAD.as_secs(),
        route.what,
        DEADLINE.as_secs(),
    );
    out.push_str("| setup | offered (× C) | goodput (/s) | goodput (× C) | 503 (/s) | timed out (/s) | failed (/s) | p50 / p99 of 2xx (ms) | /health p99 (ms) | peak (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n");
    for run in runs {
        for p in &run.points {
            let _ = writeln!(
                out,
                "| {} | {:.1} ({:.0}/s) | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} |",
                run.name,
                p.multiple,
                p.offered,
                p.served,
                p.served / run.capacity,
                p.refused,
                p.timed_out,
                p.failed,
                p.p50_ms,
                p.p99_ms,
                p.health_p99_ms,
                p.peak_mib,
            );
        }
    }
    let _ = writeln!(out, "\n![goodput against offered load]({name}/goodput.svg)");
    out
}

fn chart(runs: &[OverloadRun], path: &Path) -> plot::ChartResult {
    let series = runs
        .iter()
        .zip(plot::COLORS)
        .map(|(run, color)| {
            let points = run
                .points
                .iter()
                .map(|p| (p.multiple, p.served / run.capacity))
                .collect();
            (run.name.to_owned(), color, points)
        })
        .collect();
    let title = runs.first().map_or(String::new(), |run| {
        let route = run.route;
        let (name, short) = (route.name, route.short);
        format!("{name}: goodput (2xx within 1 s) against offered load, {short}")
    });
    plot::xy_chart(
        path,
        &title,
        "offered load (× capacity)",
        "goodput (× capacity)",
        8.2,
        series,
        Some(("capacity", 1.0)),
    )
}

/// `spike-retry`: open-loop jobs at 0.6 C for 5 s, 3 C for 5 s, 0.6 C for 8 s (constant
/// arrivals), each attempt abandoned after 1 s, with each retry policy; a server per run.
/// Reports 2xx per second, and how soon after the spike goodput is back at 0.9 times the base
/// rate and stays there.
pub struct SpikeSetup {
    server: usize,
    retry: Retry,
}

const SPIKE_SETUPS: [SpikeSetup; 24] = {
    let retries = [Retry::None, Retry::Polite, Retry::Storm];
    // tower-admission, tower N = 2 and 4, no limit, and the four peers.
    let servers = [0, 1, 2, 4, 5, 6, 7, 8];
    let mut setups = [const {
        SpikeSetup {
            server: 0,
            retry: Retry::None,
        }
    }; 24];
    let mut i = 0;
    while i < 24 {
        setups[i] = SpikeSetup {
            server: servers[i % 8],
            retry: retries[i / 8],
        };
        i += 1;
    }
    setups
};

const BASE: f64 = 0.6;
const SPIKE: f64 = 3.0;
/// The spike's start and end, and the run's end, in seconds.
const SPIKE_FROM: u64 = 5;
const SPIKE_TO: u64 = 10;
const SPIKE_END: u64 = 18;

pub struct SpikeRun {
    name: String,
    retry: Retry,
    capacity: f64,
    served: Vec<u64>,
    health_p99_ms: f64,
}

impl SpikeRun {
    /// Seconds after the spike's end until goodput is at 0.9 × the base rate and stays
    /// there to the end; `None` if it never is.
    fn recovered_after(&self) -> Option<u64> {
        let target = 0.9 * BASE * self.capacity;
        let after = &self.served[SPIKE_TO as usize..];
        (0..after.len())
            .find(|&from| after[from..].iter().all(|&n| n as f64 >= target))
            .map(|s| s as u64)
    }
}

pub const SPIKE_RETRY: Experiment<SpikeSetup, SpikeRun> = Experiment {
    name: "spike-retry",
    setups: &SPIKE_SETUPS,
    describe: |setup| {
        format!(
            "{}, retries {}",
            SETUPS[setup.server].name,
            setup.retry.as_str()
        )
    },
    run_one: run_spike,
    section: spike_section,
    chart_file: "goodput.svg",
    chart: spike_chart,
};

fn run_spike(setup: &SpikeSetup, dir: &Path, bin_dir: &Path) -> Result<SpikeRun, String> {
    let capacity = capacity(&INGEST, dir, bin_dir)?;
    let server_setup = &SETUPS[setup.server];
    let server = Server::start(
        &bin_dir.join(server_setup.binary),
        &server_setup.env(&INGEST),
        &dir.join("server.log"),
    )?;
    let seconds = |s: u64| Duration::from_secs(s);
    let load = Load {
        path: INGEST.path.into(),
        body: INGEST.body,
        segments: vec![
            (seconds(SPIKE_FROM), BASE * capacity),
            (seconds(SPIKE_TO - SPIKE_FROM), SPIKE * capacity),
            (seconds(SPIKE_END - SPIKE_TO), BASE * capacity),
        ],
        arrivals: Arrivals::Constant,
        deadline: DEADLINE,
        retry: setup.retry,
    };
    let heartbeat = probe::heartbeat(server.addr, Duration::from_millis(50));
    let outcome = openloop::run(server.addr, &load, SEED);
    let health = heartbeat.finish();
    server.stop();
    Ok(SpikeRun {
        name: server_setup.name.to_owned(),
        retry: setup.retry,
        capacity,
        served: outcome.served_per_second(SPIKE_END as usize),
        health_p99_ms: health_p99(&health) * 1000.0,
    })
}

fn spike_section(runs: &[SpikeRun]) -> String {
    let capacity = runs.first().map_or(f64::NAN, |r| r.capacity);
    let mut out = format!(
        "### spike-retry\n\nOpen-loop jobs (constant arrivals) at {BASE} C for {SPIKE_FROM} s, {SPIKE} C for {} s, then {BASE} C again to {SPIKE_END} s, C = {capacity:.0}/s (measured first, closed loop, no limit): {}, each attempt abandoned after {} s, with each retry policy (up to 3 more attempts). Below: 2xx per second in each second after the spike ends, and how many seconds after it goodput is back at 0.9 × the base rate ({:.0}/s) and stays there.\n\n",
        SPIKE_TO - SPIKE_FROM,
        INGEST.what,
        DEADLINE.as_secs(),
        0.9 * BASE * capacity,
    );
    let after = SPIKE_END - SPIKE_TO;
    let columns: String = (1..=after).map(|s| format!(" +{s} s |")).collect();
    let _ = writeln!(
        out,
        "| setup | retries | 2xx/s during the spike |{columns} recovered after | /health p99 (ms) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|{}---:|---:|",
        "---:|".repeat(after as usize)
    );
    for run in runs {
        let during: u64 = run.served[SPIKE_FROM as usize..SPIKE_TO as usize]
            .iter()
            .sum();
        let cells: String = run.served[SPIKE_TO as usize..]
            .iter()
            .map(|n| format!(" {n} |"))
            .collect();
        let recovered = match run.recovered_after() {
            Some(s) => format!("{s} s"),
            None => "never".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} |{cells} {recovered} | {:.0} |",
            run.name,
            run.retry.as_str(),
            during as f64 / (SPIKE_TO - SPIKE_FROM) as f64,
            run.health_p99_ms,
        );
    }
    out.push_str("\n![2xx per second, retries after Retry-After](spike-retry/goodput.svg)\n");
    out
}

fn spike_chart(runs: &[SpikeRun], path: &Path) -> plot::ChartResult {
    let series = runs
        .iter()
        .filter(|run| run.retry == Retry::Polite)
        .zip(plot::COLORS)
        .map(|(run, color)| {
            let points = run
                .served
                .iter()
                .enumerate()
                .map(|(s, n)| (s as f64 + 0.5, *n as f64))
                .collect();
            (run.name.clone(), color, points)
        })
        .collect();
    let base = BASE * runs.first().map_or(0.0, |r| r.capacity);
    plot::line_chart(
        path,
        "spike-retry: 2xx per second, 3 C from 5 s to 10 s, retries after Retry-After",
        "2xx/s",
        SPIKE_END as f64,
        series,
        Some(("base rate", base)),
    )
}
