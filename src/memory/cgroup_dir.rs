//! The memory cgroup of this process: where its files are (cgroup v2, or v1's memory
//! hierarchy), its working set, and its limit.
//!
//! The working set is what the kubelet evicts on and what the OOM killer weighs: the
//! cgroup's usage less its inactive file pages, which the kernel reclaims before it kills.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Limits at or above this are "no limit" (cgroup v1 writes `PAGE_COUNTER_MAX` pages).
const UNLIMITED: u64 = 1 << 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// The files of one memory cgroup, below a hierarchy's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupDir {
    version: Version,
    /// The hierarchy's mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/memory` for v1).
    root: PathBuf,
    /// The cgroup's path below `root`, without a leading `/`.
    path: String,
}

impl CgroupDir {
    /// The memory cgroup `proc_self_cgroup` (the text of `/proc/self/cgroup`) names, under
    /// `mount` (`/sys/fs/cgroup`): cgroup v2 if its memory controller is enabled there, else
    /// cgroup v1's memory hierarchy. `None` if neither has the memory files.
    pub(crate) fn of_process(mount: &Path, proc_self_cgroup: &str) -> Option<Self> {
        let v2 = proc_self_cgroup
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .map(|path| Self::new(Version::V2, mount.to_owned(), path));
        let v1 = proc_self_cgroup.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| Self::new(Version::V1, mount.join("memory"), path))
        });
        v2.into_iter().chain(v1).find(Self::has_memory_files)
    }

    /// The cgroup at `dir`, v2 or v1 by the files it has.
    pub(crate) fn at(dir: &Path) -> Option<Self> {
        let root = dir.to_owned();
        [Version::V2, Version::V1]
            .into_iter()
            .map(|version| Self::new(version, root.clone(), ""))
            .find(Self::has_memory_files)
    }

    fn new(version: Version, root: PathBuf, path: &str) -> Self {
        let path = path.trim().trim_matches('/').to_owned();
        Self {
            version,
            root,
            path,
        }
    }

    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// The cgroup's directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.root.join(&self.path)
    }

    fn has_memory_files(&self) -> bool {
        self.dir().join(self.usage_file()).is_file()
    }

    fn usage_file(&self) -> &'static str {
        match self.version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        }
    }

    /// Usage less inactive file pages, in bytes.
    pub(crate) fn working_set(&self) -> io::Result<u64> {
        let dir = self.dir();
        let usage = read_number(&dir.join(self.usage_file()))?;
        let stat = fs::read_to_string(dir.join("memory.stat"))?;
        // v1's `total_` figures include the cgroup's descendants, as v2's always do.
        let key = match self.version {
            Version::V2 => "inactive_file",
            Version::V1 => "total_inactive_file",
        };
        let inactive = stat
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(usage.saturating_sub(inactive))
    }

    /// The tightest memory limit from this cgroup up to the root (a parent's limit binds
    /// its children), with the cgroup it belongs to; `None` when no level has one.
    pub(crate) fn limit(&self) -> Option<(u64, String)> {
        let file = match self.version {
            Version::V2 => "memory.max",
            Version::V1 => "memory.limit_in_bytes",
        };
        let mut tightest: Option<(u64, String)> = None;
        let mut path = self.path.as_str();
        loop {
            let limit = fs::read_to_string(self.root.join(path).join(file))
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .filter(|limit| *limit < UNLIMITED);
            if let Some(limit) = limit {
                if tightest.as_ref().is_none_or(|(best, _)| limit < *best) {
                    tightest = Some((limit, format!("/{path}")));
                }
            }
            if path.is_empty() {
                return tightest;
            }
            path = path.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
    }
}

fn read_number(file: &Path) -> io::Result<u64> {
    fs::read_to_string(file)?.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a number", file.display()),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake cgroup hierarchy in a temporary folder.
    pub(crate) struct FakeMount(pub(crate) PathBuf);

    impl FakeMount {
        pub(crate) fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tower-admission-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub(crate) fn write(&self, path: &str, file: &str, text: &str) {
            let dir = self.0.join(path);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), text).unwrap();
        }
    }

    impl Drop for FakeMount {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn v2_working_set_and_tightest_limit() {
        let mount = FakeMount::new("v2");
        mount.write("pod/app", "memory.current", "1000000\n");
        mount.write(
            "pod/app",
            "memory.stat",
            "anon 1\nfile 9\ninactive_file 250000\nactive_file 5\n",
        );
        mount.write("pod/app", "memory.max", "max\n");
        mount.write("pod", "memory.max", "4000000\n");
        let cgroup = CgroupDir::of_process(&mount.0, "0::/pod/app\n").unwrap();
        assert_eq!(cgroup.version(), Version::V2);
        assert_eq!(cgroup.working_set().unwrap(), 750_000);
        assert_eq!(cgroup.limit(), Some((4_000_000, "/pod".into())));
    }

    #[test]
    fn v1_memory_hierarchy_when_v2_has_no_memory_controller() {
        let mount = FakeMount::new("v1");
        mount.write("unified/x", "cgroup.procs", "");
        mount.write("memory/x", "memory.usage_in_bytes", "800\n");
        mount.write(
            "memory/x",
            "memory.stat",
            "inactive_file 5\ntotal_inactive_file 300\n",
        );
        mount.write("memory/x", "memory.limit_in_bytes", "9223372036854771712\n");
        mount.write("memory", "memory.limit_in_bytes", "5000\n");
        let text = "4:memory:/x\n2:cpu,cpuacct:/\n0::/x\n";
        let cgroup = CgroupDir::of_process(&mount.0, text).unwrap();
        assert_eq!(cgroup.version(), Version::V1);
        assert_eq!(cgroup.working_set().unwrap(), 500);
        assert_eq!(cgroup.limit(), Some((5000, "/".into())));
    }

    #[test]
    fn no_memory_controller_is_none_and_bad_files_are_errors() {
        let mount = FakeMount::new("none");
        mount.write("x", "cgroup.procs", "");
        assert_eq!(CgroupDir::of_process(&mount.0, "0::/x\n"), None);
        assert_eq!(CgroupDir::of_process(&mount.0, ""), None);
        mount.write("y", "memory.current", "lots\n");
        let cgroup = CgroupDir::at(&mount.0.join("y")).unwrap();
        assert!(cgroup.working_set().is_err());
    }
}
