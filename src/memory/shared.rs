//! Charges shared by the processes of one memory cgroup.
//!
//! With the cgroup source, every process reads the same working set, and each alone knows
//! what it has admitted but not yet allocated: in the first moments of a burst, each sees the
//! whole headroom as its own. So each process publishes that figure (its *unseen* bytes) in a
//! small record of its own, in a folder named after the cgroup (under `/dev/shm` by default),
//! and reads the others' every sample. A record is written only by its owner, at offset 0 in
//! one positioned write, and carries a lease on the boot-time clock: a process killed by
//! SIGKILL or the OOM killer stops counting once its lease runs out, and its record is
//! removed by the next reader after a while.
//!
//! **Trust.** The folder is shared with whoever can write to it, so nothing in it is trusted
//! that this process did not check:
//! - the folder must be a real directory (never a link), owned by this process's user and
//!   writable by nobody else; a folder made here is made `0700` whatever the umask;
//! - every access goes through the folder's descriptor, never by path again, so the folder
//!   cannot be swapped for a link between a check and a write;
//! - the own record is created exclusively and never through a link;
//! - a neighbour's record is opened without following links and without blocking (a FIFO
//!   cannot stall the sampler), and read only if it is a regular file of the record's size
//!   owned by the same user, with the right layout, checksum and a lease that ends soon;
//! - what a record claims is bounded: its unseen bytes by the budget, the sum of all by the
//!   budget, the records read by [`MAX_NEIGHBOURS`] and the files looked at per sample by
//!   [`LOOKS_PER_SAMPLE`]; a file that is no record, once nobody has written it for
//!   [`REMOVE_AFTER`], is removed.
//!
//! **Identity.** The folder is named after the cgroup's directory as the kernel knows it (its
//! device and inode), not after its path, which a cgroup namespace shows as `/` to every
//! container; a record's name carries a random part and is created exclusively, so two
//! processes that share a pid (each the first of its own pid namespace) never share a record.
//!
//! Processes that do not use the crate are not seen here; their memory is in the working set
//! all the same, once they have allocated it.

use super::MemorySource;
use rustix::{
    fd::OwnedFd,
    fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat},
};
use std::{
    collections::{HashMap, HashSet, hash_map::RandomState},
    ffi::OsStr,
    fmt,
    fs::File,
    hash::BuildHasher,
    io,
    os::unix::{ffi::OsStrExt, fs::FileExt, fs::MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

/// Where the folders go by default: memory-backed, shared by the processes of a container.
pub(crate) const ROOT: &str = "/dev/shm";

/// The record's first bytes: a name and the layout version (its last byte).
const MAGIC: [u8; 8] = *b"TWRADM\x00\x02";
/// magic, lease end (ms on the boot-time clock), unseen bytes, checksum.
const RECORD: usize = 32;
/// How long a record counts after it was last written.
pub(crate) const LEASE: Duration = Duration::from_millis(500);
/// A lease that ends further ahead than this is not one this crate wrote.
const LEASE_AHEAD_MAX: Duration = Duration::from_millis(4 * 500);
/// A record whose lease ended this long ago, or a file that is no record and that nobody
/// has written for this long, is removed.
pub(crate) const REMOVE_AFTER: Duration = Duration::from_secs(10);
/// The most neighbours' records read each sample; more are not counted (and said once).
pub(crate) const MAX_NEIGHBOURS: usize = 64;
/// The most files not yet known to be records looked at each sample: a folder of thousands
/// of files costs the sampler a few opens a sample, not thousands.
pub(crate) const LOOKS_PER_SAMPLE: usize = 32;
/// The most names passed over each sample in search of files to look at.
const SCANS_PER_SAMPLE: usize = 512;
/// The folder is listed again at least this often, besides whenever it changes.
const LIST_EVERY_MS: u64 = 1_000;

/// Why the folder cannot be used: said by the effective configuration and the log.
#[derive(Debug)]
pub(crate) struct Unusable {
    pub(crate) folder: PathBuf,
    pub(crate) why: String,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.folder.display(), self.why)
    }
}

