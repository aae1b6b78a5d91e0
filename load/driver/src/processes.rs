//! `processes`: three example servers in one memory cgroup with a limit. With their loads
//! starting 4 s apart and overlapping, each server's budget 75 % of the cgroup's limit: the
//! jemalloc source (each counts only its own allocations) against the cgroup source (each
//! sees the whole cgroup's working set, as the kernel does). With their loads starting
//! together: the cgroup source at 75 % again, and `both` at 25 % each (the cgroup within its
//! default 75 %). Reports goodput, the
//! cgroup's peak working set, and the processes the kernel killed; charts the working set
//! against the limit.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{
    cgroup::Cgroup, client, experiment::Experiment, oha::Outcome, plot, probe, scenario::Phase,
    server::Server,
};

use crate::MIB;
const LIMIT: u64 = 768 * MIB;
const SERVERS: usize = 3;
/// Each server's load, from `STAGGER` times its index on.
const LOAD: Duration = Duration::from_secs(12);
const STAGGER: Duration = Duration::from_secs(4);

/// One setup: the servers' memory source and budget, and how far apart their loads start.
pub struct ProcessSetup {
    source: &'static str,
    budget: &'static str,
    stagger: Duration,
}

const SETUPS: [ProcessSetup; 4] = [
    ProcessSetup {
        source: "jemalloc",
        budget: "75%",
        stagger: STAGGER,
    },
    ProcessSetup {
        source: "cgroup",
        budget: "75%",
        stagger: STAGGER,
    },
    ProcessSetup {
        source: "cgroup",
        budget: "75%",
        stagger: Duration::ZERO,
    },
    ProcessSetup {
        source: "both",
        budget: "25%",
        stagger: Duration::ZERO,
    },
];

impl ProcessSetup {
    fn name(&self) -> String {
        let start = if self.stagger.is_zero() {
            "together".to_owned()
        } else {
            format!("{} s apart", self.stagger.as_secs())
        };
        let cgroup = if self.source == "both" {
            " (the cgroup 75 %, by default)"
        } else {
            ""
        };
        format!(
            "{}, {} each{cgroup}, loads {start}",
            self.source, self.budget
        )
    }
}

/// One run: its setup, and what came of it.
pub struct ProcessRun {
    name: String,
    outcomes: Vec<Outcome>,
    /// (seconds, working set in bytes) every 100 ms.
    working_set: Vec<(f64, f64)>,
    oom_kills: u64,
    /// Servers that had died by the end of the load.
    died: usize,
}

/// When the last load ends.
fn end() -> Duration {
    STAGGER * (SERVERS as u32 - 1) + LOAD
}

fn phase() -> Phase {
    let mut phase = Phase::get_owned("16MiB x 300ms", "/work?kib=16384&ms=300", 40, LOAD);
    phase.backoff = Some(Duration::from_millis(100));
    phase
}

/// The experiment.
pub const PROCESSES: Experiment<ProcessSetup, ProcessRun> = Experiment {
    name: "processes",
    setups: &SETUPS,
    describe: |setup| format!("{SERVERS} servers in one cgroup: {}", setup.name()),
    run_one,
    section,
    chart_file: "working-set.svg",
    chart,
};

fn run_one(setup: &ProcessSetup, dir: &Path, bin_dir: &Path) -> Result<ProcessRun, String> {
    let name = format!("tower-admission-load-{}", std::process::id());
    let cgroup = Arc::new(Cgroup::make(&name, LIMIT)?);
    let env: Vec<(String, String)> = [
        ("ADMISSION_MEMORY_SOURCE", setup.source),
        ("ADMISSION_MEMORY_BUDGET", setup.budget),
        ("ADMISSION_MAX_CONCURRENCY", "64"),
        ("ADMISSION_QUEUE_CAPACITY", "64"),
        ("ADMISSION_QUEUE_TIMEOUT", "1s"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let procs = cgroup.procs();
    let mut servers = Vec::new();
    for server in 0..SERVERS {
        let log = dir.join(format!("server-{server}.log"));
        let binary = bin_dir.join("server");
        servers.push(Server::start_in(&binary, &env, &log, Some(&procs))?);
    }
    let start = Instant::now();
    let sampler = {
        let cgroup = Arc::clone(&cgroup);
        probe::watch(move |stop| {
            let mut points = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                points.push((start.elapsed().as_secs_f64(), cgroup.working_set() as f64));
                thread::sleep(Duration::from_millis(100));
            }
            points
        })
    };
    let loads: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(index, server)| {
            let (addr, stagger) = (server.addr, setup.stagger);
            thread::spawn(move || {
                thread::sleep(stagger * index as u32);
                client::run(addr, &phase(), Duration::from_millis(100))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for load in loads {
        outcomes.push(load.join().map_err(|_| "a load thread panicked")??);
    }
    thread::sleep(Duration::from_secs(1));
    let working_set = sampler.finish();
    let died = servers
        .iter_mut()
        .map(Server::has_exited)
        .filter(|dead| *dead)
        .count();
    let oom_kills = cgroup.oom_kills();
    for server in servers {
        server.stop();
    }
    Ok(ProcessRun {
        name: setup.name(),
        outcomes,
        working_set,
        oom_kills,
        died,
    })
}

fn section(runs: &[ProcessRun]) -> String {
    let mut out = format!(
        "### processes\n\n{SERVERS} example servers in one memory cgroup limited to {} MiB, each driven by 40 clients of `/work?kib=16384&ms=300` (backing off 100 ms after a 503) for {} s: the loads {} s apart, or all from t=0. Budgets are percentages of the cgroup's limit.\n\n",
        LIMIT / MIB,
        LOAD.as_secs(),
        STAGGER.as_secs(),
    );
    out.push_str("| source, budget, loads | goodput (2xx/s, all servers, over the whole run) | 503 | no answer | peak working set (MiB) | limit (MiB) | OOM kills | servers dead at the end |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for run in runs {
        let ok: u64 = run.outcomes.iter().map(|o| o.served()).sum();
        let refused: u64 = run.outcomes.iter().map(|o| o.count(|s| s == 503)).sum();
        let errors: u64 = run.outcomes.iter().map(|o| o.errors).sum();
        let peak = run.working_set.iter().map(|p| p.1).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "| {} | {:.0} | {refused} | {errors} | {:.0} | {} | {} | {} of {SERVERS} |",
            run.name,
            ok as f64 / end().as_secs_f64(),
            peak / MIB as f64,
            LIMIT / MIB,
            run.oom_kills,
            run.died,
        );
    }
    out.push_str("\n![working set against the limit](processes/working-set.svg)\n");
    out
}

fn chart(runs: &[ProcessRun], path: &Path) -> plot::ChartResult {
    let series = runs
        .iter()
        .zip(plot::COLORS)
        .map(|(run, color)| {
            let points = run
                .working_set
                .iter()
                .map(|(t, b)| (*t, b / MIB as f64))
                .collect();
            (run.name.clone(), color, points)
        })
        .collect();
    let end = end().as_secs_f64() + 1.0;
    let caption = format!("processes: the cgroup's working set, {SERVERS} servers");
    plot::line_chart(
        path,
        &caption,
        "MiB",
        end,
        series,
        Some(("memory limit", (LIMIT / MIB) as f64)),
    )
}
