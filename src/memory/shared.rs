//! Charges shared by the processes of one memory cgroup.
//!
//! With the cgroup source, every process reads the same working set, and each alone knows
//! what it has admitted but not yet allocated: in the first moments of a burst, each sees the
//! whole headroom as its own. So each process publishes that figure (its *unseen* bytes) in a
//! small file of its own, under a folder named from the cgroup (`/dev/shm` by default), and
//! reads the others' every sample. A file is written only by its owner, at offset 0 in one
//! positioned write; a reader checks its layout version and checksum and skips a file that
//! fails them (torn, truncated, garbage, another layout), saying so once. Each record carries
//! a lease, renewed every sample: a process killed by SIGKILL or the OOM killer stops counting
//! once its lease runs out, and its file is removed by the next reader after a while.
//!
//! Processes that do not use the crate are not seen here; their memory is in the working set
//! all the same, once they have allocated it.

use super::MemorySource;
use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Where the folders go by default: memory-backed, shared by the processes of a container.
pub(crate) const ROOT: &str = "/dev/shm";

/// The record's first bytes: a name and the layout version (its last byte).
const MAGIC: [u8; 8] = *b"TWRADM\x00\x01";
/// magic, lease end (ms since the epoch), unseen bytes, checksum.
const RECORD: usize = 32;
/// How long a record counts after it was last written.
pub(crate) const LEASE: Duration = Duration::from_millis(500);
/// A file whose lease ended this long ago is removed (its process is gone).
const REMOVE_AFTER: Duration = Duration::from_secs(10);

/// This process's file among those of its cgroup.
#[derive(Debug)]
pub(crate) struct SharedCharges {
    dir: PathBuf,
    own: File,
    own_name: String,
    /// Files found bad once: said once, then skipped quietly.
    bad: HashSet<String>,
}

/// What the other processes of the cgroup published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Others {
    /// Their unseen bytes, summed.
    pub(crate) unseen: u64,
    /// The processes whose lease runs.
    pub(crate) processes: usize,
}

impl SharedCharges {
    /// Opens this process's file for the cgroup at `cgroup_dir`, under `root`, creating the
    /// folder if need be. Fails if the folder cannot be made or written.
    pub(crate) fn open(root: &Path, cgroup_dir: &Path) -> io::Result<Self> {
        let dir = root.join(folder_name(cgroup_dir));
        match fs::create_dir(&dir) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
        let own_name = std::process::id().to_string();
        let own = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(dir.join(&own_name))?;
        let shared = Self {
            dir,
            own,
            own_name,
            bad: HashSet::new(),
        };
        shared.publish(0, SystemTime::now())?;
        Ok(shared)
    }

    /// The folder the cgroup's processes share.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Publishes `unseen` bytes, with a lease from `now`.
    pub(crate) fn publish(&self, unseen: u64, now: SystemTime) -> io::Result<()> {
        let lease_end = millis(now).saturating_add(LEASE.as_millis() as u64);
        self.own.write_all_at(&encode(lease_end, unseen), 0)
    }

    /// What the other processes published, as of `now`. Files that fail their checks are
    /// skipped (and logged once each); files long expired are removed.
    pub(crate) fn others(&mut self, now: SystemTime) -> Others {
        let now_ms = millis(now);
        let mut others = Others::default();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return others;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == self.own_name {
                continue;
            }
            match read_record(&entry.path()) {
                Ok((lease_end, unseen)) if lease_end >= now_ms => {
                    others.unseen = others.unseen.saturating_add(unseen);
                    others.processes += 1;
                }
                Ok((lease_end, _)) => {
                    if now_ms.saturating_sub(lease_end) > REMOVE_AFTER.as_millis() as u64 {
                        let _ = fs::remove_file(entry.path());
                    }
                }
                Err(why) => {
                    if self.bad.insert(name.clone()) {
                        tracing::warn!(
                            file = %entry.path().display(),
                            why,
                            "shared charges: skipping a file of another process"
                        );
                    }
                }
            }
        }
        others
    }
}

