//! The memory a percentage budget is a percentage of: the process's cgroup limit (v2's
//! `memory.max`, or v1's `memory.limit_in_bytes`), or physical memory when no limit applies.

use std::{fmt, fs, io, path::Path};

use crate::memory::cgroup_dir::CgroupDir;

/// The memory limit that applies to this process, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryLimit {
    pub(crate) bytes: u64,
    pub(crate) origin: LimitOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitOrigin {
    /// The limit of this cgroup (or the tightest of its ancestors).
    Cgroup(String),
    /// `MemTotal` of `/proc/meminfo`.
    Physical,
}

impl fmt::Display for LimitOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitOrigin::Cgroup(path) => write!(f, "cgroup {path} memory limit"),
            LimitOrigin::Physical => f.write_str("physical memory"),
        }
    }
}

/// Reads the limit from the real `/proc` and `/sys/fs/cgroup`. Fails when `/proc/meminfo`
/// cannot be read or has no `MemTotal`.
pub(crate) fn memory_limit() -> io::Result<MemoryLimit> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    resolve(Path::new("/sys/fs/cgroup"), &cgroup, &meminfo)
}

/// The tightest limit on the way from this process's memory cgroup up to the root (a
/// parent's limit binds its children too), else `MemTotal`.
fn resolve(mount: &Path, proc_self_cgroup: &str, meminfo: &str) -> io::Result<MemoryLimit> {
    let limit = CgroupDir::of_process(mount, proc_self_cgroup).and_then(|c| c.limit());
    if let Some((bytes, path)) = limit {
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
    use crate::memory::cgroup_dir::tests::FakeMount;

    const MEMINFO: &str = "MemTotal:       24576000 kB\nMemFree:        1000 kB\n";

    fn v2(name: &str, limits: &[(&str, &str)]) -> FakeMount {
        let mount = FakeMount::new(name);
        for (dir, limit) in limits {
            mount.write(dir, "memory.current", "0\n");
            mount.write(dir, "memory.max", limit);
        }
        mount
    }

    #[test]
    fn no_cgroup_means_physical_memory() {
        let mount = FakeMount::new("limit-none");
        let limit = resolve(&mount.0, "", MEMINFO).unwrap();
        assert_eq!(limit.bytes, 24_576_000 * 1024);
        assert_eq!(limit.origin, LimitOrigin::Physical);
    }

    #[test]
    fn max_everywhere_means_physical_memory() {
        let mount = v2("limit-max", &[("a/b", "max\n"), ("a", "max\n")]);
        let limit = resolve(&mount.0, "0::/a/b\n", MEMINFO).unwrap();
        assert_eq!(limit.origin, LimitOrigin::Physical);
    }

    #[test]
    fn own_cgroup_limit() {
        let mount = v2("limit-own", &[("app", "1073741824\n")]);
        let limit = resolve(&mount.0, "0::/app\n", MEMINFO).unwrap();
        assert_eq!(limit.bytes, 1 << 30);
        assert_eq!(limit.origin, LimitOrigin::Cgroup("/app".into()));
    }

    #[test]
    fn a_parent_limit_binds_the_child() {
        let mount = v2(
            "limit-parent",
            &[("slice/app", "max"), ("slice", "536870912")],
        );
        let limit = resolve(&mount.0, "0::/slice/app\n", MEMINFO).unwrap();
        assert_eq!(limit.bytes, 512 << 20);
        assert_eq!(limit.origin, LimitOrigin::Cgroup("/slice".into()));
    }

    #[test]
    fn cgroup_v1_limits_count_where_v2_has_no_memory_controller() {
        let mount = FakeMount::new("limit-v1");
        mount.write("memory/docker/x", "memory.usage_in_bytes", "1\n");
        mount.write("memory/docker/x", "memory.limit_in_bytes", "268435456\n");
        let limit = resolve(&mount.0, "4:memory:/docker/x\n0::/\n", MEMINFO).unwrap();
        assert_eq!(limit.bytes, 256 << 20);
        assert_eq!(limit.origin, LimitOrigin::Cgroup("/docker/x".into()));
    }

    #[test]
    fn the_real_machine_has_a_limit() {
        let limit = memory_limit().unwrap();
        assert!(limit.bytes > 0);
    }
}