/// This process's record among those of its cgroup, and what it has learned of the others.
pub(crate) struct Records {
    folder: Folder,
    own: File,
    own_name: Box<OsStr>,
    /// No neighbour's unseen bytes count for more than this, nor all of them together.
    budget: u64,
    /// The names in the folder, as last listed, and when.
    names: Vec<Box<OsStr>>,
    listed: (i64, i64),
    listed_ms: u64,
    /// Where the next look at names not yet known to be records starts.
    cursor: usize,
    /// Names whose last reading was a live record: read every sample.
    live: Vec<Box<OsStr>>,
    /// Names that are not records, with when each may be looked at again.
    bad: HashMap<Box<OsStr>, u64>,
    /// Whether an episode of bad files, or of too many neighbours, was said.
    said_bad: bool,
    said_crowded: bool,
}

/// What the other processes of the cgroup published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Others {
    /// Their unseen bytes, summed (at most the budget).
    pub(crate) unseen: u64,
    /// The processes whose lease runs.
    pub(crate) processes: usize,
}

/// The folder, opened once; everything in it is reached through this descriptor.
struct Folder {
    fd: OwnedFd,
    path: PathBuf,
    uid: u32,
}

impl Folder {
    /// Opens (making it if need be) the folder `name` under `root`, and checks it is this
    /// user's own.
    fn open(root: &Path, name: &str) -> Result<Self, Unusable> {
        let path = root.join(name);
        let unusable = |why: String| Unusable {
            folder: path.clone(),
            why,
        };
        // Made 0700: the umask only takes bits away.
        match rustix::fs::mkdir(&path, Mode::RWXU) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(error) => return Err(unusable(format!("cannot be made: {error}"))),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&path, flags, Mode::empty()).map_err(|error| match error {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
                unusable("is not a directory (a link, or a file)".into())
            }
            error => unusable(format!("cannot be opened: {error}")),
        })?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| unusable(format!("cannot be read: {e}")))?;
        let uid = rustix::process::geteuid().as_raw();
        if stat.st_uid != uid {
            return Err(unusable(format!(
                "belongs to user {}, not to this process's user {uid}",
                stat.st_uid
            )));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(unusable(format!(
                "is writable by other users (mode {:o})",
                stat.st_mode & 0o7777
            )));
        }
        Ok(Self { fd, path, uid })
    }

    /// Its modification time: it changes whenever a file is added or removed.
    fn mtime(&self) -> (i64, i64) {
        rustix::fs::fstat(&self.fd).map_or((0, 0), |stat| mtime(&stat))
    }

    /// Its names, at most `limit` of them, without `.`, `..` and `skip`.
    fn list(&self, skip: &OsStr, limit: usize) -> Vec<Box<OsStr>> {
        let Ok(dir) = Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|entry| {
                let name = OsStr::from_bytes(entry.file_name().to_bytes());
                let listed = !matches!(name.as_bytes(), b"." | b"..") && name != skip;
                listed.then(|| name.into())
            })
            .take(limit)
            .collect()
    }

    fn remove(&self, name: &OsStr) {
        let _ = rustix::fs::unlinkat(&self.fd, name, AtFlags::empty());
    }
}

/// How a file in the folder read.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// A record: its lease end and unseen bytes.
    Record { lease_end: u64, unseen: u64 },
    /// A record caught while its owner wrote it: skipped this once.
    Torn,
    /// Not a record of this user's processes; `stale` once nobody has written it for a while.
    Bad { why: &'static str, stale: bool },
}

impl Records {
    /// Opens this process's record for the cgroup whose directory is `cgroup_dir`, in a
    /// folder under `root`; no neighbour counts for more than `budget` bytes.
    pub(crate) fn open(root: &Path, cgroup_dir: &Path, budget: u64) -> Result<Self, Unusable> {
        let folder = Folder::open(root, &folder_name(cgroup_dir))?;
        let (own, own_name) = create_own(&folder).map_err(|error| Unusable {
            folder: folder.path.clone(),
            why: format!("cannot be written: {error}"),
        })?;
        let records = Self {
            folder,
            own,
            own_name,
            budget,
            names: Vec::new(),
            listed: (-1, -1),
            listed_ms: 0,
            cursor: 0,
            live: Vec::new(),
            bad: HashMap::new(),
            said_bad: false,
            said_crowded: false,
        };
        let _ = records.publish(0, boottime_ms());
        Ok(records)
    }

