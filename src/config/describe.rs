//! The effective configuration, described one setting a line (what `Display` of an
//! `Admission` prints).

use bytesize::ByteSize;

use super::AdmissionConfig;
use crate::controller::QueueTarget;
use crate::{data_rate::MinDataRate, memory::MemorySourceKind};

pub(crate) fn describe(
    config: &AdmissionConfig,
    budget: &str,
    source: &str,
    tracks: bool,
) -> String {
    let charge = ByteSize::b(config.request_estimate).display().iec();
    let charge = if tracks {
        format!(
            "until its first poll, Content-Length + the most its class allocated lately ({charge} for a class not seen yet); then what it allocates, plus the most one poll of its class rose lately"
        )
    } else {
        format!("Content-Length + {charge}")
    };
    let classes = if config.classifier.is_some() {
        "the classifier's"
    } else {
        "method and path"
    };
    let reservations = if config.reservations { "on" } else { "off" };
    let bypass = if config.bypass.is_empty() {
        "none".to_owned()
    } else {
        config.bypass.join(", ")
    };
    let priorities = describe_priorities(config);
    let cgroup_budget = match config.memory_source {
        MemorySourceKind::Both => format!(" (cgroup budget {})", config.cgroup_budget),
        _ => String::new(),
    };
    let deadline_header = match &config.deadline_header {
        Some(header) => format!(", {header} in ms"),
        None => String::new(),
    };
    let queue_timeout = format!(
        "{}, or the client's own deadline when sooner (grpc-timeout{deadline_header})",
        humantime::format_duration(config.queue_timeout),
    );
    let mode = if config.observe_only {
        "\n  OBSERVE ONLY: nothing is rejected; what would be is counted in admission_would_reject_total"
    } else {
        ""
    };
    format!(
        "tower-admission effective configuration:{mode}\n\
         \x20 max concurrency   {}\n\
         \x20 live limit        {}\n\
         \x20 queue target      {}\n\
         \x20 memory budget     {budget}\n\
         \x20 memory source     {source}{cgroup_budget}\n\
         \x20 cost classes      {classes}\n\
         \x20 request charge    {charge}\n\
         \x20 reservations      {reservations}\n\
         \x20 queue capacity    {}\n\
         \x20 queue timeout     {}\n\
         \x20 sample interval   {}\n\
         \x20 bypass            {bypass}\n\
         \x20 priorities        {priorities}\n\
         \x20 retry-after       {}\n\
         \x20 memory failure    fail {}\n\
         \x20 request bodies    {}\n\
         \x20 response bodies   {}\n\
         \x20 rejected bodies    {}\n\
         \x20 connections       {}",
        config.max_concurrency,
        if config.adaptive_limit {
            format!(
                "adaptive: while the cpu is saturated, the cpu work in flight (time in request polls, learned per class) fits the workers within 1.5 typical requests; the live limit falls while the runtime runs more than {} late",
                humantime::format_duration(config.lateness_target)
            )
        } else {
            "off (fixed at max concurrency)".to_owned()
        },
        match (config.adaptive_limit, config.queue_target) {
            (false, _) => "none (the adaptive limit is off)".to_owned(),
            (true, QueueTarget::Auto) => "auto: half the class's cpu demand, 1 ms at least; held back by a saturated cpu, a request predicted or found to wait over twice that is shed".to_owned(),
            (true, QueueTarget::Fixed(target)) => format!(
                "{}: held back by a saturated cpu, a request predicted or found to wait over twice that is shed",
                humantime::format_duration(target)
            ),
            (true, QueueTarget::Off) => "off (waiters wait up to the queue timeout)".to_owned(),
        },
        config.queue_capacity,
        queue_timeout,
        humantime::format_duration(config.sample_interval),
        match config.retry_after_secs {
            Some(secs) => format!("{secs} s"),
            None => format!(
                "auto: the queue over the saturated admission rate, 1 to {} s, ±25 %",
                config.retry_after_max_secs
            ),
        },
        config.memory_failure,
        describe_request_rate(config),
        describe_rate(config.response_body.rate()),
        match config.discard.bytes {
            0 => "left unread (HTTP/1: the answer closes the connection)".to_owned(),
            bytes => format!(
                "discarded up to {} within {} before the answer (HTTP/1)",
                ByteSize::b(bytes).display().iec(),
                humantime::format_duration(config.discard.timeout)
            ),
        },
        match config.max_connections {
            Some(max) => format!("at most {max} open, through the pool's listener"),
            None => "no maximum".to_owned(),
        },
    )
}

fn describe_priorities(config: &AdmissionConfig) -> String {
    let rules = &config.priority_rules;
    let mut parts = Vec::new();
    if config.prioritize.is_some() {
        parts.push("the prioritizer's".to_owned());
    } else {
        if let Some(header) = &rules.header {
            parts.push(format!("header {header}"));
        }
        for (name, prefixes) in [
            ("critical", &rules.critical),
            ("sheddable", &rules.sheddable),
        ] {
            if !prefixes.as_slice().is_empty() {
                parts.push(format!("{name} {}", prefixes.as_slice().join(", ")));
            }
        }
    }
    if parts.is_empty() {
        return "none (every request is normal)".to_owned();
    }
    if config.critical_reserve > 0.0 {
        parts.push(format!(
            "{} % reserved for critical",
            config.critical_reserve
        ));
    }
    parts.join("; ")
}

fn describe_request_rate(config: &AdmissionConfig) -> String {
    let rate = describe_rate(config.request_body.rate());
    match (config.request_body.rate(), config.streams_min_rate) {
        (Some(_), false) => format!("{rate} (gRPC streams: not cut off, charged what arrived)"),
        _ => rate,
    }
}

fn describe_rate(rate: Option<MinDataRate>) -> String {
    match rate {
        Some(rate) => format!("at least {rate}"),
        None => "no minimum rate".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_readable_block() {
        let config = AdmissionConfig::default()
            .memory_budget_bytes(512 << 20)
            .bypass(["/health", "/metrics"])
            .min_response_body_rate(None);
        let text = describe(&config, "512.0 MiB", "manual", false);
        assert!(text.contains("max concurrency   256"), "{text}");
        assert!(text.contains("memory budget     512.0 MiB"), "{text}");
        assert!(
            text.contains("bypass            /health, /metrics"),
            "{text}"
        );
        assert!(text.contains("queue timeout     1s"), "{text}");
        assert!(text.contains("cost classes      method and path"), "{text}");
        assert!(text.contains("reservations      off"), "{text}");
        assert!(
            text.contains("request bodies    at least 240 B/s after 5s"),
            "{text}"
        );
        assert!(text.contains("response bodies   no minimum rate"), "{text}");
        assert!(text.contains("priorities        none"), "{text}");
        let config = config
            .priority_header(http::HeaderName::from_static("x-priority"))
            .sheddable_paths(["/batch"])
            .critical_reserve(10.0);
        let text = describe(&config, "512.0 MiB", "manual", false);
        assert!(
            text.contains(
                "priorities        header x-priority; sheddable /batch; 10 % reserved for critical"
            ),
            "{text}"
        );
    }
}
