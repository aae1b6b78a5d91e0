//! Drives the example servers through the scenarios of `scenario.rs` (with `oha`, or with
//! clients that back off after a 503), side by side: tower-admission, tower's `LoadShed` +
//! `GlobalConcurrencyLimit` (at one N, or at each N of a sweep) and no limit. Watches
//! `/metrics`, `/health` and RSS, and writes `report.md`, CSVs and SVG charts.
//!
//! `load/run.sh` builds and runs it; see there for usage.

/// One mebibyte, the unit of every size the driver reports.
pub const MIB: u64 = 1 << 20;

mod cgroup;
mod client;
mod experiment;
mod explore;
mod h2load;
mod idle;
mod oha;
mod openloop;
mod overload;
mod plot;
mod probe;
mod processes;
mod replicas;
mod report;
mod scenario;
mod server;
mod slow;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use report::{ScenarioRun, SetupRun};
use scenario::{ADMISSION, Scenario};
use server::Server;

/// A server set up for comparison.
struct ServerSetup {
    name: String,
    /// N, for tower's limit.
    tower_n: Option<usize>,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

fn setups(scenario: &Scenario, bin_dir: &Path) -> Vec<ServerSetup> {
    let owned = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let ns = if scenario.sweep.is_empty() {
        vec![scenario.tower_concurrency]
    } else {
        scenario.sweep.clone()
    };
    let tower = ns.into_iter().map(|n| ServerSetup {
        name: format!("tower LoadShed+GlobalConcurrencyLimit N={n}"),
        tower_n: Some(n),
        binary: bin_dir.join("compare"),
        env: owned(&[
            ("LIMITER", "tower".into()),
            ("TOWER_CONCURRENCY", n.to_string()),
        ]),
    });
    let admission = std::iter::once((ADMISSION.to_owned(), owned(&scenario.env)));
    let variants = scenario.variants.iter().map(|(name, env)| {
        (
            format!("{ADMISSION}, {name}"),
            owned(&[scenario.env.clone(), env.clone()].concat()),
        )
    });
    admission
        .chain(variants)
        .map(|(name, env)| ServerSetup {
            name,
            tower_n: None,
            binary: bin_dir.join("server"),
            env,
        })
        .chain(tower)
        .chain(std::iter::once(ServerSetup {
            name: "no limit".into(),
            tower_n: None,
            binary: bin_dir.join("compare"),
            env: owned(&[("LIMITER", "none".into())]),
        }))
        .collect()
}

/// A scenario with servers and a report of its own: it runs with the output folder and the
/// examples' folder, and returns its Markdown section.
type OwnReport = fn(&Path, &Path) -> Result<String, String>;

struct Args {
    scenario: String,
    out: PathBuf,
    bin_dir: PathBuf,
    oha: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let scenario = args
        .next()
        .ok_or("usage: admission-load SCENARIO --out DIR --bin-dir DIR --oha PATH")?;
    let (mut out, mut bin_dir, mut oha) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--bin-dir" => bin_dir = Some(PathBuf::from(value)),
            "--oha" => oha = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        scenario,
        out: out.ok_or("--out is required")?,
        bin_dir: bin_dir.ok_or("--bin-dir is required")?,
        oha: oha.ok_or("--oha is required")?,
    })
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if args.scenario == "explore" {
        return run_explore(&args);
    }
    // Scenarios with servers of their own (a cgroup, nginx) and a report of their own.
    let own: Option<OwnReport> = match args.scenario.as_str() {
        "processes" => Some(|out, bin| processes::PROCESSES.run(out, bin)),
        "replicas" => Some(|out, bin| replicas::REPLICAS.run(out, bin)),
        "overload" => Some(|out, bin| overload::OVERLOAD.run(out, bin)),
        "overload-memory" => Some(|out, bin| overload::OVERLOAD_MEMORY.run(out, bin)),
        "spike-retry" => Some(|out, bin| overload::SPIKE_RETRY.run(out, bin)),
        _ => None,
    };
    if let Some(run) = own {
        let result = run(&args.out, &args.bin_dir).and_then(|section| {
            println!("{section}");
            let report = format!("# tower-admission: {}\n\n{section}", args.scenario);
            std::fs::write(args.out.join("report.md"), report).map_err(|e| e.to_string())
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: scenario {}: {error}", args.scenario);
                ExitCode::FAILURE
            }
        };
    }
    let scenarios = match args.scenario.as_str() {
        "all" => scenario::all(),
        name => match scenario::by_name(name) {
            Some(s) => vec![s],
            None => {
                eprintln!(
                    "error: unknown scenario {name:?}; known: {}",
                    scenario::NAMES
                );
                return ExitCode::from(2);
            }
        },
    };
    let mut runs = Vec::new();
    for scenario in &scenarios {
        match run_scenario(scenario, &args) {
            Ok(run) => {
                println!("{}", report::table(&run));
                runs.push(run);
            }
            Err(error) => {
                eprintln!("error: scenario {}: {error}", scenario.name);
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(error) = report::write(&args.out, &runs) {
        eprintln!("error: writing the report: {error}");
        return ExitCode::FAILURE;
    }
    let problems: Vec<String> = runs.iter().flat_map(report::problems).collect();
    println!("report: {}", args.out.join("report.md").display());
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            eprintln!("FAIL: {problem}");
        }
        ExitCode::FAILURE
    }
}

