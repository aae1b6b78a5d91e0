//! Experiments beside the scenarios, with servers of their own (a cgroup, nginx) and a report
//! section of their own: one runner shape for all of them. Each setup runs in turn in a
//! folder of its own; then the section and its chart are written.

use std::path::Path;

use crate::plot;

/// One experiment: its setups, how one is run, and how the runs are reported.
pub trait Experiment {
    /// The experiment's name: its folder in the results, and its log prefix.
    const NAME: &'static str;
    /// The chart's file name, in the experiment's folder.
    const CHART: &'static str;
    type Setup: 'static;
    type Run;

    fn setups() -> &'static [Self::Setup];
    fn describe(setup: &Self::Setup) -> String;
    /// Runs `setup` with its files in `dir` (made, and empty), the servers from `bin_dir`.
    fn run_one(setup: &Self::Setup, dir: &Path, bin_dir: &Path) -> Result<Self::Run, String>;
    fn section(runs: &[Self::Run]) -> String;
    fn chart(runs: &[Self::Run], path: &Path) -> plot::ChartResult;
}

/// Runs every setup of `E`; returns the report's Markdown section.
pub fn run<E: Experiment>(out: &Path, bin_dir: &Path) -> Result<String, String> {
    let dir = out.join(E::NAME);
    let mut runs = Vec::new();
    for (index, setup) in E::setups().iter().enumerate() {
        eprintln!("[{}] {}", E::NAME, E::describe(setup));
        let setup_dir = dir.join(index.to_string());
        std::fs::create_dir_all(&setup_dir).map_err(|e| e.to_string())?;
        runs.push(E::run_one(setup, &setup_dir, bin_dir)?);
    }
    E::chart(&runs, &dir.join(E::CHART)).map_err(|e| format!("chart: {e}"))?;
    Ok(E::section(&runs))
}
