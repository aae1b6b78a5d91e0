//! The scenarios: what load each drives, with which limits, and what it demonstrates.

use std::time::Duration;

/// The name of the tower-admission setup (and the prefix of its variants).
pub const ADMISSION: &str = "tower-admission";

use crate::MIB;

/// One stream of load from one `oha` process.
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: &'static str,
    /// Seconds after the scenario starts.
    pub start: Duration,
    pub duration: Duration,
    pub connections: u32,
    pub path: String,
    /// Clients give up on a request after this long.
    pub timeout: Option<Duration>,
    /// `POST` a JSON body of about this many bytes.
    pub post_json: Option<u64>,
    /// Paths drawn at random for each request, with weights, instead of `path`.
    pub mix: Vec<(String, u32)>,
    /// Clients back off this long (on average) after a 503; driven by `client.rs`, not oha.
    pub backoff: Option<Duration>,
    /// Slow clients (`slow.rs`) instead of ordinary ones.
    pub slow: Option<Slow>,
    /// After a refusal, backing-off clients wait as long as `Retry-After` says.
    pub honors_retry_after: bool,
    /// The request priority backing-off clients name in `x-priority`.
    pub priority: Option<&'static str>,
    /// Sent over h2c by `h2load`, this many streams at once on each connection.
    pub h2_streams: Option<u32>,
    /// Each client sends one request, then holds its connection idle until the server
    /// closes it, and opens another (`idle.rs`).
    pub holds: bool,
}

/// How a slow client sends or reads its body.
#[derive(Debug, Clone, Copy)]
pub struct Slow {
    /// `POST` a body declared this large, trickling it; `None`: `GET` and read slowly.
    pub upload: Option<u64>,
    pub bytes_per_second: u64,
    /// Writes its whole body before it reads a byte, as Python's `requests` and most SDKs do:
    /// a write that fails (a reset, a broken pipe) ends the request without an answer.
    pub writes_first: bool,
}

impl Phase {
    fn get(label: &'static str, path: &str, connections: u32, start: u64, seconds: u64) -> Self {
        Self {
            start: Duration::from_secs(start),
            ..Self::get_owned(label, path, connections, Duration::from_secs(seconds))
        }
    }

    /// `GET path` from `connections` clients for `duration`, from the start.
    pub fn get_owned(
        label: &'static str,
        path: &str,
        connections: u32,
        duration: Duration,
    ) -> Self {
        Self {
            label,
            start: Duration::ZERO,
            duration,
            connections,
            path: path.to_owned(),
            timeout: None,
            post_json: None,
            mix: Vec::new(),
            backoff: None,
            slow: None,
            honors_retry_after: false,
            priority: None,
            h2_streams: None,
            holds: false,
        }
    }

    /// Over h2c, `streams` at once on each connection.
    fn h2(mut self, streams: u32) -> Self {
        self.h2_streams = Some(streams);
        self
    }

    /// Slow clients instead of ordinary ones.
    fn slow(mut self, slow: Slow) -> Self {
        self.slow = Some(slow);
        self
    }

    /// Each request's path drawn from `mix` (path, weight); `path` names the mix in reports.
    fn mixed(mut self, mix: &[(&str, u32)]) -> Self {
        self.mix = mix.iter().map(|(p, w)| ((*p).to_owned(), *w)).collect();
        self
    }

    /// Clients that hold their connection idle after one request (see [`Phase::holds`]).
    pub fn holding(mut self) -> Self {
        self.holds = true;
        self
    }

    pub fn backing_off(mut self, ms: u64) -> Self {
        self.backoff = Some(Duration::from_millis(ms));
        self
    }

