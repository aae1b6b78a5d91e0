//! [`Admission`], the handle to one admission pool.

use std::{fmt, path::Path, sync::Arc};

use crate::{
    client_deadline::ClientDeadline,
    config::{AdmissionConfig, ConfigError, MemoryBudget, describe::describe, resolve_budget},
    controller::{Controller, MAX_BUDGET_BYTES, MAX_CONCURRENCY, Settings, starting_limit},
    data_rate::BodyRates,
    heartbeat::Heartbeat,
    http_settings::{HttpSettings, PathPrefixes, Prioritizer, Rejecting, RetryAfter, Serving},
    layer::AdmissionLayer,
    listener::AdmissionListener,
    memory::{
        CgroupMemory, MemorySource, MemorySourceKind, SharedCharges,
        shared::{self, Neighbourhood},
    },
    metrics, sampler,
    snapshot::Snapshot,
};

/// One admission pool: its limits, queue and memory sampler, shared by every layer made from
/// it. Clones share the pool.
///
/// ```no_run
/// use axum::{Router, routing::get};
///
/// #[global_allocator]
/// static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let admission = tower_admission::Admission::from_env()?;
/// println!("{admission}"); // the effective configuration
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(admission.layer());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
///
/// A sampler thread refreshes the memory reading every sample interval; it stops once the
/// pool and everything made from it are dropped.
#[derive(Clone)]
pub struct Admission {
    controller: Arc<Controller>,
    settings: Arc<HttpSettings>,
    description: Arc<str>,
}

