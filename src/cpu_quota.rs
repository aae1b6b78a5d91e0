//! How many cores a cgroup v2 CPU quota (`cpu.max`) lets this process use: a container given
//! two cores on a larger machine has a tokio runtime with a worker per machine core, but only
//! two cores' worth of time.

use std::{fs, path::Path, sync::OnceLock};

/// The cores the quota of this process's cgroup, or of any cgroup above it, allows (rounded
/// up); `None` where there is no quota, or no cgroup v2. Read once, as the memory limit is.
pub(crate) fn cores() -> Option<usize> {
    static CORES: OnceLock<Option<usize>> = OnceLock::new();
    *CORES.get_or_init(read)
}

fn read() -> Option<usize> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|line| line.strip_prefix("0::"))?;
    cores_below(Path::new("/sys/fs/cgroup"), path)
}

/// The least quota from the cgroup at `path` below `mount` up to the root.
fn cores_below(mount: &Path, path: &str) -> Option<usize> {
    let mut dir = mount.join(path.trim_start_matches('/'));
    let mut least: Option<usize> = None;
    loop {
        if let Some(cores) = fs::read_to_string(dir.join("cpu.max"))
            .ok()
            .and_then(|text| parse(&text))
        {
            least = Some(least.map_or(cores, |l| l.min(cores)));
        }
        if dir == mount || !dir.pop() || !dir.starts_with(mount) {
            return least;
        }
    }
}

/// `cpu.max` is `$MAX $PERIOD`, or `max $PERIOD` for no quota.
fn parse(text: &str) -> Option<usize> {
    let mut fields = text.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?;
    let period: u64 = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
    (period > 0).then(|| quota.div_ceil(period).max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_max() {
        assert_eq!(parse("max 100000\n"), None);
        assert_eq!(parse("200000 100000\n"), Some(2));
        assert_eq!(parse("150000 100000"), Some(2), "rounded up");
        assert_eq!(parse("5000 100000"), Some(1));
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("100 0"), None);
    }

    #[test]
    fn the_least_quota_up_the_tree_counts() {
        let root = std::env::temp_dir().join(format!("admission-cpu-max-{}", std::process::id()));
        let leaf = root.join("pod/app");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(root.join("pod/cpu.max"), "300000 100000\n").unwrap();
        fs::write(leaf.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(cores_below(&root, "/pod/app"), Some(3));
        fs::write(leaf.join("cpu.max"), "100000 100000\n").unwrap();
        assert_eq!(cores_below(&root, "/pod/app"), Some(1));
        assert_eq!(cores_below(&root, "/elsewhere"), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