    /// The folder the cgroup's processes share.
    pub(crate) fn dir(&self) -> &Path {
        &self.folder.path
    }

    /// What removes this process's record when the pool goes.
    pub(crate) fn departure(&self) -> io::Result<Departure> {
        Ok(Departure {
            folder: self.folder.fd.try_clone()?,
            own_name: self.own_name.clone(),
        })
    }

    /// Publishes `unseen` bytes, with a lease from `now_ms` (on the boot-time clock).
    pub(crate) fn publish(&self, unseen: u64, now_ms: u64) -> io::Result<()> {
        let lease_end = now_ms.saturating_add(LEASE.as_millis() as u64);
        self.own.write_all_at(&encode(lease_end, unseen), 0)
    }

    /// What the other processes published, as of `now_ms`: every live record read, then a
    /// few files not yet known to be records looked at. Files that are no record are
    /// skipped (said once an episode) and removed once stale; records long expired are
    /// removed.
    pub(crate) fn others(&mut self, now_ms: u64) -> Others {
        self.list_if_changed(now_ms);
        let mut others = Others::default();
        let mut removed = Vec::new();
        for name in std::mem::take(&mut self.live) {
            self.look_at(name, now_ms, &mut others, &mut removed);
        }
        let (mut looks, mut scanned) = (0, 0);
        while looks < LOOKS_PER_SAMPLE && scanned < self.names.len().min(SCANS_PER_SAMPLE) {
            scanned += 1;
            self.cursor = (self.cursor + 1) % self.names.len();
            let name = &self.names[self.cursor];
            let due = !self.live.contains(name)
                && self.bad.get(name).is_none_or(|&again| again <= now_ms);
            if due {
                looks += 1;
                let name = name.clone();
                self.look_at(name, now_ms, &mut others, &mut removed);
            }
        }
        if !removed.is_empty() {
            // Its own removals are no news: the folder need not be listed again for them.
            self.listed = self.folder.mtime();
            let removed: HashSet<_> = removed.into_iter().collect();
            self.names.retain(|name| !removed.contains(name));
            self.cursor = 0;
        }
        self.end_episodes();
        others
    }

    /// Reads the file `name`, counts it in `others` if it is a live record, and keeps it in
    /// the live set or the bad set, or removes it (and adds it to `removed`).
    fn look_at(
        &mut self,
        name: Box<OsStr>,
        now_ms: u64,
        others: &mut Others,
        removed: &mut Vec<Box<OsStr>>,
    ) {
        match look(&self.folder, &name, now_ms) {
            Look::Record { lease_end, unseen } if lease_end >= now_ms => {
                self.bad.remove(&name);
                if others.processes == MAX_NEIGHBOURS {
                    if !std::mem::replace(&mut self.said_crowded, true) {
                        tracing::warn!(
                            folder = %self.folder.path.display(),
                            max = MAX_NEIGHBOURS,
                            "shared charges: more neighbours than are read each sample; the rest are not counted"
                        );
                    }
                    return;
                }
                let unseen = others.unseen.saturating_add(unseen);
                others.unseen = unseen.min(self.budget);
                others.processes += 1;
                self.live.push(name);
            }
            Look::Record { lease_end, .. } => {
                if now_ms.saturating_sub(lease_end) > REMOVE_AFTER.as_millis() as u64 {
                    self.folder.remove(&name);
                    removed.push(name);
                } else {
                    // Expired lately: looked at again later, as any other file.
                    self.bad.insert(name, now_ms + LIST_EVERY_MS);
                }
            }
            Look::Torn => self.live.push(name),
            Look::Bad { stale: true, .. } => {
                self.bad.remove(&name);
                self.folder.remove(&name);
                removed.push(name);
            }
            Look::Bad { why, stale: false } => {
                if !self.said_bad {
                    self.said_bad = true;
                    tracing::warn!(
                        folder = %self.folder.path.display(),
                        file = %name.to_string_lossy(),
                        why,
                        "shared charges: skipping files that are not records of this user's processes (said once until none is left; removed once stale)"
                    );
                }
                self.bad.insert(name, now_ms + LIST_EVERY_MS);
            }
        }
    }