/// `explore`: seeded workloads checked against the promises (see `explore.rs`).
fn run_explore(args: &Args) -> ExitCode {
    let report_only = std::env::var_os("EXPLORE_REPORT_ONLY").is_some();
    let result = explore::explore(&args.out, &args.bin_dir, &args.oha).and_then(|(md, failed)| {
        println!("{md}");
        let report = format!("# tower-admission: explore\n\n{md}");
        std::fs::write(args.out.join("report.md"), report).map_err(|e| e.to_string())?;
        Ok(failed)
    });
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) if report_only => {
            eprintln!("explore: the oracle found failures (reported only)");
            ExitCode::SUCCESS
        }
        Ok(true) => {
            eprintln!("FAIL: explore: the oracle found failures, see the report");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: explore: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_scenario(scenario: &Scenario, args: &Args) -> Result<ScenarioRun, String> {
    let dir = args.out.join(scenario.name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let began = Instant::now();
    let mut setup_runs = Vec::new();
    let only = std::env::var("SETUPS").ok();
    for (index, setup) in setups(scenario, &args.bin_dir).into_iter().enumerate() {
        // SETUPS=admission,variants,tower,none limits a run to some setups (for quick checks,
        // or for a build that predates the variants' settings).
        let kind = match setup.tower_n {
            Some(_) => "tower",
            None if setup.name == ADMISSION => "admission",
            None if setup.name.starts_with(ADMISSION) => "variants",
            None => "none",
        };
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|k| k == kind))
        {
            continue;
        }
        eprintln!(
            "[{}] {} ({:.0} s of load)",
            scenario.name,
            setup.name,
            scenario.length().as_secs_f64()
        );
        setup_runs.push(run_setup(scenario, &setup, &dir, &args.oha, index)?);
        if scenario.baseline {
            eprintln!("[{}] {}, ordinary load alone", scenario.name, setup.name);
            let mut alone = run_setup(&scenario.alone(), &setup, &dir, &args.oha, index + 100)?;
            alone.alone = true;
            setup_runs.push(alone);
        }
    }
    let run = ScenarioRun {
        scenario: scenario.clone(),
        setups: setup_runs,
        took: began.elapsed(),
    };
    plot::charts(&run, &dir)?;
    Ok(run)
}

fn run_setup(
    scenario: &Scenario,
    setup: &ServerSetup,
    dir: &Path,
    oha: &Path,
    index: usize,
) -> Result<SetupRun, String> {
    let log = dir.join(format!("server-{index}.log"));
    let server = Server::start(&setup.binary, &setup.env, &log)?;
    let base = format!("http://{}", server.addr);
    let start = Instant::now();
    let sampler = probe::sampler(server.addr, server.pid(), start, Duration::from_millis(100));
    let period = if scenario.cpu { 50 } else { 100 };
    let heartbeat = probe::heartbeat(server.addr, Duration::from_millis(period));

    let loads: Vec<_> = scenario
        .phases
        .iter()
        .enumerate()
        .map(|(p, phase)| {
            let (phase, base, dir, oha) =
                (phase.clone(), base.clone(), dir.to_owned(), oha.to_owned());
            let addr = server.addr;
            thread::spawn(move || -> Result<oha::Outcome, String> {
                thread::sleep(phase.start.saturating_sub(start.elapsed()));
                if let Some(slow) = phase.slow {
                    return slow::run(addr, &phase, slow);
                }
                if phase.holds {
                    return idle::run(addr, &phase);
                }
                if let Some(backoff) = phase.backoff {
                    return client::run(addr, &phase, backoff);
                }
                let tag = format!("{index}-{p}");
                if let Some(streams) = phase.h2_streams {
                    return h2load::run(&phase, streams, &base, &dir, &tag);
                }
                let (mut child, json) = oha::start(&oha, &phase, &base, &dir, &tag)?;
                let status = child.wait().map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("oha exited with {status} in phase {}", phase.label));
                }
                oha::parse(&json)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for load in loads {
        outcomes.push(load.join().map_err(|_| "a load thread panicked")??);
    }
    thread::sleep(scenario.length().saturating_sub(start.elapsed()));
    let samples = sampler.finish();
    let health = heartbeat.finish();
    server.stop();
    report::write_samples(&dir.join(format!("samples-{index}.csv")), &samples)?;
    report::write_health(&dir.join(format!("health-{index}.csv")), period, &health)?;
    Ok(SetupRun {
        name: setup.name.clone(),
        tower_n: setup.tower_n,
        alone: false,
        outcomes,
        samples,
        health,
    })
}
