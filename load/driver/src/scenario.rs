//! The scenarios: what load each drives, with which limits, and what it demonstrates.

use std::time::Duration;

const MIB: u64 = 1 << 20;

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
}

impl Phase {
    fn get(label: &'static str, path: &str, connections: u32, start: u64, seconds: u64) -> Self {
        Self {
            label,
            start: Duration::from_secs(start),
            duration: Duration::from_secs(seconds),
            connections,
            path: path.to_owned(),
            timeout: None,
            post_json: None,
        }
    }

    fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout = Some(Duration::from_millis(ms));
        self
    }

    fn post(mut self, bytes: u64) -> Self {
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
    /// N for tower's `GlobalConcurrencyLimit` in the comparison.
    pub tower_concurrency: usize,
    pub phases: Vec<Phase>,
    /// Idle time after the last phase, to see figures return to zero.
    pub settle: Duration,
}

impl Scenario {
    pub fn length(&self) -> Duration {
        self.phases.iter().map(Phase::end).max().unwrap_or_default() + self.settle
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
        tower_concurrency: 64,
        phases: vec![Phase::get(
            "1MiB x 50ms",
            "/work?kib=1024&ms=50",
            200,
            0,
            seconds,
        )],
        settle: Duration::from_secs(2),
    }
}

pub fn mixed() -> Scenario {
    Scenario {
        name: "mixed",
        demonstrates: "mostly small requests (16 KiB x 20 ms) with a minority of 64 MiB ones: no single concurrency count is both safe and fast",
        env: env(384 * MIB, 256, 512, "2s"),
        budget: 384 * MIB,
        tower_concurrency: 48,
        phases: vec![
            Phase::get("small 16KiB x 20ms", "/work?kib=16&ms=20", 100, 0, 12),
            Phase::get("large 64MiB x 300ms", "/work?kib=65536&ms=300", 16, 0, 12),
        ],
        settle: Duration::from_secs(2),
    }
}

pub fn spike() -> Scenario {
    Scenario {
        name: "spike",
        demonstrates: "idle, a burst of 600 connections well beyond capacity, idle again: memory stays under the budget, the queue drains, figures return to zero",
        env: env(96 * MIB, 256, 256, "1s"),
        budget: 96 * MIB,
        tower_concurrency: 64,
        phases: vec![Phase::get(
            "burst 1MiB x 100ms",
            "/work?kib=1024&ms=100",
            600,
            2,
            5,
        )],
        settle: Duration::from_secs(4),
    }
}

pub fn disconnect() -> Scenario {
    Scenario {
        name: "disconnect",
        demonstrates: "clients that give up while queued (150 ms timeout on 400 ms work) or mid-response (on a 1 s stream): nothing leaks",
        env: env(64 * MIB, 32, 256, "2s"),
        budget: 64 * MIB,
        tower_concurrency: 32,
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
    }
}

pub fn stream() -> Scenario {
    Scenario {
        name: "stream",
        demonstrates: "streaming responses (16 chunks of 256 KiB, 20 ms apart): permits are held until the body ends, so the limit covers the streaming phase",
        env: env(64 * MIB, 256, 256, "2s"),
        budget: 64 * MIB,
        tower_concurrency: 64,
        phases: vec![Phase::get(
            "stream 16x256KiB",
            "/stream?kib=256&chunks=16&ms=20",
            120,
            0,
            10,
        )],
        settle: Duration::from_secs(2),
    }
}

pub fn ingest() -> Scenario {
    Scenario {
        name: "ingest",
        demonstrates: "4 MiB JSON uploads reserve their Content-Length on admission; bodies declared above the whole budget get 413 before being read",
        env: env(48 * MIB, 256, 256, "2s"),
        budget: 48 * MIB,
        tower_concurrency: 32,
        phases: vec![
            Phase::get("upload 4MiB JSON", "/ingest", 48, 0, 10).post(4 * MIB),
            Phase::get("upload 56MiB JSON", "/ingest", 2, 0, 10).post(56 * MIB),
        ],
        settle: Duration::from_secs(2),
    }
}

pub fn all() -> Vec<Scenario> {
    vec![
        steady(10),
        mixed(),
        spike(),
        disconnect(),
        stream(),
        ingest(),
    ]
}

pub fn by_name(name: &str) -> Option<Scenario> {
    match name {
        // The CI smoke: a short steady run.
        "smoke" => Some(Scenario {
            name: "smoke",
            ..steady(5)
        }),
        _ => all().into_iter().find(|s| s.name == name),
    }
}

pub const NAMES: &str = "steady, mixed, spike, disconnect, stream, ingest, all, smoke";