impl Drop for SharedCharges {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.dir.join(&self.own_name));
    }
}

/// This process among its cgroup's: its file, and its own allocated bytes (jemalloc's, where
/// it is the allocator), which tell how much of its charges the working set cannot have seen
/// yet. Without them, all of its charges count as unseen: safe, and stricter.
pub(crate) struct Neighbourhood {
    shared: SharedCharges,
    own: Option<Box<dyn MemorySource>>,
    /// Its own allocated bytes with nothing in flight.
    idle: u64,
    /// Whether a failed write was said.
    failed: bool,
}

impl Neighbourhood {
    /// Joins the processes of the cgroup at `cgroup_dir` in a folder under `root`, or says
    /// why not (this process then counts only its own charges).
    pub(crate) fn join(root: &Path, cgroup_dir: &Path) -> Option<Self> {
        match SharedCharges::open(root, cgroup_dir) {
            Ok(shared) => Some(Self {
                shared,
                own: own_allocations(),
                idle: 0,
                failed: false,
            }),
            Err(error) => {
                tracing::warn!(
                    folder = %root.display(),
                    %error,
                    "shared charges off: the folder cannot be used; this process counts only its own charges"
                );
                None
            }
        }
    }

    /// The folder the cgroup's processes share.
    pub(crate) fn dir(&self) -> &Path {
        self.shared.dir()
    }

    /// One sample: publishes what this process has `charged` and not yet allocated (with
    /// `in_flight` requests), and returns what the others published.
    pub(crate) fn sample(&mut self, charged: u64, in_flight: usize, now: SystemTime) -> Others {
        let unseen = match &self.own {
            Some(own) => {
                let _ = own.refresh();
                let allocated = own.allocated_bytes();
                self.idle = match in_flight {
                    0 => allocated,
                    _ => self.idle.min(allocated),
                };
                charged.saturating_sub(allocated - self.idle)
            }
            None => charged,
        };
        if let Err(error) = self.shared.publish(unseen, now) {
            if !std::mem::replace(&mut self.failed, true) {
                tracing::warn!(%error, "shared charges: cannot write this process's file");
            }
        }
        self.shared.others(now)
    }
}

impl std::fmt::Debug for Neighbourhood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbourhood")
            .field("dir", &self.shared.dir())
            .field("own", &self.own.as_ref().map(|own| own.name()))
            .finish_non_exhaustive()
    }
}

/// The process's own allocated bytes, where jemalloc is the allocator.
fn own_allocations() -> Option<Box<dyn MemorySource>> {
    #[cfg(feature = "jemalloc")]
    if let Ok(jemalloc) = super::JemallocMemory::new() {
        return Some(Box::new(jemalloc));
    }
    None
}