    /// Lists the folder again if it changed since the last listing, or a while ago.
    fn list_if_changed(&mut self, now_ms: u64) {
        let mtime = self.folder.mtime();
        if mtime == self.listed && now_ms.saturating_sub(self.listed_ms) < LIST_EVERY_MS {
            return;
        }
        self.listed = mtime;
        self.listed_ms = now_ms;
        self.names = self.folder.list(&self.own_name, MAX_LISTED);
        let names: HashSet<&Box<OsStr>> = self.names.iter().collect();
        self.bad.retain(|name, _| names.contains(name));
        self.live.retain(|name| names.contains(name));
        self.cursor = 0;
    }

    /// Ends an episode of bad files once none is left, or of too many neighbours once they
    /// fit, so that the next one is said.
    fn end_episodes(&mut self) {
        if self.said_bad && self.bad.is_empty() {
            self.said_bad = false;
        }
        if self.said_crowded && self.live.len() < MAX_NEIGHBOURS {
            self.said_crowded = false;
        }
    }
}

/// The most names one listing keeps: a folder stuffed past it is read in part.
const MAX_LISTED: usize = 16_384;

impl Drop for Records {
    fn drop(&mut self) {
        self.folder.remove(&self.own_name);
    }
}

/// Removes this process's record when dropped: the pool holds it, so that a graceful exit
/// (the pool dropped as `main` returns) takes the record along, though the sampler thread,
/// which holds the [`Records`], never ends.
#[derive(Debug)]
pub(crate) struct Departure {
    folder: OwnedFd,
    own_name: Box<OsStr>,
}

impl Drop for Departure {
    fn drop(&mut self) {
        let _ = rustix::fs::unlinkat(&self.folder, &*self.own_name, AtFlags::empty());
    }
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("folder", &self.folder.path)
            .field("own", &self.own_name)
            .finish_non_exhaustive()
    }
}

/// Creates this process's record: exclusively, never through a link, readable by its owner
/// only; a name taken already (a process of the same pid in another namespace) is passed by.
fn create_own(folder: &Folder) -> io::Result<(File, Box<OsStr>)> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for attempt in 0..8u32 {
        let nonce = RandomState::new().hash_one((std::process::id(), attempt));
        let name: Box<OsStr> = OsStr::new(&format!("{}-{nonce:016x}", std::process::id())).into();
        match rustix::fs::openat(&folder.fd, &*name, flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => return Ok((File::from(fd), name)),
            Err(rustix::io::Errno::EXIST) => last = io::Error::from(io::ErrorKind::AlreadyExists),
            Err(error) => return Err(error.into()),
        }
    }
    Err(last)
}

/// Reads the file `name` of `folder` as a record, trusting nothing of it.
fn look(folder: &Folder, name: &OsStr, now_ms: u64) -> Look {
    let bad = |why, stat: Option<&Stat>| Look::Bad {
        why,
        stale: stat.is_none_or(is_stale),
    };
    // No link followed, no FIFO waited on, no terminal taken as controlling.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&folder.fd, name, flags | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            let stat = rustix::fs::statat(&folder.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok();
            return bad("a link", stat.as_ref());
        }
        Err(rustix::io::Errno::NOENT) => return bad("gone", None),
        Err(_) => {
            let stat = rustix::fs::statat(&folder.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok();
            return bad("cannot be opened", stat.as_ref());
        }
    };
    let Ok(stat) = rustix::fs::fstat(&fd) else {
        return bad("cannot be read", None);
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return bad("not a regular file", Some(&stat));
    }
    if stat.st_uid != folder.uid {
        return bad("owned by another user", Some(&stat));
    }
    if stat.st_size != RECORD as i64 {
        return bad("not the size of a record", Some(&stat));
    }
    let mut record = [0; RECORD];
    let read = File::from(fd).read_at(&mut record, 0).unwrap_or(0);
    match decode(&record[..read]) {
        Ok((lease_end, _)) if lease_end > now_ms + LEASE_AHEAD_MAX.as_millis() as u64 => {
            bad("a lease that ends too far ahead", Some(&stat))
        }
        Ok((lease_end, unseen)) => Look::Record { lease_end, unseen },
        Err("checksum mismatch (torn or garbage)") if !is_stale(&stat) => Look::Torn,
        Err(why) => bad(why, Some(&stat)),
    }
}

