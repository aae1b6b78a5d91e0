//! The memory a percentage budget is a percentage of: the process's cgroup v2 limit, or
//! physical memory when no limit applies.

use std::{fmt, fs, io, path::Path};

/// The memory limit that applies to this process, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryLimit {
    pub(crate) bytes: u64,
    pub(crate) origin: LimitOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitOrigin {
    /// `memory.max` of this cgroup (or the tightest of its ancestors).
    Cgroup(String),
    /// `MemTotal` of `/proc/meminfo`.
    Physical,
}

impl fmt::Display for LimitOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitOrigin::Cgroup(path) => write!(f, "cgroup {path} memory.max"),
            LimitOrigin::Physical => f.write_str("physical memory"),
        }
    }
}

/// Reads the limit from the real `/proc` and `/sys/fs/cgroup`. Fails when `/proc/meminfo`
/// cannot be read or has no `MemTotal`.
pub(crate) fn memory_limit() -> io::Result<MemoryLimit> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    resolve(&cgroup, &meminfo, |dir| {
        fs::read_to_string(Path::new("/sys/fs/cgroup").join(dir).join("memory.max")).ok()
    })
}

/// The tightest `memory.max` on the way from this process's cgroup up to the root (a parent's
/// limit binds its children too), else `MemTotal`.
fn resolve(
    proc_self_cgroup: &str,
    meminfo: &str,
    read_memory_max: impl Fn(&str) -> Option<String>,
) -> io::Result<MemoryLimit> {
    // cgroup v2 has a single line of the form "0::/path".
    let own = proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().trim_start_matches('/'));
    let mut tightest: Option<(u64, String)> = None;
    if let Some(own) = own {
        let mut dir = own.to_owned();
        loop {
            let limit = read_memory_max(&dir).and_then(|text| text.trim().parse::<u64>().ok());
            if let Some(limit) = limit {
                if tightest.as_ref().is_none_or(|(best, _)| limit < *best) {
                    tightest = Some((limit, format!("/{dir}")));
                }
            }
            if dir.is_empty() {
                break;
            }
            dir = dir
                .rsplit_once('/')
                .map(|(parent, _)| parent.to_owned())
                .unwrap_or_default();
        }
    }
    if let Some((bytes, path)) = tightest {
        return Ok(MemoryLimit {
            bytes,
            origin: LimitOrigin::Cgroup(path),
        });
    }
    let kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no MemTotal line"))?;
    Ok(MemoryLimit {
        bytes: kib * 1024,
        origin: LimitOrigin::Physical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";

    #[test]
    fn no_cgroup_means_physical_memory() {
        let limit = resolve("", MEMINFO, |_| None).unwrap();
        assert_eq!(limit.bytes, 24_576_000 * 1024);
        assert_eq!(limit.origin, LimitOrigin::Physical);
    }

    #[test]
    fn max_everywhere_means_physical_memory() {
        let limit = resolve("0::/a/b\n", MEMINFO, |_| Some("max\n".into())).unwrap();
        assert_eq!(limit.origin, LimitOrigin::Physical);
    }

    #[test]
    fn own_cgroup_limit() {
        let limit = resolve("0::/app\n", MEMINFO, |dir| {
            (dir == "app").then(|| "1073741824\n".to_owned())
        })
        .unwrap();
        assert_eq!(limit.bytes, 1 << 30);
        assert_eq!(limit.origin, LimitOrigin::Cgroup("/app".into()));
    }

    #[test]
    fn a_parent_limit_binds_the_child() {
        let limit = resolve("0::/slice/app\n", MEMINFO, |dir| match dir {
            "slice/app" => Some("max".into()),
            "slice" => Some("536870912".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(limit.bytes, 512 << 20);
        assert_eq!(limit.origin, LimitOrigin::Cgroup("/slice".into()));
    }

    #[test]
    fn cgroup_v1_lines_are_ignored() {
        let limit = resolve("4:memory:/docker/x\n", MEMINFO, |_| Some("1".into())).unwrap();
        assert_eq!(limit.origin, LimitOrigin::Physical);
    }

    #[test]
    fn the_real_machine_has_a_limit() {
        let limit = memory_limit().unwrap();
        assert!(limit.bytes > 0);
    }
}