/// `tower-admission-` and a hash of the cgroup's path: processes of one cgroup meet in one
/// folder, and those of another never see it.
/// (A hash that stays the same across builds: processes built apart must meet.)
fn folder_name(cgroup_dir: &Path) -> String {
    let path = cgroup_dir.as_os_str().as_encoded_bytes();
    format!("tower-admission-{:016x}", checksum(path))
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn encode(lease_end: u64, unseen: u64) -> [u8; RECORD] {
    let mut record = [0; RECORD];
    record[..8].copy_from_slice(&MAGIC);
    record[8..16].copy_from_slice(&lease_end.to_le_bytes());
    record[16..24].copy_from_slice(&unseen.to_le_bytes());
    let check = checksum(&record[..24]);
    record[24..].copy_from_slice(&check.to_le_bytes());
    record
}

/// The lease end and unseen bytes of the record at `path`, or why it cannot be read.
fn read_record(path: &Path) -> Result<(u64, u64), &'static str> {
    let file = File::open(path).map_err(|_| "cannot be opened")?;
    let mut record = [0; RECORD];
    let read = file.read_at(&mut record, 0).map_err(|_| "cannot be read")?;
    if read < RECORD {
        return Err("truncated");
    }
    if record[..7] != MAGIC[..7] {
        return Err("not a shared-charges record");
    }
    if record[7] != MAGIC[7] {
        return Err("another layout version");
    }
    let word = |at: usize| {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&record[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    if word(24) != checksum(&record[..24]) {
        return Err("checksum mismatch (torn or garbage)");
    }
    Ok((word(8), word(16)))
}

/// FNV-1a: enough to tell a torn or foreign record from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of its own under the system's temp folder.
    struct Root(PathBuf);

    impl Root {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "tower-admission-shared-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Writes another process's record, as it would.
    fn write_other(dir: &Path, pid: u32, bytes: &[u8]) {
        fs::write(dir.join(pid.to_string()), bytes).unwrap();
    }

    const CGROUP: &str = "/sys/fs/cgroup/app";

    #[test]
    fn each_reads_the_others_within_their_lease() {
        let root = Root::new("lease");
        let mut shared = SharedCharges::open(&root.0, Path::new(CGROUP)).unwrap();
        let now = SystemTime::now();
        shared.publish(5 << 20, now).unwrap();
        assert_eq!(shared.others(now), Others::default(), "alone");
        let lease_end = millis(now) + 500;
        write_other(shared.dir(), 1, &encode(lease_end, 7 << 20));
        write_other(shared.dir(), 2, &encode(lease_end, 1 << 20));
        let others = shared.others(now);
        assert_eq!((others.unseen, others.processes), (8 << 20, 2));
        // A process killed without a word stops counting once its lease has run out...
        let later = now + Duration::from_millis(600);
        assert_eq!(shared.others(later), Others::default());
        // ...and its file goes once it is long expired.
        shared.others(now + Duration::from_secs(11));
        assert!(!shared.dir().join("1").exists());
        assert!(shared.dir().join(std::process::id().to_string()).exists());
    }

    #[test]
    fn bad_files_are_skipped_not_counted() {
        let root = Root::new("bad");
        let mut shared = SharedCharges::open(&root.0, Path::new(CGROUP)).unwrap();
        let now = SystemTime::now();
        let good = encode(millis(now) + 500, 3 << 20);
        write_other(shared.dir(), 10, &good[..20]); // truncated
        write_other(shared.dir(), 11, b"garbage garbage garbage garbage!"); // garbage
        let mut other_version = good;
        other_version[7] = 2;
        write_other(shared.dir(), 12, &other_version);
        let mut torn = good;
        torn[16] ^= 0xff;
        write_other(shared.dir(), 13, &torn);
        write_other(shared.dir(), 14, &good);
        let others = shared.others(now);
        assert_eq!((others.unseen, others.processes), (3 << 20, 1));
        for (name, why) in [
            ("10", "truncated"),
            ("11", "not a shared-charges record"),
            ("12", "another layout version"),
            ("13", "checksum mismatch (torn or garbage)"),
        ] {
            assert_eq!(read_record(&shared.dir().join(name)), Err(why), "{name}");
        }
        assert_eq!(shared.bad.len(), 4, "each said once");
    }

    #[test]
    fn two_cgroups_never_see_each_other() {
        let root = Root::new("cgroups");
        let mut a = SharedCharges::open(&root.0, Path::new("/sys/fs/cgroup/a")).unwrap();
        let b = SharedCharges::open(&root.0, Path::new("/sys/fs/cgroup/b")).unwrap();
        assert_ne!(a.dir(), b.dir());
        b.publish(9 << 20, SystemTime::now()).unwrap();
        assert_eq!(a.others(SystemTime::now()), Others::default());
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_an_error() {
        let root = Root::new("unwritable");
        let file = root.0.join("a-file");
        fs::write(&file, "not a folder").unwrap();
        assert!(SharedCharges::open(&file, Path::new(CGROUP)).is_err());
    }

    #[test]
    fn the_own_file_goes_with_the_process() {
        let root = Root::new("drop");
        let shared = SharedCharges::open(&root.0, Path::new(CGROUP)).unwrap();
        let own = shared.dir().join(std::process::id().to_string());
        assert!(own.exists());
        drop(shared);
        assert!(!own.exists());
    }
}
