use super::*;
use rustix::fs::{Timespec, Timestamps};
use std::fs;

/// A folder of its own under the system's temp folder, standing for `/dev/shm`, and a
/// folder standing for the cgroup's directory (named by its inode).
struct Root {
    path: PathBuf,
    cgroup: PathBuf,
}

impl Root {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tower-admission-shared-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        let cgroup = path.join("cgroup");
        fs::create_dir(&cgroup).unwrap();
        Self { path, cgroup }
    }

    fn open(&self) -> Result<Records, Unusable> {
        Records::open(&self.path, &self.cgroup, BUDGET)
    }

    /// Where the records of the cgroup go.
    fn folder(&self) -> PathBuf {
        self.path.join(folder_name(&self.cgroup))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

const BUDGET: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Writes another process's record, as it would.
fn write_other(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

/// Makes `name` in `dir` look untouched for a minute (not following a link).
fn age(dir: &Path, name: &str) {
    let old = Timespec {
        tv_sec: (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 60) as _,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: old,
        last_modification: old,
    };
    let dir = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn files(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn each_reads_the_others_within_their_lease() {
    let root = Root::new("lease");
    let mut records = root.open().unwrap();
    let now = boottime_ms();
    records.publish(5 * MIB, now).unwrap();
    assert_eq!(records.others(now), Others::default(), "alone");
    write_other(records.dir(), "1-a", &encode(now + 500, 7 * MIB));
    write_other(records.dir(), "2-b", &encode(now + 500, MIB));
    let others = records.others(now);
    assert_eq!((others.unseen, others.processes), (8 * MIB, 2));
    // A process killed without a word stops counting once its lease has run out...
    assert_eq!(records.others(now + 600), Others::default());
    // ...and its record goes once it is long expired (looked at again within a second).
    records.others(now + 11_000);
    records.others(now + 12_100);
    assert!(!records.dir().join("1-a").exists());
    assert_eq!(files(records.dir()), 1, "only the own record is left");
}

#[test]
fn bad_files_are_skipped_not_counted() {
    let root = Root::new("bad");
    let mut records = root.open().unwrap();
    let now = boottime_ms();
    let good = encode(now + 500, 3 * MIB);
    write_other(records.dir(), "10", &good[..20]); // truncated
    write_other(records.dir(), "11", b"garbage garbage garbage garbage!"); // garbage
    let mut other_version = good;
    other_version[7] = 1;
    write_other(records.dir(), "12", &other_version);
    let mut torn = good;
    torn[16] ^= 0xff;
    write_other(records.dir(), "13", &torn);
    write_other(records.dir(), "14", &good);
    let others = records.others(now);
    assert_eq!((others.unseen, others.processes), (3 * MIB, 1));
    for (name, why) in [
        ("10", "not the size of a record"),
        ("11", "not a shared-charges record"),
        ("12", "another layout version"),
    ] {
        let looked = look(&records.folder, OsStr::new(name), now);
        assert_eq!(looked, Look::Bad { why, stale: false }, "{name}");
    }
    // A record caught mid-write is read again next sample; once nobody writes it, it is
    // garbage.
    assert_eq!(look(&records.folder, OsStr::new("13"), now), Look::Torn);
    age(records.dir(), "13");
    assert!(matches!(
        look(&records.folder, OsStr::new("13"), now),
        Look::Bad { stale: true, .. }
    ));
}

#[test]
fn two_cgroups_never_see_each_other() {
    let root = Root::new("cgroups");
    let mut a = root.open().unwrap();
    let other_cgroup = root.path.join("other-cgroup");
    fs::create_dir(&other_cgroup).unwrap();
    let b = Records::open(&root.path, &other_cgroup, BUDGET).unwrap();
    assert_ne!(a.dir(), b.dir());
    b.publish(9 * MIB, boottime_ms()).unwrap();
    assert_eq!(a.others(boottime_ms()), Others::default());
}

#[test]
fn the_folder_is_named_after_the_cgroup_as_the_kernel_knows_it() {
    // Two cgroup namespaces both show their cgroup at the same path; the inode tells them
    // apart. Here: one path, replaced by another directory.
    let root = Root::new("inode");
    let before = folder_name(&root.cgroup);
    fs::remove_dir(&root.cgroup).unwrap();
    let _keep = fs::create_dir(root.path.join("taking-the-inode"));
    fs::create_dir(&root.cgroup).unwrap();
    assert_ne!(folder_name(&root.cgroup), before);
}

#[test]
fn two_records_of_one_pid_never_share_a_file() {
    // Two servers that are each pid 1 of their own pid namespace: here, two pools of one
    // process.
    let root = Root::new("pid");
    let mut a = root.open().unwrap();
    let b = root.open().unwrap();
    let now = boottime_ms();
    b.publish(4 * MIB, now).unwrap();
    let others = a.others(now);
    assert_eq!((others.unseen, others.processes), (4 * MIB, 1));
}

#[test]
fn a_link_or_a_file_at_the_folder_is_refused() {
    let root = Root::new("link");
    let elsewhere = root.path.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, root.folder()).unwrap();
    let error = root.open().unwrap_err();
    assert!(error.why.contains("not a directory"), "{error}");
    assert_eq!(files(&elsewhere), 0, "nothing written through the link");
    fs::remove_file(root.folder()).unwrap();
    fs::write(root.folder(), "a file").unwrap();
    let error = root.open().unwrap_err();
    assert!(error.why.contains("not a directory"), "{error}");
}

#[test]
fn a_folder_another_user_owns_or_may_write_is_refused() {
    let root = Root::new("owner");
    fs::create_dir(root.folder()).unwrap();
    rustix::fs::chmod(root.folder(), Mode::from_raw_mode(0o777)).unwrap();
    let error = root.open().unwrap_err();
    assert!(error.why.contains("writable by other users"), "{error}");
    if rustix::process::geteuid().is_root() {
        rustix::fs::chmod(root.folder(), Mode::RWXU).unwrap();
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::chown(root.folder(), Some(nobody), None).unwrap();
        let error = root.open().unwrap_err();
        assert!(error.why.contains("belongs to user 65534"), "{error}");
    }
}

#[test]
fn the_folder_is_made_owner_only_whatever_the_umask() {
    let root = Root::new("umask");
    let before = rustix::process::umask(Mode::empty());
    let opened = root.open();
    rustix::process::umask(before);
    let records = opened.unwrap();
    let stat = rustix::fs::stat(records.dir()).unwrap();
    assert_eq!(stat.st_mode & 0o777, 0o700);
    let own = records.dir().join(&*records.own_name);
    assert_eq!(rustix::fs::stat(own).unwrap().st_mode & 0o777, 0o600);
}

#[test]
fn links_fifos_and_folders_are_never_followed_nor_waited_on() {
    let root = Root::new("planted");
    let mut records = root.open().unwrap();
    let dir = records.dir().to_owned();
    // A secret a link points at, named as a record would be.
    let secret = root.path.join("secret");
    fs::write(&secret, "root only").unwrap();
    let now = boottime_ms();
    std::os::unix::fs::symlink(&secret, dir.join("7-0000000000000001")).unwrap();
    let fd = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    rustix::fs::mknodat(&fd, "8-fifo", FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
    fs::create_dir(dir.join("9-dir")).unwrap();
    write_other(&dir, "live", &encode(now + 500, MIB));
    for _ in 0..3 {
        records.publish(2 * MIB, now).unwrap();
        let others = records.others(now);
        assert_eq!((others.unseen, others.processes), (MIB, 1));
    }
    assert_eq!(fs::read_to_string(&secret).unwrap(), "root only");
    // Once nobody has touched them for a while, they go (the link, not what it points at).
    for name in ["7-0000000000000001", "8-fifo", "9-dir"] {
        age(&dir, name);
    }
    records.others(now + 1_100);
    assert!(fs::symlink_metadata(dir.join("7-0000000000000001")).is_err());
    assert!(fs::symlink_metadata(dir.join("8-fifo")).is_err());
    assert_eq!(fs::read_to_string(&secret).unwrap(), "root only");
}

#[test]
fn what_a_record_claims_is_bounded() {
    let root = Root::new("forged");
    let mut records = root.open().unwrap();
    let now = boottime_ms();
    write_other(records.dir(), "1", &encode(now + 500, u64::MAX));
    write_other(records.dir(), "2", &encode(now + 500, u64::MAX));
    let others = records.others(now);
    assert_eq!(
        (others.unseen, others.processes),
        (BUDGET, 2),
        "at most the budget"
    );
    // A lease that would never end is no lease this crate wrote.
    write_other(records.dir(), "1", &encode(u64::MAX, MIB));
    write_other(records.dir(), "2", &encode(now + 60_000, MIB));
    records.others(now + 1_100);
    let others = records.others(now + 1_100);
    assert_eq!(others, Others::default());
}

#[test]
fn a_folder_of_thousands_of_files_costs_a_few_looks_a_sample() {
    let root = Root::new("many");
    let mut records = root.open().unwrap();
    let dir = records.dir().to_owned();
    for i in 0..2_000 {
        write_other(&dir, &format!("junk-{i}"), b"junk");
        age(&dir, &format!("junk-{i}"));
    }
    let now = boottime_ms();
    records.others(now);
    let left = files(&dir);
    assert!(left >= 2_001 - LOOKS_PER_SAMPLE, "{left} files left");
    // The stale ones go, a few a sample, and a live record is found among them.
    write_other(&dir, "live", &encode(now + 1_000, MIB));
    let mut found = None;
    for sample in 0..200 {
        if records.others(now + sample).processes == 1 {
            found.get_or_insert(sample);
        }
    }
    assert!(found.is_some(), "the live record is found");
    assert_eq!(files(&dir), 2, "the own record and the live one are left");
}

#[test]
fn the_own_record_goes_with_the_pool() {
    let root = Root::new("drop");
    let records = root.open().unwrap();
    let own = records.dir().join(&*records.own_name);
    let departure = records.departure().unwrap();
    assert!(own.exists());
    drop(departure);
    assert!(
        !own.exists(),
        "gone once the pool is, though the records live on"
    );
    drop(records);
}
