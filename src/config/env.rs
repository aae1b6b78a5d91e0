//! The `ADMISSION_*` environment variables: their names, the forms they accept, and how
//! they override a configuration.

use std::{ffi::OsString, time::Duration};

use bytesize::ByteSize;

use super::{AdmissionConfig, budget::MemoryBudget, error::ConfigError, vars};
use crate::controller::QueueTarget;
use crate::memory::{MemoryFailure, SharedCharges};
use crate::{http_settings::PathPrefixes, memory::MemorySourceKind};

const INTEGER_AT_LEAST_1: &str = "an integer >= 1, such as 256";
const INTEGER_AT_LEAST_1_OR_NONE: &str = "an integer >= 1, such as 10000, or none";
const INTEGER_AT_LEAST_0: &str = "an integer >= 0, such as 1024";
const SIZE_FORMS: &str =
    "a size such as 512MiB, 2GB or 1048576 (bytes), a percentage in (0, 100] such as 75%, or off";
const DURATION_FORMS: &str = "a duration greater than zero, such as 250ms or 2s";
const MEMORY_FAILURE_FORMS: &str = "open or closed";
const RATE_FORMS: &str = "bytes per second such as 240, 240B/s or 1KiB/s (at least 1 byte), or off";
const RETRY_AFTER_FORMS: &str = "an integer >= 0 (seconds), such as 1, or auto";
const BYPASS_FORMS: &str =
    "comma-separated path prefixes starting with '/', such as /health,/metrics";
const HEADER_FORMS: &str = "a header name such as x-priority, or nothing for none";
const RESERVE_FORMS: &str = "a percentage in [0, 100) such as 10%";
const SOURCE_FORMS: &str = "jemalloc, cgroup or both";
const ON_OFF_FORMS: &str = "on or off";
const SHARED_FORMS: &str = "auto, on or off";
const DISCARD_FORMS: &str = "a size such as 8MiB or 1048576 (bytes), or off";
const QUEUE_TARGET_FORMS: &str = "auto, a duration greater than zero such as 5ms, or off";