/// Whether nobody has written the file for [`REMOVE_AFTER`]: a live record is written every
/// sample.
fn is_stale(stat: &Stat) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    now - mtime(stat).0 > REMOVE_AFTER.as_secs() as i64
}

#[allow(clippy::unnecessary_cast)] // the field types differ between targets
fn mtime(stat: &Stat) -> (i64, i64) {
    (stat.st_mtime as i64, stat.st_mtime_nsec as i64)
}

/// This process among its cgroup's: its record, and its own allocated bytes (jemalloc's,
/// where it is the allocator), which tell how much of its charges the working set cannot
/// have seen yet. Without them, all of its charges count as unseen: safe, and stricter.
pub(crate) struct Neighbourhood {
    records: Records,
    own: Option<Box<dyn MemorySource>>,
    /// Its own allocated bytes with nothing in flight.
    idle: u64,
    /// Whether a failed write was said.
    failed: bool,
}

impl Neighbourhood {
    /// Joins the processes of the cgroup at `cgroup_dir` in a folder under `root`, or says
    /// why not; no neighbour counts for more than `budget`.
    pub(crate) fn join(root: &Path, cgroup_dir: &Path, budget: u64) -> Result<Self, Unusable> {
        Ok(Self {
            records: Records::open(root, cgroup_dir, budget)?,
            own: own_allocations(),
            idle: 0,
            failed: false,
        })
    }

    /// The folder the cgroup's processes share.
    pub(crate) fn dir(&self) -> &Path {
        self.records.dir()
    }

    /// What removes this process's record when the pool goes.
    pub(crate) fn departure(&self) -> io::Result<Departure> {
        self.records.departure()
    }

    /// One sample: publishes what this process has `charged` and not yet allocated (with
    /// `in_flight` requests), and returns what the others published.
    pub(crate) fn sample(&mut self, charged: u64, in_flight: usize) -> Others {
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
        let now_ms = boottime_ms();
        if let Err(error) = self.records.publish(unseen, now_ms) {
            if !std::mem::replace(&mut self.failed, true) {
                tracing::warn!(%error, "shared charges: cannot write this process's record");
            }
        }
        self.records.others(now_ms)
    }
}

impl fmt::Debug for Neighbourhood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Neighbourhood")
            .field("records", &self.records)
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

/// Milliseconds on the boot-time clock: monotonic, the same for every process of the machine
/// (and counting suspended time, which a lease must).
pub(crate) fn boottime_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (now.tv_sec as u64).saturating_mul(1000) + now.tv_nsec as u64 / 1_000_000
}

/// `tower-admission-` and the cgroup directory's device and inode, as the kernel knows
/// them: processes of one cgroup meet in one folder, those of another never see it, even
/// when a cgroup namespace shows each its own cgroup as `/`. Where the directory cannot be
/// read, a hash of its path.
fn folder_name(cgroup_dir: &Path) -> String {
    match std::fs::metadata(cgroup_dir) {
        Ok(meta) => format!("tower-admission-{:x}-{:x}", meta.dev(), meta.ino()),
        Err(_) => format!(
            "tower-admission-{:016x}",
            checksum(cgroup_dir.as_os_str().as_bytes())
        ),
    }
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

/// The lease end and unseen bytes of `record`, or why it is not one.
fn decode(record: &[u8]) -> Result<(u64, u64), &'static str> {
    if record.len() < RECORD {
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
mod tests;