impl Admission {
    /// Builds a pool from the `ADMISSION_*` environment variables, reading memory from the
    /// source `ADMISSION_MEMORY_SOURCE` names (see [`Admission::new`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(AdmissionConfig::from_env()?)
    }

    /// Builds a pool that reads memory from the configured source
    /// ([`AdmissionConfig::memory_source`]): jemalloc's statistics by default, the
    /// [`CgroupMemory`] working set of the process's cgroup, or both.
    ///
    /// Fails if the configuration is invalid, if a memory budget is set and jemalloc is not
    /// the global allocator (or the `jemalloc` feature is off) where jemalloc is read, or if
    /// no cgroup memory controller is reachable where the cgroup is read: a budget that
    /// cannot be measured must not look enforced. With the budget `off`, jemalloc is still
    /// used for the `memory_bytes` figure when available.
    pub fn new(config: AdmissionConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        match config.memory_source {
            MemorySourceKind::Jemalloc => Self::on_jemalloc(config),
            MemorySourceKind::Cgroup => {
                let cgroup = CgroupMemory::new()?;
                let dir = cgroup.dir();
                Self::build_sharing(config, cgroup, Some(&dir))
            }
            #[cfg(feature = "jemalloc")]
            MemorySourceKind::Both => {
                let (Some(budget), _) = resolve_budget(config.memory_budget)? else {
                    return Err(ConfigError::Invalid {
                        setting: "memory_budget",
                        reason: "the memory source `both` needs a budget (not off)".into(),
                    });
                };
                let both = crate::memory::Both {
                    process: crate::memory::JemallocMemory::new()?,
                    cgroup: CgroupMemory::new()?,
                    budget,
                    cgroup_budget: resolve_budget(config.cgroup_budget)?.0.unwrap_or(u64::MAX),
                };
                Self::build(config, both)
            }
            #[cfg(not(feature = "jemalloc"))]
            MemorySourceKind::Both => Err(crate::memory::MemoryError::NoSource.into()),
        }
    }

    fn on_jemalloc(config: AdmissionConfig) -> Result<Self, ConfigError> {
        #[cfg(feature = "jemalloc")]
        match crate::memory::JemallocMemory::new() {
            Ok(source) => Self::build(config, source),
            Err(_) if config.memory_budget == MemoryBudget::Off => Self::build(config, Unmeasured),
            Err(error) => Err(error.into()),
        }
        #[cfg(not(feature = "jemalloc"))]
        if config.memory_budget == MemoryBudget::Off {
            Self::build(config, Unmeasured)
        } else {
            Err(crate::memory::MemoryError::NoSource.into())
        }
    }

    /// Builds a pool that reads memory from `source`: a [`ManualMemory`](crate::ManualMemory)
    /// in tests, or a source of your own.
    pub fn with_memory_source(
        config: AdmissionConfig,
        source: impl MemorySource,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Self::build(config, source)
    }

    /// The pool, from a configuration already validated.
    fn build(config: AdmissionConfig, source: impl MemorySource) -> Result<Self, ConfigError> {
        Self::build_sharing(config, source, None)
    }

    /// [`build`](Self::build), sharing charges with the processes of the cgroup whose
    /// directory is `cgroup_dir`, if given and configured.
    fn build_sharing(
        config: AdmissionConfig,
        source: impl MemorySource,
        cgroup_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let (budget, budget_text) = resolve_budget(config.memory_budget)?;
        let sharing = match (config.shared_charges, cgroup_dir) {
            (SharedCharges::Off, _) => Sharing::Off("off".into()),
            (SharedCharges::On, None) => {
                return Err(ConfigError::Invalid {
                    setting: "shared_charges",
                    reason: "`on` needs the memory source `cgroup`".into(),
                });
            }
            (_, None) => Sharing::Off(String::new()),
            (sharing, Some(dir)) => match budget {
                None => Sharing::Off("off: no memory budget to share".into()),
                Some(budget) => match Neighbourhood::join(Path::new(shared::ROOT), dir, budget) {
                    Ok(neighbourhood) => Sharing::On(neighbourhood),
                    Err(unusable) if sharing == SharedCharges::On => {
                        return Err(ConfigError::Invalid {
                            setting: "shared_charges",
                            reason: format!("the folder {unusable}"),
                        });
                    }
                    Err(unusable) => {
                        tracing::warn!(
                            %unusable,
                            "shared charges off: the folder cannot be used; this process counts only its own charges"
                        );
                        Sharing::Off(format!("off: the folder {unusable}"))
                    }
                },
            },
        };
        if budget.is_some_and(|budget| config.request_estimate >= budget) {
            return Err(ConfigError::Invalid {
                setting: "request_estimate",
                reason: "must be smaller than the memory budget".into(),
            });
        }
        // Beyond any real server; the bounds keep the state word's fields apart.
        let max_concurrency = config.max_concurrency.min(MAX_CONCURRENCY);
        let budget = budget.map(|b| b.min(MAX_BUDGET_BYTES));
        let share = |total: f64| (total * config.critical_reserve / 100.0).ceil();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let settings = Settings {
            max_concurrency,
            budget,
            queue_capacity: config.queue_capacity,
            initial_estimate: config.request_estimate,
            memory_failure: config.memory_failure,
            sample_interval: config.sample_interval,
            reservations: config.reservations,
            critical_slots: (share(max_concurrency as f64) as usize).min(max_concurrency - 1),
            critical_bytes: budget.map_or(0, |b| share(b as f64) as u64),
            lateness_target: config.adaptive_limit.then_some(config.lateness_target),
            initial_limit: starting_limit(cores),
            queue_target: config.queue_target,
            workers: crate::cpu_quota::cores().map_or(cores, |quota| quota.min(cores)),
            observe_only: config.observe_only,
            max_connections: config.max_connections,
        };
        let heartbeat = config.adaptive_limit.then(Heartbeat::new);
        let http_settings = HttpSettings {
            serving: Serving {
                timeout: config.queue_timeout,
                rates: BodyRates {
                    request: config.request_body.rate(),
                    response: config.response_body.rate(),
                    streams: config.streams_min_rate,
                },
            },
            rejecting: Arc::new(Rejecting {
                retry_after: match config.retry_after_secs {
                    Some(secs) => RetryAfter::Fixed(secs),
                    None => RetryAfter::Auto {
                        max: config.retry_after_max_secs,
                    },
                },
                discard: config.discard,
                shaper: config.shaper.clone(),
            }),
            bypass: PathPrefixes::new(config.bypass.clone()),
            classifier: config.classifier.clone(),
            prioritizer: Prioritizer::new(config.prioritize.as_ref(), &config.priority_rules),
            heartbeat: heartbeat.clone(),
            client_deadline: ClientDeadline {
                header: config.deadline_header.clone(),
            },
        };
        let mut description = describe(
            &config,
            &budget_text,
            source.name(),
            source.thread_allocations().is_some(),
        );
        match &sharing {
            Sharing::On(neighbourhood) => description.push_str(&format!(
                "\n  shared charges    with the cgroup's other processes, in {}",
                neighbourhood.dir().display()
            )),
            Sharing::Off(why) if !why.is_empty() => {
                description.push_str(&format!("\n  shared charges    {why}"));
            }
            Sharing::Off(_) => {}
        }
        let controller = Arc::new(Controller::new(settings, Arc::new(source)));
        let neighbourhood = match sharing {
            Sharing::On(neighbourhood) => {
                if let Ok(departure) = neighbourhood.departure() {
                    controller.leave_with(departure);
                }
                Some(neighbourhood)
            }
            Sharing::Off(_) => None,
        };
        metrics::describe();
        sampler::spawn(
            &controller,
            config.sample_interval,
            heartbeat,
            neighbourhood,
        )
        .map_err(|e| ConfigError::Sampler(e.into()))?;
        Ok(Self {
            controller,
            settings: Arc::new(http_settings),
            description: description.into(),
        })
    }

    /// A layer that applies this pool's admission control.
    pub fn layer(&self) -> AdmissionLayer {
        self.settings.ensure_heartbeat();
        AdmissionLayer::new(Arc::clone(&self.controller), Arc::clone(&self.settings))
    }

    /// A listener that counts the connections it accepts against this pool, stops accepting
    /// while there is no room for one more in the memory budget or `ADMISSION_MAX_CONNECTIONS`
    /// are open, and gives idle connections back under pressure: see
    /// [`listener`](crate::listener).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> std::io::Result<()> {
    /// use tokio::net::{TcpListener, TcpStream};
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let config = AdmissionConfig::default();
    /// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// let mut listener = admission.listener(TcpListener::bind("127.0.0.1:0").await?);
    /// let _client = TcpStream::connect(listener.local_addr()?).await?;
    /// let (_connection, _peer) = listener.accept().await?;
    /// assert_eq!(admission.snapshot().connections, 1);
    /// # Ok(()) }
    /// ```
    pub fn listener(&self, listener: tokio::net::TcpListener) -> AdmissionListener {
        AdmissionListener::new(listener, Arc::clone(&self.controller))
    }

    /// The pool's live figures.
    pub fn snapshot(&self) -> Snapshot {
        self.controller.snapshot()
    }

    /// Publishes the figures through the `metrics` facade now. The sampler thread does so
    /// every sample interval; call this before rendering a scrape as well, so that a memory
    /// source that hangs (and the sampler with it) cannot freeze the figures that would show it.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn publish_metrics(&self) {
        metrics::publish(&self.controller.snapshot());
    }

    /// Stops queueing, for a graceful shutdown: requests waiting in the queue are answered
    /// at once with 503 + `Retry-After` (`reason=queue_timeout`: their wait is cut short),
    /// and later requests that cannot be admitted at once get 503 (`reason=queue_full`).
    /// Requests already admitted run to the end, response bodies included. Irreversible.
    ///
    /// ```
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let admission = Admission::with_memory_source(
    ///     AdmissionConfig::default().memory_budget_bytes(1 << 30),
    ///     ManualMemory::new(0),
    /// )
    /// .unwrap();
    /// // On SIGTERM, before the server drains its connections:
    /// admission.close();
    /// assert!(admission.is_closed());
    /// ```
    pub fn close(&self) {
        self.controller.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.controller.is_closed()
    }
}