impl AdmissionConfig {
    /// The defaults, overridden by the `ADMISSION_*` environment variables.
    ///
    /// Fails on a malformed value, a value that is not UTF-8, or an unknown `ADMISSION_*`
    /// name; the error names the variable, the value and the accepted forms.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::default().apply_env()
    }

    /// `self`, overridden by the `ADMISSION_*` environment variables that are set.
    ///
    /// Use it to change a default that the environment may still override, as the example
    /// server does for its bypass list.
    pub fn apply_env(self) -> Result<Self, ConfigError> {
        self.apply_vars(std::env::vars_os())
    }

    /// `self`, overridden by the `ADMISSION_*` entries of `vars`; other names are ignored.
    ///
    /// ```
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let config = AdmissionConfig::default()
    ///     .apply_vars([("ADMISSION_MAX_CONCURRENCY", "8"), ("PATH", "/bin")])
    ///     .unwrap();
    /// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// assert_eq!(admission.snapshot().max_concurrency, 8);
    ///
    /// let err = AdmissionConfig::default()
    ///     .apply_vars([("ADMISSION_QUEUE_TIMOUT", "2s")])
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("ADMISSION_QUEUE_TIMEOUT"));
    /// ```
    pub fn apply_vars<I, K, V>(mut self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        for (name, value) in vars {
            let name = name.into();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(vars::PREFIX) {
                continue;
            }
            let Some(var) = vars::ALL.iter().copied().find(|known| *known == name) else {
                return Err(ConfigError::UnknownVariable {
                    name: name.to_owned(),
                    suggestion: nearest_known(name),
                });
            };
            let value = value
                .into()
                .into_string()
                .map_err(|raw| ConfigError::NotUnicode {
                    var,
                    value: raw.to_string_lossy().into_owned(),
                })?;
            self.apply_var(var, &value)?;
        }
        Ok(self)
    }

    fn apply_var(&mut self, var: &'static str, value: &str) -> Result<(), ConfigError> {
        let malformed = |expected: &'static str| ConfigError::Malformed {
            var,
            value: value.to_owned(),
            expected,
        };
        let trimmed = value.trim();
        match var {
            vars::MAX_CONCURRENCY => {
                self.max_concurrency = parse_integer(trimmed)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| malformed(INTEGER_AT_LEAST_1))?;
            }
            vars::MAX_CONNECTIONS => {
                self.max_connections = match trimmed.eq_ignore_ascii_case("none") {
                    true => None,
                    false => Some(
                        parse_integer(trimmed)
                            .filter(|n| *n >= 1)
                            .ok_or_else(|| malformed(INTEGER_AT_LEAST_1_OR_NONE))?,
                    ),
                };
            }
            vars::MEMORY_BUDGET => {
                self.memory_budget = parse_budget(trimmed).ok_or_else(|| malformed(SIZE_FORMS))?;
            }
            vars::CGROUP_BUDGET => {
                self.cgroup_budget = parse_budget(trimmed).ok_or_else(|| malformed(SIZE_FORMS))?;
            }
            vars::SHARED_CHARGES => {
                self.shared_charges = [SharedCharges::Auto, SharedCharges::On, SharedCharges::Off]
                    .into_iter()
                    .find(|sharing| sharing.as_str().eq_ignore_ascii_case(trimmed))
                    .ok_or_else(|| malformed(SHARED_FORMS))?;
            }
            vars::QUEUE_CAPACITY => {
                self.queue_capacity =
                    parse_integer(trimmed).ok_or_else(|| malformed(INTEGER_AT_LEAST_0))?;
            }
            vars::QUEUE_TIMEOUT => {
                self.queue_timeout =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::SAMPLE_INTERVAL => {
                self.sample_interval =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::BYPASS => {
                self.bypass = parse_prefixes(trimmed).ok_or_else(|| malformed(BYPASS_FORMS))?;
            }
            vars::PRIORITY_HEADER => {
                self.priority_rules.header = match trimmed {
                    "" => None,
                    name => Some(name.parse().map_err(|_| malformed(HEADER_FORMS))?),
                };
            }
            vars::DEADLINE_HEADER => {
                self.deadline_header = match trimmed {
                    "" => None,
                    name => Some(name.parse().map_err(|_| malformed(HEADER_FORMS))?),
                };
            }
            vars::CRITICAL_PATHS => {
                let prefixes = parse_prefixes(trimmed).ok_or_else(|| malformed(BYPASS_FORMS))?;
                self.priority_rules.critical = PathPrefixes::new(prefixes);
            }
            vars::SHEDDABLE_PATHS => {
                let prefixes = parse_prefixes(trimmed).ok_or_else(|| malformed(BYPASS_FORMS))?;
                self.priority_rules.sheddable = PathPrefixes::new(prefixes);
            }
            vars::MEMORY_SOURCE => {
                self.memory_source = [
                    MemorySourceKind::Jemalloc,
                    MemorySourceKind::Cgroup,
                    MemorySourceKind::Both,
                ]
                .into_iter()
                .find(|kind| kind.as_str().eq_ignore_ascii_case(trimmed))
                .ok_or_else(|| malformed(SOURCE_FORMS))?;
            }
            vars::CRITICAL_RESERVE => {
                self.critical_reserve = trimmed
                    .strip_suffix('%')
                    .and_then(|pct| pct.trim_end().parse().ok())
                    .filter(|pct| (0.0..100.0).contains(pct))
                    .ok_or_else(|| malformed(RESERVE_FORMS))?;
            }
            vars::RETRY_AFTER => {
                self.retry_after_secs = if trimmed.eq_ignore_ascii_case("auto") {
                    None
                } else {
                    Some(parse_integer(trimmed).ok_or_else(|| malformed(RETRY_AFTER_FORMS))?)
                };
            }
            vars::RETRY_AFTER_MAX => {
                self.retry_after_max_secs = parse_integer(trimmed)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| malformed(INTEGER_AT_LEAST_1))?;
            }
            vars::MEMORY_FAILURE => {
                self.memory_failure = match trimmed.to_ascii_lowercase().as_str() {
                    "open" => MemoryFailure::Open,
                    "closed" => MemoryFailure::Closed,
                    _ => return Err(malformed(MEMORY_FAILURE_FORMS)),
                };
            }
            vars::MIN_REQUEST_BODY_RATE => {
                self.request_body.bytes_per_second =
                    parse_rate(trimmed).ok_or_else(|| malformed(RATE_FORMS))?;
            }
            vars::REQUEST_BODY_GRACE => {
                self.request_body.grace =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::MIN_RESPONSE_BODY_RATE => {
                self.response_body.bytes_per_second =
                    parse_rate(trimmed).ok_or_else(|| malformed(RATE_FORMS))?;
            }
            vars::RESPONSE_BODY_GRACE => {
                self.response_body.grace =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::DISCARD_LIMIT => {
                self.discard.bytes = match trimmed.eq_ignore_ascii_case("off") {
                    true => 0,
                    false => parse_size(trimmed).ok_or_else(|| malformed(DISCARD_FORMS))?,
                };
            }
            vars::DISCARD_TIMEOUT => {
                self.discard.timeout =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::ADAPTIVE_LIMIT => {
                self.adaptive_limit =
                    parse_on_off(trimmed).ok_or_else(|| malformed(ON_OFF_FORMS))?;
            }
            vars::OBSERVE_ONLY => {
                self.observe_only = parse_on_off(trimmed).ok_or_else(|| malformed(ON_OFF_FORMS))?;
            }
            vars::LATENESS_TARGET => {
                self.lateness_target =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::QUEUE_TARGET => {
                self.queue_target = if trimmed.eq_ignore_ascii_case("off") {
                    QueueTarget::Off
                } else if trimmed.eq_ignore_ascii_case("auto") {
                    QueueTarget::Auto
                } else {
                    let target = parse_duration(trimmed).filter(|t| !t.is_zero());
                    QueueTarget::Fixed(target.ok_or_else(|| malformed(QUEUE_TARGET_FORMS))?)
                };
            }
            _ => unreachable!("every name in vars::ALL is handled"),
        }
        Ok(())
    }
}

fn parse_on_off(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

fn parse_integer<T: std::str::FromStr>(value: &str) -> Option<T> {
    // `FromStr` for integers accepts a leading '+'; the accepted forms are plain integers.
    if value.starts_with('+') {
        return None;
    }
    value.parse().ok()
}

fn parse_budget(value: &str) -> Option<MemoryBudget> {
    if value.eq_ignore_ascii_case("off") {
        return Some(MemoryBudget::Off);
    }
    if let Some(pct) = value.strip_suffix('%') {
        let pct: f64 = pct.trim_end().parse().ok()?;
        return (pct > 0.0 && pct <= 100.0).then_some(MemoryBudget::Percent(pct));
    }
    parse_size(value).map(MemoryBudget::Bytes)
}

/// Bytes per second, `None` for off.
fn parse_rate(value: &str) -> Option<Option<u64>> {
    if value.eq_ignore_ascii_case("off") {
        return Some(None);
    }
    let size = value.strip_suffix("/s").unwrap_or(value).trim_end();
    if size.starts_with('+') {
        return None;
    }
    parse_size(size).map(Some)
}

/// A size of at least one byte, such as 240, 240B or 1KiB.
fn parse_size(value: &str) -> Option<u64> {
    // bytesize saturates instead of failing on overflow; a saturated value is a typo.
    let bytes = value.parse::<ByteSize>().ok()?.as_u64();
    (bytes > 0 && bytes < u64::MAX).then_some(bytes)
}

fn parse_duration(value: &str) -> Option<Duration> {
    humantime::parse_duration(value)
        .ok()
        .filter(|d| !d.is_zero())
}

fn parse_prefixes(value: &str) -> Option<Vec<String>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.starts_with('/').then(|| p.to_owned()))
        .collect()
}

fn nearest_known(name: &str) -> Option<&'static str> {
    vars::ALL
        .iter()
        .copied()
        .map(|known| (strsim::levenshtein(name, known), known))
        .min()
        .filter(|(distance, _)| *distance <= 6)
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(name: &str, value: &str) -> Result<AdmissionConfig, ConfigError> {
        AdmissionConfig::default().apply_vars([(name, value)])
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = AdmissionConfig::default();
        assert_eq!(c.max_concurrency, 256);
        assert_eq!(c.memory_budget, MemoryBudget::Percent(75.0));
        assert_eq!(c.queue_capacity, 1024);
        assert_eq!(c.queue_timeout, Duration::from_secs(1));
        assert_eq!(c.sample_interval, Duration::from_millis(10));
        assert!(c.bypass.is_empty());
        assert_eq!(c.retry_after_secs, None, "auto");
        assert_eq!(c.retry_after_max_secs, 30);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn switches_take_on_or_off() {
        for (value, on) in [("on", true), ("OFF", false), (" On ", true)] {
            assert_eq!(apply(vars::OBSERVE_ONLY, value).unwrap().observe_only, on);
            assert_eq!(
                apply(vars::ADAPTIVE_LIMIT, value).unwrap().adaptive_limit,
                on
            );
        }
        for value in ["", "yes", "1", "true"] {
            let text = apply(vars::OBSERVE_ONLY, value).unwrap_err().to_string();
            assert!(text.contains("ADMISSION_OBSERVE_ONLY"), "{text}");
            assert!(text.contains("on or off"), "{text}");
        }
    }

    #[test]
    fn sizes_in_every_accepted_form() {
        let cases = [
            ("512MiB", MemoryBudget::Bytes(512 << 20)),
            ("2GB", MemoryBudget::Bytes(2_000_000_000)),
            ("2GiB", MemoryBudget::Bytes(2 << 30)),
            ("64KB", MemoryBudget::Bytes(64_000)),
            ("64KiB", MemoryBudget::Bytes(64 << 10)),
            ("1048576", MemoryBudget::Bytes(1_048_576)),
            ("100B", MemoryBudget::Bytes(100)),
            (" 512 MiB ", MemoryBudget::Bytes(512 << 20)),
            ("75%", MemoryBudget::Percent(75.0)),
            ("100%", MemoryBudget::Percent(100.0)),
            ("12.5%", MemoryBudget::Percent(12.5)),
            ("off", MemoryBudget::Off),
            ("OFF", MemoryBudget::Off),
        ];
        for (value, expected) in cases {
            let c = apply(vars::MEMORY_BUDGET, value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(c.memory_budget, expected, "{value}");
        }
    }

    #[test]
    fn malformed_sizes_name_variable_value_and_forms() {
        for value in [
            "",
            "0",
            "0%",
            "101%",
            "-5",
            "-5%",
            "abc",
            "12XB",
            "nan%",
            "inf",
            "1.5",
            "20000000TiB",
            "99999999999999999999",
            "5 %%",
        ] {
            let err = apply(vars::MEMORY_BUDGET, value).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("ADMISSION_MEMORY_BUDGET"), "{text}");
            assert!(text.contains(&format!("{value:?}")), "{text}");
            assert!(text.contains("512MiB"), "{text}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(
            apply(vars::MAX_CONCURRENCY, "8").unwrap().max_concurrency,
            8
        );
        assert_eq!(apply(vars::QUEUE_CAPACITY, "0").unwrap().queue_capacity, 0);
        assert_eq!(
            apply(vars::RETRY_AFTER, "0").unwrap().retry_after_secs,
            Some(0)
        );
        assert_eq!(
            apply(vars::RETRY_AFTER, "Auto").unwrap().retry_after_secs,
            None
        );
        assert_eq!(
            apply(vars::RETRY_AFTER_MAX, "12")
                .unwrap()
                .retry_after_max_secs,
            12
        );
        assert!(apply(vars::RETRY_AFTER_MAX, "0").is_err());
        assert_eq!(
            apply(vars::MAX_CONNECTIONS, "10000")
                .unwrap()
                .max_connections,
            Some(10_000)
        );
        assert_eq!(
            apply(vars::MAX_CONNECTIONS, "None")
                .unwrap()
                .max_connections,
            None
        );
        for value in ["0", "-1", "off", ""] {
            let err = apply(vars::MAX_CONNECTIONS, value).unwrap_err();
            assert!(err.to_string().contains("or none"), "{value}: {err}");
        }
        for value in ["0", "-1", "+3", "1.5", "ten", "", "99999999999999999999999"] {
            let err = apply(vars::MAX_CONCURRENCY, value).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Malformed {
                        var: vars::MAX_CONCURRENCY,
                        ..
                    }
                ),
                "{value}"
            );
        }
        for value in ["-1", "x", "4294967296"] {
            assert!(apply(vars::RETRY_AFTER, value).is_err(), "{value}");
            assert!(apply(vars::QUEUE_CAPACITY, "-1").is_err());
        }
    }

    #[test]
    fn durations() {
        let c = apply(vars::QUEUE_TIMEOUT, "250ms").unwrap();
        assert_eq!(c.queue_timeout, Duration::from_millis(250));
        let c = apply(vars::SAMPLE_INTERVAL, "2s").unwrap();
        assert_eq!(c.sample_interval, Duration::from_secs(2));
        for value in ["0s", "0ms", "10", "-1s", "soon", ""] {
            let err = apply(vars::QUEUE_TIMEOUT, value).unwrap_err();
            assert!(err.to_string().contains("250ms"), "{err}");
        }
    }

    #[test]
    fn shared_charges_are_auto_on_or_off() {
        let shared = |value| apply(vars::SHARED_CHARGES, value).map(|c| c.shared_charges);
        assert_eq!(shared("auto").unwrap(), SharedCharges::Auto);
        assert_eq!(shared(" ON").unwrap(), SharedCharges::On);
        assert_eq!(shared(" OFF ").unwrap(), SharedCharges::Off);
        for value in ["yes", "true", ""] {
            let err = shared(value).unwrap_err().to_string();
            assert!(
                err.contains("ADMISSION_SHARED_CHARGES") && err.contains("auto, on or off"),
                "{err}"
            );
        }
    }

    #[test]
    fn discard_bounds() {
        let limit = |value| apply(vars::DISCARD_LIMIT, value).map(|c| c.discard.bytes);
        assert_eq!(limit("8MiB").unwrap(), 8 << 20);
        assert_eq!(limit(" 1048576 ").unwrap(), 1 << 20);
        assert_eq!(limit("OFF").unwrap(), 0);
        for value in ["0", "-1", "lots", "8MiB/s", ""] {
            let err = limit(value).unwrap_err().to_string();
            assert!(
                err.contains("ADMISSION_DISCARD_LIMIT") && err.contains("8MiB"),
                "{err}"
            );
        }
        let timeout = apply(vars::DISCARD_TIMEOUT, "500ms")
            .unwrap()
            .discard
            .timeout;
        assert_eq!(timeout, Duration::from_millis(500));
        assert!(apply(vars::DISCARD_TIMEOUT, "0s").is_err());
    }

    #[test]
    fn body_rates() {
        let rate = |var, value| apply(var, value).map(|c| c.request_body.bytes_per_second);
        for (value, bytes) in [
            ("240", Some(240)),
            ("240B/s", Some(240)),
            ("1KiB/s", Some(1024)),
            (" 2 KiB/s ", Some(2048)),
            ("off", None),
            ("OFF", None),
        ] {
            assert_eq!(
                rate(vars::MIN_REQUEST_BODY_RATE, value).ok(),
                Some(bytes),
                "{value}"
            );
        }
        for value in ["0", "0B/s", "+240", "-1", "fast", "240/min", ""] {
            let err = rate(vars::MIN_REQUEST_BODY_RATE, value).unwrap_err();
            assert!(
                matches!(err, ConfigError::Malformed { .. }),
                "{value}: {err}"
            );
        }
        let c = apply(vars::RESPONSE_BODY_GRACE, "500ms").unwrap();
        assert_eq!(c.response_body.grace, Duration::from_millis(500));
        assert!(apply(vars::REQUEST_BODY_GRACE, "0s").is_err());
        let off = apply(vars::MIN_RESPONSE_BODY_RATE, "off").unwrap();
        assert_eq!(off.response_body.rate(), None);
    }

    #[test]
    fn memory_sources() {
        for (value, kind) in [
            ("jemalloc", MemorySourceKind::Jemalloc),
            (" Cgroup", MemorySourceKind::Cgroup),
            ("both", MemorySourceKind::Both),
        ] {
            assert_eq!(
                apply(vars::MEMORY_SOURCE, value).unwrap().memory_source,
                kind
            );
        }
        let c = apply(vars::CGROUP_BUDGET, "90%").unwrap();
        assert_eq!(c.cgroup_budget, MemoryBudget::Percent(90.0));
        assert_eq!(
            AdmissionConfig::default().cgroup_budget,
            MemoryBudget::Percent(75.0)
        );
        assert!(apply(vars::CGROUP_BUDGET, "lots").is_err());
        let err = apply(vars::MEMORY_SOURCE, "rss").unwrap_err().to_string();
        assert!(
            err.contains("ADMISSION_MEMORY_SOURCE") && err.contains("rss"),
            "{err}"
        );
    }

    #[test]
    fn priority_rules() {
        let c = AdmissionConfig::default()
            .apply_vars([
                (vars::PRIORITY_HEADER, " X-Priority "),
                (vars::CRITICAL_PATHS, "/pay,/login"),
                (vars::SHEDDABLE_PATHS, "/prefetch"),
                (vars::CRITICAL_RESERVE, "12.5%"),
            ])
            .unwrap();
        let rules = &c.priority_rules;
        assert_eq!(rules.header.as_ref().unwrap(), "x-priority");
        assert_eq!(rules.critical.as_slice(), ["/pay", "/login"]);
        assert_eq!(rules.sheddable.as_slice(), ["/prefetch"]);
        assert_eq!(c.critical_reserve, 12.5);
        assert_eq!(
            apply(vars::PRIORITY_HEADER, "")
                .unwrap()
                .priority_rules
                .header,
            None
        );
        for (var, value) in [
            (vars::PRIORITY_HEADER, "x priority"),
            (vars::CRITICAL_PATHS, "pay"),
            (vars::SHEDDABLE_PATHS, "/a,b"),
            (vars::CRITICAL_RESERVE, "10"),
            (vars::CRITICAL_RESERVE, "100%"),
            (vars::CRITICAL_RESERVE, "-1%"),
            (vars::CRITICAL_RESERVE, "NaN%"),
        ] {
            let err = apply(var, value).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(var) && text.contains(value.trim()), "{text}");
        }
    }

    #[test]
    fn bypass_lists() {
        let c = apply(vars::BYPASS, "/health, /metrics,").unwrap();
        assert_eq!(c.bypass, ["/health", "/metrics"]);
        assert!(apply(vars::BYPASS, "").unwrap().bypass.is_empty());
        assert!(apply(vars::BYPASS, "health").is_err());
    }

    #[test]
    fn memory_failure_policies() {
        let policy = |value| apply(vars::MEMORY_FAILURE, value).map(|c| c.memory_failure);
        assert_eq!(policy("open").unwrap(), MemoryFailure::Open);
        assert_eq!(policy(" Closed ").unwrap(), MemoryFailure::Closed);
        for value in ["", "shut", "0", "open,closed"] {
            let text = policy(value).unwrap_err().to_string();
            assert!(text.contains("ADMISSION_MEMORY_FAILURE"), "{text}");
            assert!(text.contains("open or closed"), "{text}");
        }
    }

    #[test]
    fn unknown_names_suggest_the_nearest() {
        let err = apply("ADMISSION_MAX_CONCURENCY", "3").unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::UnknownVariable { name, suggestion: Some(nearest) }
                    if name == "ADMISSION_MAX_CONCURENCY" && *nearest == vars::MAX_CONCURRENCY
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("did you mean ADMISSION_MAX_CONCURRENCY?")
        );
        let err = apply("ADMISSION_", "3").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownVariable { .. }));
    }

    #[test]
    fn other_variables_are_ignored() {
        let c = AdmissionConfig::default()
            .apply_vars([("HOME", "/root"), ("admission_max_concurrency", "x")])
            .unwrap();
        assert_eq!(c, AdmissionConfig::default());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_named() {
        use std::os::unix::ffi::OsStringExt;
        let value = OsString::from_vec(vec![b'1', 0xff]);
        let err = AdmissionConfig::default()
            .apply_vars([(OsString::from(vars::MAX_CONCURRENCY), value)])
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::NotUnicode {
                var: vars::MAX_CONCURRENCY,
                ..
            }
        ));
    }

    proptest::proptest! {
        /// Whatever a variable holds, parsing never panics, and a rejection names the variable.
        #[test]
        fn any_value_is_parsed_or_refused_by_name(
            index in 0..vars::ALL.len(),
            value in proptest::prop_oneof![
                ".*",
                "[0-9]{0,25}",
                "-?[0-9]{1,20}(\\.[0-9]{1,5})?( ?([kKmMgGtTpPeE]i?[bB]|[bB]|%|ms|s|h|x))?",
                "(/[a-z]{0,5},?){0,4}",
            ],
        ) {
            let var = vars::ALL[index];
            match AdmissionConfig::default().apply_vars([(var, value.as_str())]) {
                Ok(config) => proptest::prop_assert!(
                    config.validate().is_ok(),
                    "{var}={value:?} parsed into an invalid config"
                ),
                Err(error) => proptest::prop_assert!(
                    error.to_string().contains(var),
                    "{var}={value:?}: {error}"
                ),
            }
        }

        /// Bytes that are not UTF-8 are rejected by name, whatever else they hold.
        #[cfg(unix)]
        #[test]
        fn any_bytes_are_refused_by_name_when_not_utf8(
            index in 0..vars::ALL.len(),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            use std::os::unix::ffi::OsStringExt;
            let var = vars::ALL[index];
            let utf8 = std::str::from_utf8(&bytes).is_ok();
            let result = AdmissionConfig::default()
                .apply_vars([(OsString::from(var), OsString::from_vec(bytes))]);
            if let Err(error) = result {
                proptest::prop_assert!(error.to_string().contains(var));
            } else {
                proptest::prop_assert!(utf8);
            }
        }
    }
}
