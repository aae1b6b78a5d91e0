//! Load over h2c from `h2load` (nghttp2's HTTP/2 benchmark): many streams on few
//! connections, as gRPC clients and HTTP/2 proxies send them. One process per phase; its text
//! summary parsed.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use crate::{oha::Outcome, scenario::Phase};

/// Runs `h2load` for `phase` against `base` (`http://…`, spoken as h2c), `streams` at once
/// on each connection; its output goes to `dir`.
pub fn run(
    phase: &Phase,
    streams: u32,
    base: &str,
    dir: &Path,
    tag: &str,
) -> Result<Outcome, String> {
    let mut command = Command::new("h2load");
    command
        .args(["-D", &format!("{}", phase.duration.as_secs().max(1))])
        .args(["-c", &phase.connections.to_string()])
        .args(["-m", &streams.to_string()])
        .arg(format!("{base}{}", phase.path));
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start h2load (Debian's nghttp2-client): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    std::fs::write(dir.join(format!("h2load-{tag}.txt")), &text).map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "h2load exited with {} in phase {}",
            output.status, phase.label
        ));
    }
    parse(&text)
}

/// Reads h2load's summary: the run's length, the answers by status class, and the requests
/// that got none. h2load gives latency as min, max, mean and deviation only: the percentiles
/// stay unknown.
pub fn parse(text: &str) -> Result<Outcome, String> {
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .ok_or_else(|| format!("h2load printed no {prefix:?} line"))
    };
    let seconds = line("finished in ")?
        .split(',')
        .next()
        .and_then(|s| s.trim().strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .ok_or("unreadable run length")?;
    let counts = |text: &str, suffix: &str| -> Option<u64> {
        text.split(',')
            .find_map(|part| part.trim().strip_suffix(suffix)?.trim().parse().ok())
    };
    let requests = line("requests: ")?;
    let errors =
        counts(requests, "errored").unwrap_or(0) + counts(requests, "timeout").unwrap_or(0);
    let codes = line("status codes: ")?;
    // By class: the example server's only 5xx are the layer's (or tower's) 503s.
    let statuses = [(200, "2xx"), (300, "3xx"), (400, "4xx"), (503, "5xx")]
        .into_iter()
        .filter_map(|(status, class)| Some((status, counts(codes, class)?)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(Outcome::counts(seconds, statuses, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary() {
        let text = "\
finished in 2.00s, 1817.00 req/s, 113.70KB/s
requests: 3634 total, 3674 started, 3634 done, 3000 succeeded, 634 failed, 3 errored, 2 timeout
status codes: 3000 2xx, 0 3xx, 0 4xx, 631 5xx
";
        let o = parse(text).unwrap();
        assert_eq!(o.seconds, 2.0);
        assert_eq!(o.count(|s| (200..300).contains(&s)), 3000);
        assert_eq!(o.count(|s| s == 503), 631);
        assert_eq!(o.errors, 5);
        assert!(parse("nothing").is_err());
    }
}
