//! `replicas`: example servers behind a real nginx (Debian's package). One replica, three
//! whose 503s nginx passes on, and three whose 503s nginx retries on another replica
//! (`proxy_next_upstream ... http_503`, at most 3 tries), under a load one replica sheds a
//! good part of. Reports client-visible 503s, goodput, and each replica's peak memory.

use std::{
    fmt::Write as _,
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    client, experiment::Experiment, oha::Outcome, plot, probe, scenario::Phase, server::Server,
};

const MIB: f64 = crate::MIB as f64;
const LOAD: Duration = Duration::from_secs(12);
const CONNECTIONS: u32 = 20;
const BUDGET_MIB: u64 = 64;

/// What nginx retries on another replica: the recipe in `deploy/nginx/` retries 503s too.
const PASS_ON: &str = "error timeout";
const RETRY: &str = "error timeout http_503";

pub struct ReplicaSetup {
    name: &'static str,
    replicas: usize,
    next_upstream: &'static str,
}

const SETUPS: [ReplicaSetup; 3] = [
    ReplicaSetup {
        name: "1 replica",
        replicas: 1,
        next_upstream: RETRY,
    },
    ReplicaSetup {
        name: "3 replicas, 503s passed on",
        replicas: 3,
        next_upstream: PASS_ON,
    },
    ReplicaSetup {
        name: "3 replicas, 503s retried",
        replicas: 3,
        next_upstream: RETRY,
    },
];

pub struct ReplicaRun {
    name: &'static str,
    outcome: Outcome,
    /// Each replica's peak allocated bytes and the 503s it answered nginx.
    replicas: Vec<(f64, f64)>,
}

/// The whole `nginx.conf` of a run: `listen` in front of `replicas`, retrying as
/// `next_upstream` says. The upstream and location blocks are `deploy/nginx/`'s recipe.
fn config(dir: &Path, listen: SocketAddr, replicas: &[SocketAddr], next_upstream: &str) -> String {
    let servers: String = replicas
        .iter()
        .map(|addr| format!("        server {addr} max_fails=0;\n"))
        .collect();
    let dir = dir.display();
    format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    upstream replicas {{
{servers}        keepalive 64;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 2s;
            proxy_connect_timeout 1s;
        }}
    }}
}}
"
    )
}

fn free_addr() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// nginx in the foreground with `conf`, stopped (by PID) on drop.
struct Nginx(Child);