impl fmt::Display for Admission {
    /// The effective configuration, one setting a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("controller", &self.controller)
            .finish()
    }
}

/// Whether the pool shares its charges with the cgroup's other processes, or why not (empty
/// where sharing does not apply: a source other than the cgroup).
enum Sharing {
    On(Neighbourhood),
    Off(String),
}

/// The source used when the budget is off and jemalloc is unavailable: memory is not read.
#[derive(Debug)]
struct Unmeasured;

impl MemorySource for Unmeasured {
    fn allocated_bytes(&self) -> u64 {
        0
    }

    fn name(&self) -> &'static str {
        "none (budget off, jemalloc is not the global allocator)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ManualMemory;

    #[test]
    fn invalid_configurations_do_not_start() {
        let config = AdmissionConfig::default().max_concurrency(0);
        assert!(Admission::with_memory_source(config, ManualMemory::new(0)).is_err());
        let config = AdmissionConfig::default()
            .memory_budget_bytes(1000)
            .request_estimate(1000);
        assert!(Admission::with_memory_source(config, ManualMemory::new(0)).is_err());
    }

    #[cfg(feature = "jemalloc")]
    #[test]
    fn a_budget_without_jemalloc_as_global_allocator_is_refused() {
        // Unit tests run on the system allocator, so jemalloc's statistics see nothing.
        let config = AdmissionConfig::default().memory_budget_bytes(1 << 30);
        let error = Admission::new(config).unwrap_err();
        assert!(error.to_string().contains("global allocator"), "{error}");
        let off = AdmissionConfig::default().memory_budget(MemoryBudget::Off);
        assert!(Admission::new(off).is_ok());
    }
}