    /// The path of one request, given a random number.
    pub fn pick_path(&self, draw: u64) -> &str {
        let total: u64 = self.mix.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return &self.path;
        }
        let mut point = draw % total;
        for (path, weight) in &self.mix {
            if point < u64::from(*weight) {
                return path;
            }
            point -= u64::from(*weight);
        }
        &self.path
    }

    fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout = Some(Duration::from_millis(ms));
        self
    }

    pub fn post(mut self, bytes: u64) -> Self {
        self.post_json = Some(bytes);
        self
    }

    pub fn end(&self) -> Duration {
        self.start + self.duration
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub demonstrates: &'static str,
    /// `ADMISSION_*` settings of the admission server.
    pub env: Vec<(&'static str, String)>,
    pub budget: u64,
    /// The most one request allocates: a peak within budget + this holds the budget.
    pub largest_request: u64,
    /// N for tower's `GlobalConcurrencyLimit` in the comparison.
    pub tower_concurrency: usize,
    /// When not empty, tower's limit runs at each of these N instead (the static-limit sweep).
    pub sweep: Vec<usize>,
    pub phases: Vec<Phase>,
    /// Idle time after the last phase, to see figures return to zero.
    pub settle: Duration,
    /// More tower-admission setups: a name and `ADMISSION_*` settings added to `env`.
    pub variants: Vec<(&'static str, Vec<(&'static str, String)>)>,
    /// Also run every setup with the first phase alone (the load the others disturb), to
    /// compare.
    pub baseline: bool,
    /// CPU-bound: judged by 2xx latency and `/health` (probed every 50 ms), not by memory.
    pub cpu: bool,
}

impl Scenario {
    pub fn length(&self) -> Duration {
        self.phases.iter().map(Phase::end).max().unwrap_or_default() + self.settle
    }

    /// The same scenario with its first phase alone.
    pub fn alone(&self) -> Self {
        Self {
            phases: self.phases.iter().take(1).cloned().collect(),
            ..self.clone()
        }
    }
}

fn env(budget: u64, max: usize, queue: usize, timeout: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ADMISSION_MEMORY_BUDGET", budget.to_string()),
        ("ADMISSION_MAX_CONCURRENCY", max.to_string()),
        ("ADMISSION_QUEUE_CAPACITY", queue.to_string()),
        ("ADMISSION_QUEUE_TIMEOUT", timeout.to_owned()),
    ]
}