impl Nginx {
    fn start(conf: &Path, listen: SocketAddr) -> Result<Self, String> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("nginx is not installed (load/run.sh replicas installs Debian's package)")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let nginx = Nginx(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(listen).is_ok() {
                return Ok(nginx);
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err("nginx did not listen within 10 s; see nginx-error.log".into())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// The experiment.
pub const REPLICAS: Experiment<ReplicaSetup, ReplicaRun> = Experiment {
    name: "replicas",
    setups: &SETUPS,
    describe: |setup| setup.name.to_owned(),
    run_one,
    section,
    chart_file: "goodput.svg",
    chart,
};

fn run_one(setup: &ReplicaSetup, dir: &Path, bin_dir: &Path) -> Result<ReplicaRun, String> {
    let env: Vec<(String, String)> = [
        ("ADMISSION_MAX_CONCURRENCY", "8".to_owned()),
        ("ADMISSION_QUEUE_CAPACITY", "0".to_owned()),
        ("ADMISSION_MEMORY_BUDGET", format!("{BUDGET_MIB}MiB")),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    let mut replicas = Vec::new();
    for index in 0..setup.replicas {
        let log = dir.join(format!("replica-{index}.log"));
        replicas.push(Server::start(&bin_dir.join("server"), &env, &log)?);
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let listen = free_addr()?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, config(dir, listen, &addrs, setup.next_upstream))
        .map_err(|e| e.to_string())?;
    let nginx = Nginx::start(&conf, listen)?;
    let start = Instant::now();
    let period = Duration::from_millis(100);
    let samplers: Vec<_> = replicas
        .iter()
        .map(|r| probe::sampler(r.addr, r.pid(), start, period))
        .collect();
    // Short and long requests, so that round-robin leaves some replicas fuller than others.
    let mut phase = Phase::get_owned(
        "1MiB x 20|300ms",
        "/work?kib=1024&ms={20|300}",
        CONNECTIONS,
        LOAD,
    );
    phase.mix = vec![
        ("/work?kib=1024&ms=20".to_owned(), 3),
        ("/work?kib=1024&ms=300".to_owned(), 1),
    ];
    phase.backoff = Some(Duration::from_millis(100));
    let outcome = client::run(listen, &phase, Duration::from_millis(100))?;
    drop(nginx);
    let peaks = samplers
        .into_iter()
        .map(|sampler| {
            let samples = sampler.finish();
            let peak = samples.iter().map(|s| s.memory).fold(0.0, f64::max);
            let refused = samples.last().map_or(0.0, |s| s.rejected);
            (peak, refused)
        })
        .collect();
    for replica in replicas {
        replica.stop();
    }
    Ok(ReplicaRun {
        name: setup.name,
        outcome,
        replicas: peaks,
    })
}

fn section(runs: &[ReplicaRun]) -> String {
    let mut out = format!(
        "### replicas\n\nExample servers (`ADMISSION_MAX_CONCURRENCY=8`, no queue (`ADMISSION_QUEUE_CAPACITY=0`: a replica that is full says so at once), a {BUDGET_MIB} MiB budget) behind nginx (`proxy_next_upstream_tries 3`, `max_fails=0`; each run's `nginx.conf` is beside this report), driven by {CONNECTIONS} clients of `/work?kib=1024&ms=20` (3 in 4) and `/work?kib=1024&ms=300` (1 in 4) through nginx, backing off 100 ms after a 503, for {} s.\n\n",
        LOAD.as_secs()
    );
    out.push_str("| setup | goodput (2xx/s) | 503s the clients saw | of all answers | no answer | 503s the replicas answered nginx | each replica's peak memory (MiB; budget 64) |\n|---|---:|---:|---:|---:|---:|---|\n");
    for run in runs {
        let o = &run.outcome;
        let answered = o.count(|_| true);
        let refused = o.count(|s| s == 503);
        let peaks: Vec<String> = run
            .replicas
            .iter()
            .map(|(p, _)| format!("{:.0}", p / MIB))
            .collect();
        let replica_503s: f64 = run.replicas.iter().map(|(_, r)| r).sum();
        let _ = writeln!(
            out,
            "| {} | {:.0} | {refused} | {:.1} % | {} | {replica_503s:.0} | {} |",
            run.name,
            o.goodput(),
            100.0 * refused as f64 / answered.max(1) as f64,
            o.errors,
            peaks.join(", ")
        );
    }
    out.push_str("\n![served per second through nginx](replicas/goodput.svg)\n");
    out
}

/// 2xx per second through nginx, one line per setup.
fn chart(runs: &[ReplicaRun], path: &Path) -> plot::ChartResult {
    let end = LOAD.as_secs_f64();
    let series = runs
        .iter()
        .zip(plot::COLORS)
        .map(|(run, color)| {
            let points = plot::per_second_of(&run.outcome.ok_at, end);
            (run.name.to_owned(), color, points)
        })
        .collect();
    let caption = "replicas: requests served per second through nginx";
    plot::line_chart(path, caption, "2xx/s", end, series, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed recipe carries the directives the measured runs used.
    #[test]
    fn the_recipe_matches_what_was_measured() {
        let recipe = include_str!("../../../deploy/nginx/tower-admission.conf");
        let addrs = ["127.0.0.1:3001".parse().unwrap()];
        let generated = config(
            Path::new("/tmp"),
            "127.0.0.1:80".parse().unwrap(),
            &addrs,
            RETRY,
        );
        for directive in [
            "proxy_next_upstream error timeout http_503;",
            "proxy_next_upstream_tries 3;",
            "proxy_next_upstream_timeout 2s;",
            "max_fails=0;",
            "keepalive 64;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
        ] {
            assert!(recipe.contains(directive), "the recipe lacks {directive}");
            assert!(generated.contains(directive), "the run lacks {directive}");
        }
        let mut directives = recipe.lines().filter(|l| !l.trim_start().starts_with('#'));
        assert!(
            !directives.any(|l| l.contains("non_idempotent")),
            "POSTs must not be retried blindly"
        );
    }
}
