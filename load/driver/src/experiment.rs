//! Experiments beside the scenarios, with servers of their own (a cgroup, nginx) and a report
//! section of their own: one runner shape for all of them. Each setup runs in turn in a
//! folder of its own; then the section and its chart are written.

use std::path::Path;

use crate::plot;

/// One experiment: its setups, how one is run, and how the runs are reported.
pub struct Experiment<S: 'static, R> {
    /// Its folder in the results, and its log prefix.
    pub name: &'static str,
    pub setups: &'static [S],
    pub describe: fn(&S) -> String,
    /// Runs a setup with its files in a folder of its own (made, and empty), the servers
    /// from the binaries' folder.
    pub run_one: fn(&S, &Path, &Path) -> Result<R, String>,
    pub section: fn(&[R]) -> String,
    /// The chart's file name, in the experiment's folder.
    pub chart_file: &'static str,
    pub chart: fn(&[R], &Path) -> plot::ChartResult,
}

impl<S, R> Experiment<S, R> {
    /// Runs every setup; returns the report's Markdown section.
    pub fn run(&self, out: &Path, bin_dir: &Path) -> Result<String, String> {
        let dir = out.join(self.name);
        let mut runs = Vec::new();
        // ONLY=tower-admission,Vegas limits a run to the setups whose names contain one of
        // these (for quick checks).
        let only = std::env::var("ONLY").ok();
        for (index, setup) in self.setups.iter().enumerate() {
            let name = (self.describe)(setup);
            if only
                .as_deref()
                .is_some_and(|only| !only.split(',').any(|part| name.contains(part)))
            {
                continue;
            }
            eprintln!("[{}] {}", self.name, (self.describe)(setup));
            let setup_dir = dir.join(index.to_string());
            std::fs::create_dir_all(&setup_dir).map_err(|e| e.to_string())?;
            runs.push((self.run_one)(setup, &setup_dir, bin_dir)?);
        }
        (self.chart)(&runs, &dir.join(self.chart_file)).map_err(|e| format!("chart: {e}"))?;
        Ok((self.section)(&runs))
    }
}
