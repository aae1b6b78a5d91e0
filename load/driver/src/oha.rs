//! Load from `oha`, a real HTTP load generator: one process per phase, JSON results.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::Value;

use crate::scenario::Phase;

/// What one `oha` run reported.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub seconds: f64,
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no answer: client timeouts, aborted at the deadline, resets.
    pub errors: u64,
    /// Latency percentiles of 2xx answers, in seconds.
    pub ok_p50: f64,
    pub ok_p99: f64,
    /// Percentiles of job latency, in seconds: from a client's first attempt at a request to
    /// its 2xx, refusals and backoffs included (backing-off clients only).
    pub job_p50: f64,
    pub job_p99: f64,
    /// When each 2xx arrived, in seconds after the phase began (backing-off clients only).
    pub ok_at: Vec<f64>,
}

impl Outcome {
    /// Answers and errors alone, for clients that time nothing.
    pub fn counts(seconds: f64, statuses: BTreeMap<u16, u64>, errors: u64) -> Self {
        Self {
            seconds,
            statuses,
            errors,
            ok_p50: f64::NAN,
            ok_p99: f64::NAN,
            job_p50: f64::NAN,
            job_p99: f64::NAN,
            ok_at: Vec::new(),
        }
    }

    pub fn count(&self, matches: impl Fn(u16) -> bool) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| matches(**s))
            .map(|(_, n)| n)
            .sum()
    }

    /// The requests answered 2xx.
    pub fn served(&self) -> u64 {
        self.count(|s| (200..300).contains(&s))
    }

    /// 2xx per second.
    pub fn goodput(&self) -> f64 {
        self.served() as f64 / self.seconds.max(1e-9)
    }
}

/// Starts `oha` for `phase` against `base` (e.g. `http://127.0.0.1:3000`); `dir` receives
/// its JSON and any request body it needs.
pub fn start(
    oha: &Path,
    phase: &Phase,
    base: &str,
    dir: &Path,
    tag: &str,
) -> Result<(Child, PathBuf), String> {
    let json = dir.join(format!("oha-{tag}.json"));
    let mut command = Command::new(oha);
    command
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--stats-success-breakdown",
        ])
        .args(["-z", &format!("{}ms", phase.duration.as_millis())])
        .args(["-c", &phase.connections.to_string()])
        .arg("-o")
        .arg(&json);
    if let Some(timeout) = phase.timeout {
        command.args(["-t", &format!("{}ms", timeout.as_millis())]);
    }
    if let Some(bytes) = phase.post_json {
        let body = dir.join(format!("body-{bytes}.json"));
        if !body.exists() {
            std::fs::write(&body, json_body(bytes)).map_err(|e| e.to_string())?;
        }
        command
            .args(["-m", "POST", "-T", "application/json", "-D"])
            .arg(body);
    }
    command.arg(format!("{base}{}", phase.path));
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", oha.display()))?;
    Ok((child, json))
}

/// A JSON array of about `bytes` bytes of small objects.
pub fn json_body(bytes: u64) -> String {
    let item = r#"{"id":12345,"name":"admission","tags":["a","b"],"value":3.25},"#;
    let mut body = String::with_capacity(bytes as usize + item.len());
    body.push('[');
    while (body.len() as u64) + (item.len() as u64) < bytes {
        body.push_str(item);
    }
    body.push_str(r#"{"id":0}]"#);
    body
}

pub fn parse(json: &Path) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let statuses = value["statusCodeDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let errors = value["errorDistribution"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    let ok = &value["latencyPercentilesSuccessful"];
    Ok(Outcome {
        seconds: value["summary"]["total"].as_f64().unwrap_or(0.0),
        statuses,
        errors,
        ok_p50: ok["p50"].as_f64().unwrap_or(f64::NAN),
        ok_p99: ok["p99"].as_f64().unwrap_or(f64::NAN),
        job_p50: f64::NAN,
        job_p99: f64::NAN,
        ok_at: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_the_asked_size() {
        let body = json_body(100_000);
        assert!(serde_json::from_str::<Value>(&body).is_ok());
        assert!(
            body.len() >= 99_000 && body.len() <= 100_100,
            "{}",
            body.len()
        );
    }

    #[test]
    fn parses_oha_json() {
        let dir = std::env::temp_dir().join(format!("oha-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.json");
        std::fs::write(
            &path,
            r#"{"summary":{"total":2.0},"statusCodeDistribution":{"200":380,"503":10},"errorDistribution":{"aborted due to deadline":4},"latencyPercentilesSuccessful":{"p50":0.02,"p99":0.04}}"#,
        )
        .unwrap();
        let o = parse(&path).unwrap();
        assert_eq!(o.count(|s| (200..300).contains(&s)), 380);
        assert_eq!(o.count(|s| s == 503), 10);
        assert_eq!(o.errors, 4);
        assert_eq!(o.ok_p99, 0.04);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
