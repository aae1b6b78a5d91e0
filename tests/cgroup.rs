//! The cgroup memory source against a real cgroup: a child cgroup made by the test (as root,
//! under this process's own memory cgroup, v2 or v1), a child process moved into it that
//! allocates and touches 64 MiB, and the working set read while it lives and after it ends.
//! Where no cgroup can be made (not root, no memory controller), the test says so and passes.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Stdio},
};

use tower_admission::{
    Admission, AdmissionConfig, CgroupMemory, MemoryError, MemorySource, MemorySourceKind,
};

const MIB: u64 = 1 << 20;
const CHILD: &str = "TOWER_ADMISSION_CGROUP_CHILD";

/// A memory cgroup made for the test, removed when dropped.
struct TestCgroup {
    dir: PathBuf,
    /// cgroup v2's file names, else v1's.
    v2: bool,
}

impl TestCgroup {
    /// A new child of this process's memory cgroup, or why there is none.
    fn make() -> Result<Self, String> {
        let own = CgroupMemory::new().map_err(|e| e.to_string())?;
        let parent = own.dir();
        let v2 = parent.join("memory.current").exists();
        // cgroup v2 gives a child the memory controller only if the parent delegates it.
        let delegated = fs::read_to_string(parent.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        if v2 && !delegated {
            return Err(format!("{} does not delegate memory", parent.display()));
        }
        let dir = parent.join(format!("tower-admission-test-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(Self { dir, v2 })
    }

    fn set_limit(&self, bytes: u64) {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::write(self.dir.join(file), bytes.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Run as a child process (see below): joins the cgroup, allocates and touches 64 MiB,
/// says so, and holds it until its stdin closes.
#[test]
fn child_process_that_allocates() {
    let Ok(procs) = std::env::var(CHILD) else {
        return; // an ordinary run: nothing to do
    };
    fs::write(procs, std::process::id().to_string()).unwrap();
    let held = vec![7u8; (64 * MIB) as usize];
    println!("ready {}", held.iter().map(|b| u64::from(*b)).sum::<u64>());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
}

#[test]
fn the_working_set_of_a_real_cgroup_follows_its_processes() {
    let cgroup = match TestCgroup::make() {
        Ok(cgroup) => cgroup,
        Err(why) => {
            eprintln!("SKIPPED: cannot make a memory cgroup here ({why})");
            return;
        }
    };
    cgroup.set_limit(512 * MIB);
    let source = CgroupMemory::at(&cgroup.dir).unwrap();
    assert_eq!(
        source.limit_bytes().map(|b| b.min(512 * MIB)),
        Some(512 * MIB)
    );
    let empty = source.allocated_bytes();
    assert!(empty < 16 * MIB, "an empty cgroup holds {empty} bytes");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_that_allocates",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, cgroup.dir.join("cgroup.procs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints "test child_process_that_allocates ... " on the same line.
    while !line.contains("ready") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
    }
    source.refresh().unwrap();
    let held = source.allocated_bytes();
    assert!(
        (64 * MIB..256 * MIB).contains(&held),
        "working set with the child holding 64 MiB: {} MiB",
        held / MIB
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    source.refresh().unwrap();
    let after = source.allocated_bytes();
    assert!(
        after < held - 48 * MIB,
        "after the child: {} MiB",
        after / MIB
    );
    eprintln!(
        "cgroup {} ({}): empty {} KiB, with the child {} MiB, after it {} KiB",
        cgroup.dir.display(),
        if cgroup.v2 { "v2" } else { "v1" },
        empty >> 10,
        held / MIB,
        after >> 10
    );
}

#[test]
fn the_cgroup_source_starts_or_says_why_not() {
    let config = AdmissionConfig::default().memory_source(MemorySourceKind::Cgroup);
    match Admission::new(config) {
        Ok(admission) => {
            assert!(admission.to_string().contains("cgroup"), "{admission}");
            assert!(admission.snapshot().memory_bytes > 0);
        }
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("no cgroup memory controller"), "{text}");
            assert!(matches!(
                CgroupMemory::new(),
                Err(MemoryError::NoCgroup { .. })
            ));
        }
    }
}