pub fn steady(seconds: u64) -> Scenario {
    Scenario {
        name: "steady",
        demonstrates: "uniform 1 MiB x 50 ms requests from 200 connections: memory held at the budget, the excess queued or shed",
        env: env(96 * MIB, 256, 256, "1s"),
        budget: 96 * MIB,
        largest_request: MIB,
        tower_concurrency: 64,
        sweep: Vec::new(),
        phases: vec![Phase::get(
            "1MiB x 50ms",
            "/work?kib=1024&ms=50",
            200,
            0,
            seconds,
        )],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

/// The static limits the sweeps try: from what holds the budget to what does not.
const SWEEP: [usize; 8] = [2, 4, 6, 8, 12, 16, 24, 48];

pub fn mixed() -> Scenario {
    Scenario {
        name: "mixed",
        demonstrates: "mostly small requests (16 KiB x 20 ms) with a minority of 64 MiB ones on one route, classed by their `kib` parameter, clients backing off 100 ms after a 503: no single concurrency count is both safe and fast",
        // The service tells the layer what kind of request it is (see `examples/server.rs`).
        env: [
            env(384 * MIB, 256, 512, "2s"),
            vec![("WORK_CLASSES", "kib".into())],
        ]
        .concat(),
        budget: 384 * MIB,
        largest_request: 64 * MIB,
        tower_concurrency: 48,
        sweep: SWEEP.to_vec(),
        phases: vec![
            Phase::get("small 16KiB x 20ms", "/work?kib=16&ms=20", 100, 0, 12).backing_off(100),
            Phase::get("large 64MiB x 300ms", "/work?kib=65536&ms=300", 16, 0, 12).backing_off(100),
        ],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn mixed3() -> Scenario {
    Scenario {
        name: "mixed3",
        demonstrates: "three sizes on one route, each request's drawn at random (64 KiB x 20 ms 80 %, 4 MiB x 50 ms 17 %, 64 MiB x 200 ms 3 %), clients backing off 100 ms after a 503: nothing tells a request's size before it runs",
        env: env(384 * MIB, 256, 512, "2s"),
        budget: 384 * MIB,
        largest_request: 64 * MIB,
        tower_concurrency: 48,
        sweep: SWEEP.to_vec(),
        phases: vec![
            Phase::get("random size", "/work?kib={64|4096|65536}", 100, 0, 12)
                .mixed(&[
                    ("/work?kib=64&ms=20", 80),
                    ("/work?kib=4096&ms=50", 17),
                    ("/work?kib=65536&ms=200", 3),
                ])
                .backing_off(100),
        ],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

/// Two sizes on one route that nothing tells apart, the large ones rare and held longer.
pub fn two_sizes() -> Scenario {
    Scenario {
        name: "two-sizes",
        demonstrates: "two sizes 512 times apart on one route, each request's drawn at random (64 KiB x 20 ms 99.5 %, 32 MiB x 1 s 0.5 %), 400 clients backing off 100 ms after a 503, no classifier: a run of small requests must not let the large ones in on a small charge",
        env: env(256 * MIB, 256, 512, "2s"),
        budget: 256 * MIB,
        largest_request: 32 * MIB,
        tower_concurrency: 48,
        sweep: SWEEP.to_vec(),
        phases: vec![
            Phase::get("random size", "/work?kib={64|32768}", 400, 0, 12)
                .mixed(&[("/work?kib=64&ms=20", 995), ("/work?kib=32768&ms=1000", 5)])
                .backing_off(100),
        ],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn two_parses() -> Scenario {
    Scenario {
        name: "two-parses",
        demonstrates: "JSON bodies of 4 MiB and 64 KiB on one route, no classifier (the workload search's seed 7): 22 clients post the large ones (a 47 ms parse in one poll), 96 the small ones, backing off 100 ms after a 503; the long parses must not hold both workers, nor the short ones wait behind them",
        env: env(204 * MIB, 256, 512, "2s"),
        budget: 204 * MIB,
        largest_request: 72 * MIB,
        tower_concurrency: 2,
        sweep: vec![1, 2, 3, 6],
        phases: vec![
            Phase::get("4 MiB", "/ingest", 22, 0, 10)
                .post(4 * MIB)
                .backing_off(100),
            Phase::get("64 KiB", "/ingest", 96, 0, 10)
                .post(64 << 10)
                .backing_off(100),
        ],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: true,
    }
}

/// A seed of the workload search kept as a scenario, run 10 s.
fn kept_seed(name: &'static str, seed: u64, demonstrates: &'static str) -> Scenario {
    Scenario {
        name,
        demonstrates,
        ..crate::explore::Workload::of(seed).scenario(10)
    }
}

/// The workload search's seed 11.
pub fn held_uploads() -> Scenario {
    kept_seed(
        "held-uploads",
        11,
        "195 clients post 1 MiB of JSON (a 16 MiB tree each) and 18 others ask /work for 37 KiB x 5 ms or 2 MiB, no classifier, budget 85 MiB (the workload search's seed 11): requests queued before their class showed its cost must not go in on the first guess, nor hundreds of uploads held back for memory hide the small requests behind them",
    )
}

/// The workload search's seed 32.
pub fn large_head() -> Scenario {
    kept_seed(
        "large-head",
        32,
        "/work of 25 KiB and 85 KiB x 5 ms and, one request in 21, 40 MiB x 500 ms (90 clients), beside JSON posts of 64 KiB (16 clients) and 256 KiB (61), told apart by size, budget 442 MiB (the workload search's seed 32): small requests that come and go beside the large ones must not stall the queue while a large one waits at its head",
    )
}

pub fn spike() -> Scenario {
    Scenario {
        name: "spike",
        demonstrates: "idle, a burst of 600 connections well beyond capacity, idle again: memory stays under the budget, the queue drains, figures return to zero",
        env: env(96 * MIB, 256, 256, "1s"),
        budget: 96 * MIB,
        largest_request: MIB,
        tower_concurrency: 64,
        sweep: Vec::new(),
        phases: vec![Phase::get(
            "burst 1MiB x 100ms",
            "/work?kib=1024&ms=100",
            600,
            2,
            5,
        )],
        settle: Duration::from_secs(4),
        variants: uncounted(),
        baseline: false,
        cpu: false,
    }
}

/// The setup beside the layer's in `spike` and `connections`: the same server on a plain
/// listener, its connections uncounted.
fn uncounted() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![(
        "connections uncounted",
        vec![("CONNECTIONS", "uncounted".into())],
    )]
}

pub fn connections() -> Scenario {
    Scenario {
        name: "connections",
        demonstrates: "a reconnect storm: 5,000 connections opened at once, each idle after one request, then a burst of 1 MiB requests from 200 more: memory within the budget, idle connections given back, no request cut, /health answered",
        env: env(96 * MIB, 256, 256, "1s"),
        budget: 96 * MIB,
        largest_request: MIB,
        tower_concurrency: 64,
        sweep: Vec::new(),
        phases: vec![
            Phase::get(
                "5000 idle after one request",
                "/work?kib=16&ms=0",
                5000,
                0,
                10,
            )
            .holding(),
            Phase::get("burst 1MiB x 100ms", "/work?kib=1024&ms=100", 200, 3, 5),
        ],
        settle: Duration::from_secs(3),
        variants: uncounted(),
        baseline: false,
        cpu: false,
    }
}

pub fn disconnect() -> Scenario {
    Scenario {
        name: "disconnect",
        demonstrates: "clients that give up while queued (150 ms timeout on 400 ms work) or mid-response (on a 1 s stream): nothing leaks",
        env: env(64 * MIB, 32, 256, "2s"),
        budget: 64 * MIB,
        largest_request: 4 * MIB,
        tower_concurrency: 32,
        sweep: Vec::new(),
        phases: vec![
            Phase::get("give up queued", "/work?kib=512&ms=400", 150, 0, 8).timeout_ms(150),
            Phase::get(
                "give up mid-stream",
                "/stream?kib=64&chunks=50&ms=20",
                30,
                0,
                8,
            )
            .timeout_ms(300),
        ],
        settle: Duration::from_secs(3),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn stream() -> Scenario {
    Scenario {
        name: "stream",
        demonstrates: "streaming responses (16 chunks of 256 KiB, 20 ms apart): permits are held until the body ends, so the limit covers the streaming phase",
        env: env(64 * MIB, 256, 256, "2s"),
        budget: 64 * MIB,
        largest_request: 4 * MIB,
        tower_concurrency: 64,
        sweep: Vec::new(),
        phases: vec![Phase::get(
            "stream 16x256KiB",
            "/stream?kib=256&chunks=16&ms=20",
            120,
            0,
            10,
        )],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn ingest() -> Scenario {
    Scenario {
        name: "ingest",
        demonstrates: "4 MiB JSON uploads, each parsed into a tree of about 64 MiB (the handler reserves it first), with clients backing off 100 ms after a 503; bodies declared above the whole budget get 413 before being read",
        env: env(160 * MIB, 256, 256, "2s"),
        budget: 160 * MIB,
        largest_request: 72 * MIB,
        tower_concurrency: 32,
        sweep: vec![1, 2, 3, 4, 6, 8, 16, 32],
        phases: vec![
            Phase::get("upload 4MiB JSON", "/ingest", 48, 0, 10)
                .post(4 * MIB)
                .backing_off(100),
            Phase::get("upload 200MiB JSON", "/ingest", 2, 0, 10)
                .post(200 * MIB)
                .backing_off(100),
        ],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn cost() -> Scenario {
    Scenario {
        name: "cost",
        demonstrates: "what admission costs end to end: a route that allocates nothing and waits for nothing, from 64 connections, with limits that never bind",
        env: env(96 * MIB, 256, 1024, "1s"),
        budget: 96 * MIB,
        largest_request: MIB,
        tower_concurrency: 256,
        sweep: Vec::new(),
        phases: vec![Phase::get("minimal", "/work?kib=0&ms=0", 64, 0, 10)],
        settle: Duration::from_secs(1),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn slowloris() -> Scenario {
    slow_clients("slowloris", 100)
}

/// Slow clients that keep above the default minimum rate (240 B/s): what cutting off cannot
/// touch, and charging what arrived must.
pub fn slowloris_1k() -> Scenario {
    slow_clients("slowloris-1k", 1024)
}

/// `slowloris`, its slow clients sending or reading `pace` bytes a second.
fn slow_clients(name: &'static str, pace: u64) -> Scenario {
    let upload = |bytes_per_second| Slow {
        upload: Some(20 * MIB),
        bytes_per_second,
        writes_first: false,
    };
    let read = |bytes_per_second| Slow {
        upload: None,
        bytes_per_second,
        writes_first: false,
    };
    Scenario {
        name,
        demonstrates: "ordinary 4 MiB requests while slow clients start at t=4 s: 3 uploaders that declare 20 MiB and trickle it, 3 readers that take a 100 MiB stream as slowly, all starting again when cut off; compared with the ordinary requests alone",
        env: env(64 * MIB, 256, 256, "1s"),
        budget: 64 * MIB,
        largest_request: 20 * MIB,
        tower_concurrency: 16,
        sweep: Vec::new(),
        phases: vec![
            Phase::get("ordinary 4MiB x 5ms", "/work?kib=4096&ms=5", 16, 0, 24).backing_off(100),
            Phase::get("slow uploads", "/ingest", 3, 4, 20).slow(upload(pace)),
            Phase::get("slow reads", "/stream?kib=1&chunks=100000&ms=0", 3, 4, 20).slow(read(pace)),
        ],
        settle: Duration::from_secs(2),
        variants: vec![(
            "rates off",
            vec![
                ("ADMISSION_MIN_REQUEST_BODY_RATE", "off".into()),
                ("ADMISSION_MIN_RESPONSE_BODY_RATE", "off".into()),
            ],
        )],
        baseline: true,
        cpu: false,
    }
}

/// Overload from clients that wait as long as `Retry-After` says: with the default `auto`
/// (the queue over the saturated admission rate, spread), and with a fixed 1 s.
pub fn retry() -> Scenario {
    let mut overload =
        Phase::get("1MiB x 500ms", "/work?kib=1024&ms=500", 400, 0, 15).backing_off(100);
    overload.honors_retry_after = true;
    Scenario {
        name: "retry",
        demonstrates: "400 clients that honour Retry-After, against a service that serves 32 at a time (500 ms each) and queues 256: how many 503s each served request costs, with Retry-After computed (auto, the default) and fixed at 1 s",
        env: env(96 * MIB, 32, 256, "2s"),
        budget: 96 * MIB,
        largest_request: MIB,
        tower_concurrency: 64,
        sweep: Vec::new(),
        phases: vec![overload],
        settle: Duration::from_secs(4), // the last admitted wait up to 2 s, then work 0.5 s
        variants: vec![("Retry-After 1", vec![("ADMISSION_RETRY_AFTER", "1".into())])],
        baseline: false,
        cpu: false,
    }
}

/// Critical, normal and sheddable clients together, well above capacity, all honouring
/// `Retry-After`: with priorities (Retry-After fixed and auto), without, and tower's limit.
pub fn priority() -> Scenario {
    let class = |label, priority, connections| {
        let mut phase =
            Phase::get(label, "/work?kib=1024&ms=200", connections, 0, 15).backing_off(100);
        phase.honors_retry_after = true;
        phase.priority = Some(priority);
        phase
    };
    let mut env = env(96 * MIB, 32, 256, "2s");
    env.extend([
        ("ADMISSION_PRIORITY_HEADER", "x-priority".into()),
        ("ADMISSION_CRITICAL_RESERVE", "10%".into()),
    ]);
    Scenario {
        name: "priority",
        demonstrates: "8 critical, 64 normal and 128 sheddable clients (1 MiB x 200 ms each, the priority in an x-priority header) against 32 slots, all honouring Retry-After; compared with the critical clients alone",
        env,
        budget: 96 * MIB,
        largest_request: MIB,
        tower_concurrency: 32,
        sweep: Vec::new(),
        phases: vec![
            class("critical", "critical", 8),
            class("normal", "normal", 64),
            class("sheddable", "sheddable", 128),
        ],
        settle: Duration::from_secs(3),
        variants: vec![
            ("Retry-After 1", vec![("ADMISSION_RETRY_AFTER", "1".into())]),
            (
                "no priorities",
                vec![
                    ("ADMISSION_PRIORITY_HEADER", String::new()),
                    ("ADMISSION_CRITICAL_RESERVE", "0%".into()),
                ],
            ),
        ],
        baseline: true,
        cpu: false,
    }
}

/// The static limits the CPU sweeps try: from one request per core and less to no limit
/// worth the name.
const CPU_SWEEP: [usize; 7] = [1, 2, 3, 4, 8, 16, 64];

/// CPU-bound requests (512 KiB JSON bodies parsed into a tree inline, as axum's `Json`
/// extractor does) from 64 clients on a 2-core machine, backing off 50 ms after a 503, with
/// the layer's defaults: no count to guess.
pub fn cpu() -> Scenario {
    Scenario {
        name: "cpu",
        demonstrates: "CPU-bound requests (512 KiB JSON bodies parsed inline) from 64 clients backing off 50 ms after a 503, with the layer's defaults: the CPU gate finds how much work to take, the queue wait stays within its target, and a bypassed /health stays prompt",
        env: Vec::new(),
        budget: 0,
        largest_request: 0,
        tower_concurrency: 2,
        sweep: CPU_SWEEP.to_vec(),
        phases: vec![
            Phase::get("parse 512KiB JSON", "/ingest", 64, 0, 12)
                .post(512 << 10)
                .backing_off(50),
        ],
        settle: Duration::from_secs(2),
        variants: vec![
            ("fixed", vec![("ADMISSION_ADAPTIVE_LIMIT", "off".into())]),
            ("fixed N=2", fixed_with_queue(2, 1024)),
            // The layer's own family: a static N and a short bounded queue.
            ("fixed N=2, queue 4", fixed_with_queue(2, 4)),
            ("fixed N=3, queue 4", fixed_with_queue(3, 4)),
        ],
        baseline: false,
        cpu: true,
    }
}

/// A fixed limit of `n` with a queue of `capacity`.
fn fixed_with_queue(n: usize, capacity: usize) -> Vec<(&'static str, String)> {
    vec![
        ("ADMISSION_ADAPTIVE_LIMIT", "off".into()),
        ("ADMISSION_MAX_CONCURRENCY", n.to_string()),
        ("ADMISSION_QUEUE_CAPACITY", capacity.to_string()),
    ]
}

/// Clients that upload 1 MiB JSON bodies at the pace of an ordinary link (2 MiB/s each),
/// writing the whole body before reading the answer, to a route that parses them: the CPU is
/// not the bottleneck, the clients are. No limit should fall for their upload time.
pub fn uploads() -> Scenario {
    let paced = |bytes_per_second| Slow {
        upload: Some(MIB),
        bytes_per_second,
        writes_first: false,
    };
    Scenario {
        name: "uploads",
        demonstrates: "1 MiB JSON uploads paced like ordinary links (40 clients at 2 MiB/s, 8 at 1 MiB/s), each written whole before the answer is read, to a route that parses them, with the layer's defaults: the clients, not the CPU, set the pace, and no limit may read their upload time as work",
        env: Vec::new(),
        budget: 0,
        largest_request: 0,
        tower_concurrency: 8,
        sweep: vec![2, 4, 8, 16, 32, 64],
        phases: vec![
            Phase::get("upload 1MiB at 2MiB/s", "/ingest", 40, 0, 12).slow(paced(2 * MIB)),
            Phase::get("upload 1MiB at 1MiB/s", "/ingest", 8, 0, 12).slow(paced(MIB)),
        ],
        settle: Duration::from_secs(2),
        variants: vec![("fixed", vec![("ADMISSION_ADAPTIVE_LIMIT", "off".into())])],
        baseline: false,
        cpu: true,
    }
}

/// Clients that write their whole body before they read a byte (as Python's `requests` and
/// most SDKs do) against a server that must refuse most of them: every refusal must reach its
/// client as a `503` it can read, not as a reset.
pub fn refusals() -> Scenario {
    let whole = |declared, bytes_per_second| Slow {
        upload: Some(declared),
        bytes_per_second,
        writes_first: true,
    };
    Scenario {
        name: "refusals",
        demonstrates: "48 clients that write their whole JSON body before reading (32 send 1 MiB at once, 16 send 4 MiB at 8 MiB/s) to a parsing route held to 2 in flight and a queue of 2: most are refused, and each refusal must reach its client as a readable 503, not a reset",
        env: vec![
            ("ADMISSION_MAX_CONCURRENCY", "2".into()),
            ("ADMISSION_QUEUE_CAPACITY", "2".into()),
        ],
        budget: 0,
        largest_request: 0,
        tower_concurrency: 2,
        sweep: Vec::new(),
        phases: vec![
            Phase::get("1MiB written whole", "/ingest", 32, 0, 10).slow(whole(MIB, 1 << 40)),
            Phase::get("4MiB at 8MiB/s", "/ingest", 16, 0, 10).slow(whole(4 * MIB, 8 * MIB)),
        ],
        settle: Duration::from_secs(2),
        variants: vec![(
            "discard off",
            vec![("ADMISSION_DISCARD_LIMIT", "off".into())],
        )],
        baseline: false,
        cpu: true,
    }
}

/// Handlers that wait rather than compute, for a time that varies within one route (one
/// cost class): 300 clients at once, each request sleeping 50 to 500 ms.
pub fn sleepers() -> Scenario {
    let sleeps: Vec<(&str, u32)> = [
        "/work?kib=0&ms=50",
        "/work?kib=0&ms=100",
        "/work?kib=0&ms=200",
        "/work?kib=0&ms=350",
        "/work?kib=0&ms=500",
    ]
    .into_iter()
    .map(|path| (path, 1))
    .collect();
    Scenario {
        name: "sleepers",
        demonstrates: "300 clients whose requests sleep 50 to 500 ms on one route (as handlers waiting on a database do), backing off 100 ms after a 503, with the layer's defaults: waiting is not work, so nothing should be refused that the fixed count serves",
        env: Vec::new(),
        budget: 0,
        largest_request: 0,
        tower_concurrency: 256,
        sweep: Vec::new(),
        phases: vec![
            Phase::get("sleep 50-500ms", "/work?kib=0&ms=50..500", 300, 0, 10)
                .mixed(&sleeps)
                .backing_off(100),
        ],
        settle: Duration::from_secs(2),
        variants: vec![("fixed", vec![("ADMISSION_ADAPTIVE_LIMIT", "off".into())])],
        baseline: false,
        cpu: false,
    }
}

/// CPU-bound parses and memory-heavy requests on one server: the live limit must not starve
/// the memory-bound requests, nor the budget the parses.
pub fn cpu_mixed() -> Scenario {
    Scenario {
        name: "cpu-mixed",
        demonstrates: "CPU-bound parses (512 KiB JSON, 48 clients) beside memory-heavy requests (16 MiB x 100 ms, 24 clients) on one server with a 192 MiB budget, clients backing off 50 ms after a 503",
        env: env(192 * MIB, 256, 1024, "1s"),
        budget: 192 * MIB,
        largest_request: 16 * MIB,
        tower_concurrency: 16,
        sweep: vec![2, 4, 8, 16, 32],
        phases: vec![
            Phase::get("parse 512KiB JSON", "/ingest", 48, 0, 12)
                .post(512 << 10)
                .backing_off(50),
            Phase::get("hold 16MiB x 100ms", "/work?kib=16384&ms=100", 24, 0, 12).backing_off(50),
        ],
        settle: Duration::from_secs(2),
        variants: vec![("fixed", vec![("ADMISSION_ADAPTIVE_LIMIT", "off".into())])],
        baseline: false,
        cpu: true,
    }
}

/// The same work over HTTP/1.1 (oha, a connection per request in flight) and over h2c
/// (h2load, 4 connections of 64 streams each), side by side on one server.
pub fn h2() -> Scenario {
    Scenario {
        name: "h2",
        demonstrates: "256 KiB x 50 ms requests from 64 HTTP/1.1 connections and from 256 h2c streams on 4 connections at once, against a 32 MiB budget: both protocols are admitted, queued and shed alike, memory holds, and nothing is left behind",
        env: env(32 * MIB, 256, 256, "1s"),
        budget: 32 * MIB,
        largest_request: 256 << 10,
        tower_concurrency: 96,
        sweep: Vec::new(),
        phases: vec![
            Phase::get("HTTP/1.1 (oha)", "/work?kib=256&ms=50", 64, 0, 10),
            Phase::get("h2c (h2load)", "/work?kib=256&ms=50", 4, 0, 10).h2(64),
        ],
        settle: Duration::from_secs(2),
        variants: Vec::new(),
        baseline: false,
        cpu: false,
    }
}

pub fn all() -> Vec<Scenario> {
    vec![
        steady(10),
        mixed(),
        mixed3(),
        two_sizes(),
        two_parses(),
        held_uploads(),
        large_head(),
        spike(),
        connections(),
        disconnect(),
        stream(),
        ingest(),
        cost(),
        slowloris(),
        cpu(),
        cpu_mixed(),
        h2(),
        uploads(),
        sleepers(),
        refusals(),
    ]
}

pub fn by_name(name: &str) -> Option<Scenario> {
    match name {
        // The CI smoke: a short steady run.
        "smoke" => Some(Scenario {
            name: "smoke",
            ..steady(5)
        }),
        "slowloris-1k" => Some(slowloris_1k()),
        "retry" => Some(retry()),
        "priority" => Some(priority()),
        "cpu" => Some(cpu()),
        "cpu-mixed" => Some(cpu_mixed()),
        "h2" => Some(h2()),
        _ => all().into_iter().find(|s| s.name == name),
    }
}

pub const NAMES: &str = "steady, mixed, mixed3, two-sizes, two-parses, held-uploads, large-head, spike, connections, disconnect, stream, ingest, cost, slowloris, slowloris-1k, retry, priority, cpu, cpu-mixed, h2, uploads, sleepers, refusals, all, smoke";
