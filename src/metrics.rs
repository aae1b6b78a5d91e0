//! The figures listed in the README's "Observability" section, through the `metrics` facade.
//!
//! Gauges and counters are published by the sampler thread from a [`Snapshot`] (and by
//! [`Admission::publish_metrics`](crate::Admission::publish_metrics)), so the request path
//! pays nothing for them; only the queue-wait histogram is recorded per request,
//! and only for requests that waited.

use std::time::Duration;

use crate::{priority::Priority, snapshot::Snapshot};

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Duration;

    use metrics::{
        Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };

    use crate::{
        data_rate::Direction,
        priority::Priority,
        rejection::Discard,
        rejection::{Limit, Reason},
        snapshot::Snapshot,
    };

    pub(crate) fn describe() {
        describe_gauge!(
            "admission_in_flight",
            "Requests admitted and not yet finished."
        );
        describe_gauge!("admission_queued", "Requests waiting for admission.");
        describe_gauge!(
            "admission_memory_bytes",
            Unit::Bytes,
            "Live allocated bytes, as last sampled."
        );
        describe_gauge!(
            "admission_reserved_bytes",
            Unit::Bytes,
            "Bytes charged to requests in flight: estimates, or what they allocated when more."
        );
        describe_gauge!(
            "admission_held_bytes",
            Unit::Bytes,
            "Bytes held outside handlers, counted as spoken for beside the charges: queued requests' connections and heads, connections discarding a rejected body, the listener's open connections."
        );
        describe_counter!(
            "admission_client_deadline_total",
            "Waiters that left at their client's deadline (grpc-timeout, or the deadline header), before the queue timeout."
        );
        describe_gauge!(
            "admission_shared_charges",
            "1 while the pool shares charges with the other processes of its memory cgroup, 0 when not (the effective configuration says why)."
        );
        describe_gauge!(
            "admission_neighbours",
            "Other processes of the memory cgroup whose shared records count here."
        );
        describe_gauge!(
            "admission_neighbour_bytes",
            Unit::Bytes,
            "What the other processes of the memory cgroup have admitted and not yet allocated, counted as spoken for here."
        );
        describe_gauge!(
            "admission_memory_budget_bytes",
            Unit::Bytes,
            "The memory budget (+Inf when off)."
        );
        describe_gauge!("admission_max_concurrency", "The concurrency limit.");
        describe_gauge!("admission_queue_capacity", "The queue's capacity.");
        describe_counter!("admission_admitted_total", "Requests admitted.");
        describe_counter!(
            "admission_admitted_over_budget_total",
            "Requests admitted over the memory budget because nothing else was in flight."
        );
        describe_counter!(
            "admission_rejected_total",
            "Requests rejected, by reason and limit."
        );
        describe_counter!(
            "admission_would_reject_total",
            "Observing only: requests admitted that would have been rejected, by reason and limit."
        );
        describe_counter!(
            "admission_memory_source_errors_total",
            "Memory source refreshes that failed."
        );
        describe_gauge!(
            "admission_memory_reading_age_seconds",
            Unit::Seconds,
            "Time since the memory source last refreshed successfully."
        );
        describe_gauge!(
            "admission_concurrency_limit",
            "The live concurrency limit: max_concurrency, or less while the runtime runs late (it falls to what was in use, by a tenth to a half, after two late 50 ms windows; every fall to half or less is logged). The CPU gate holds CPU-bound work back below it: see admission_cpu_*."
        );
        describe_gauge!(
            "admission_cpu_saturated",
            "1 while the CPU is saturated (request polls keep the workers busy and they hardly ever park): only then does the CPU gate hold requests back."
        );
        describe_gauge!(
            "admission_cpu_workers",
            "The workers the CPU gate counts: the runtime's, or fewer under a cgroup CPU quota."
        );
        describe_gauge!(
            "admission_cpu_charged_seconds",
            Unit::Seconds,
            "CPU work charged to the requests in flight: each one's class demand less what its polls used."
        );
        describe_gauge!(
            "admission_cpu_capacity_seconds",
            Unit::Seconds,
            "The CPU work the gate admits at once while saturated: the workers times 1.5 typical requests."
        );
        describe_gauge!(
            "admission_class_cpu_seconds",
            Unit::Seconds,
            "CPU time one request of the class demands (time in its polls), learned per cost class; class is the first request the class table saw (METHOD /path), or other."
        );
        describe_gauge!(
            "admission_class_peak_bytes",
            Unit::Bytes,
            "The most one request of the class allocated beyond its Content-Length lately, per cost class."
        );
        describe_gauge!(
            "admission_runtime_lateness_seconds",
            Unit::Seconds,
            "How late the runtime's heartbeat task ran at the last reading."
        );
        describe_histogram!(
            "admission_queue_wait_seconds",
            Unit::Seconds,
            "Time spent queued by the requests that waited."
        );
        describe_counter!(
            "admission_priority_admitted_total",
            "Requests admitted, by priority."
        );
        describe_counter!(
            "admission_priority_rejected_total",
            "Requests rejected, by priority and reason."
        );
        describe_histogram!(
            "admission_priority_queue_wait_seconds",
            Unit::Seconds,
            "Time spent queued by the requests that waited, by priority."
        );
        describe_counter!(
            "admission_cut_off_total",
            "Admitted requests cut off because their client sent (direction=request) or read (direction=response) the body slower than the minimum rate."
        );
        describe_counter!(
            "admission_discards_total",
            "Rejected requests with an unread body, by how it ended: read to its end and dropped so the client could read the answer (whole), or answered with Connection: close (limit, timeout, too_slow, gone, skipped)."
        );
        describe_counter!(
            "admission_discarded_bytes_total",
            Unit::Bytes,
            "Bytes of rejected requests' bodies read and dropped."
        );
        describe_gauge!(
            "admission_connections",
            "Connections open, counted by the pool's listener; each holds what an open connection holds in the memory spoken for."
        );
        describe_counter!(
            "admission_accept_pauses_total",
            "Times the pool's listener stopped accepting: memory spoken for over the budget, or max_connections open."
        );
        describe_counter!(
            "admission_idle_connections_closed_total",
            "Idle connections (no request for a second or more) the pool's listener asked to close, oldest first, while memory was short."
        );
        // Registered up front, so the histogram is scraped (empty) before anyone waits.
        let _ = histogram!("admission_queue_wait_seconds");
    }

    pub(crate) fn publish(s: &Snapshot) {
        gauge!("admission_in_flight").set(s.in_flight as f64);
        gauge!("admission_queued").set(s.queued as f64);
        gauge!("admission_memory_bytes").set(s.memory_bytes as f64);
        gauge!("admission_reserved_bytes").set(s.charged_bytes as f64);
        gauge!("admission_held_bytes").set(s.held_bytes as f64);
        counter!("admission_client_deadline_total").absolute(s.client_deadlines);
        gauge!("admission_shared_charges").set(f64::from(u8::from(s.shared_charges)));
        gauge!("admission_neighbours").set(s.neighbours as f64);
        gauge!("admission_neighbour_bytes").set(s.neighbour_bytes as f64);
        gauge!("admission_memory_budget_bytes")
            .set(s.memory_budget_bytes.map_or(f64::INFINITY, |b| b as f64));
        gauge!("admission_max_concurrency").set(s.max_concurrency as f64);
        gauge!("admission_concurrency_limit").set(s.concurrency_limit as f64);
        gauge!("admission_runtime_lateness_seconds").set(s.runtime_lateness.as_secs_f64());
        gauge!("admission_cpu_saturated").set(f64::from(u8::from(s.cpu_saturated)));
        gauge!("admission_cpu_workers").set(s.cpu_workers as f64);
        gauge!("admission_cpu_charged_seconds").set(s.cpu_charged.as_secs_f64());
        gauge!("admission_cpu_capacity_seconds").set(s.cpu_capacity.as_secs_f64());
        // At most one series per slot of the bounded class table.
        for class in &s.classes {
            let name = class.name.clone();
            if let Some(cpu) = class.cpu {
                gauge!("admission_class_cpu_seconds", "class" => name.clone())
                    .set(cpu.as_secs_f64());
            }
            if let Some(peak) = class.peak_bytes {
                gauge!("admission_class_peak_bytes", "class" => name).set(peak as f64);
            }
        }
        gauge!("admission_queue_capacity").set(s.queue_capacity as f64);
        gauge!("admission_connections").set(s.connections as f64);
        counter!("admission_accept_pauses_total").absolute(s.accept_pauses);
        counter!("admission_idle_connections_closed_total").absolute(s.idle_connections_closed);
        counter!("admission_admitted_total").absolute(s.admitted);
        counter!("admission_admitted_over_budget_total").absolute(s.admitted_over_budget);
        counter!("admission_memory_source_errors_total").absolute(s.memory_source_errors);
        gauge!("admission_memory_reading_age_seconds").set(s.memory_reading_age.as_secs_f64());
        let observing = s.observe_only;
        for reason in Reason::ALL {
            for limit in Limit::ALL {
                // Only memory makes a request too large; only a CPU that cannot keep up
                // (the gate, or the live limit once it has fallen) or memory sheds for
                // waiting.
                let possible = match reason {
                    Reason::TooLarge => limit == Limit::Memory,
                    Reason::StandingQueue => {
                        matches!(limit, Limit::Adaptive | Limit::Cpu | Limit::Memory)
                    }
                    _ => true,
                };
                if !possible {
                    continue;
                }
                counter!("admission_rejected_total", "reason" => reason.as_str(), "limit" => limit.as_str())
                    .absolute(s.rejected(reason, limit));
                if observing {
                    counter!("admission_would_reject_total", "reason" => reason.as_str(), "limit" => limit.as_str())
                        .absolute(s.would_reject(reason, limit));
                }
            }
        }
        for priority in Priority::ALL {
            let label = priority.as_str();
            counter!("admission_priority_admitted_total", "priority" => label)
                .absolute(s.admitted_with(priority));
            for reason in Reason::ALL {
                counter!("admission_priority_rejected_total", "priority" => label, "reason" => reason.as_str())
                    .absolute(s.rejected_with(priority, reason));
            }
        }
        for direction in [Direction::Request, Direction::Response] {
            counter!("admission_cut_off_total", "direction" => direction.as_str())
                .absolute(s.cut_off(direction));
        }
        for outcome in Discard::ALL {
            counter!("admission_discards_total", "outcome" => outcome.as_str())
                .absolute(s.discards(outcome));
        }
        counter!("admission_discarded_bytes_total").absolute(s.discarded_bytes);
    }

    pub(crate) fn record_queue_wait(wait: Duration, priority: Priority) {
        let seconds = wait.as_secs_f64();
        histogram!("admission_queue_wait_seconds").record(seconds);
        histogram!("admission_priority_queue_wait_seconds", "priority" => priority.as_str())
            .record(seconds);
    }
}

/// Describes the metrics to the installed recorder.
pub(crate) fn describe() {
    #[cfg(feature = "metrics")]
    enabled::describe();
}

/// Publishes the gauges and counters.
pub(crate) fn publish(snapshot: &Snapshot) {
    #[cfg(feature = "metrics")]
    enabled::publish(snapshot);
    #[cfg(not(feature = "metrics"))]
    let _ = snapshot;
}

/// Records how long a request of `priority` waited in the queue.
pub(crate) fn record_queue_wait(wait: Duration, priority: Priority) {
    #[cfg(feature = "metrics")]
    enabled::record_queue_wait(wait, priority);
    #[cfg(not(feature = "metrics"))]
    let _ = (wait, priority);
}
