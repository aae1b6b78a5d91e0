//! A memory cgroup made for a run (as root, under the driver's own memory cgroup: cgroup v2
//! where its memory controller is enabled, else v1's memory hierarchy), with a limit; what
//! its processes hold (the working set: usage less inactive file pages) and how many the
//! kernel has OOM-killed. Removed on drop, once its processes are gone.
//!
//! Read here, by the harness, rather than through the library's `CgroupMemory`: the chart
//! of what the servers held must not come from the code under test.

use std::{
    fs,
    path::{Path, PathBuf},
};

pub struct Cgroup {
    pub dir: PathBuf,
    pub v2: bool,
}

impl Cgroup {
    /// A new cgroup `name` limited to `limit` bytes, or why there can be none here.
    pub fn make(name: &str, limit: u64) -> Result<Self, String> {
        let text = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let mount = Path::new("/sys/fs/cgroup");
        let v2 = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| mount.join(p.trim().trim_start_matches('/')))
            .filter(|dir| {
                fs::read_to_string(dir.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
            });
        let v1 = text.lines().find_map(|l| {
            let mut fields = l.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            controllers.split(',').any(|c| c == "memory").then(|| {
                mount
                    .join("memory")
                    .join(path.trim().trim_start_matches('/'))
            })
        });
        let (parent, v2) = match (v2, v1) {
            (Some(dir), _) => (dir, true),
            (None, Some(dir)) => (dir, false),
            (None, None) => return Err(format!("no memory controller reachable ({text:?})")),
        };
        let dir = parent.join(name);
        let _ = fs::remove_dir(&dir); // left over by an interrupted run
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cgroup = Self { dir, v2 };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        cgroup.write(file, &limit.to_string())?;
        if !v2 {
            // Without swap accounting's limit, v1 would swap before it kills; no swap here.
            let _ = cgroup.write("memory.memsw.limit_in_bytes", &limit.to_string());
        }
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        fs::write(self.dir.join(file), value).map_err(|e| format!("{file}: {e}"))
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn stat(&self, file: &str, key: &str) -> u64 {
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The file a process joins the cgroup through.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Usage less inactive file pages, in bytes.
    pub fn working_set(&self) -> u64 {
        let (usage, inactive) = if self.v2 {
            ("memory.current", "inactive_file")
        } else {
            ("memory.usage_in_bytes", "total_inactive_file")
        };
        let usage: u64 = self.read(usage).trim().parse().unwrap_or(0);
        usage.saturating_sub(self.stat("memory.stat", inactive))
    }

    /// Processes the kernel killed for memory in this cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        if self.v2 {
            self.stat("memory.events", "oom_kill")
        } else {
            self.stat("memory.oom_control", "oom_kill")
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}
