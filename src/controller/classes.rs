//! Cost classes: what requests like this one have cost lately, conservatively.
//!
//! A request whose cost is not yet known is charged its class's *recent maximum*, not an
//! average: with mixed sizes, a burst admitted on an average overshoots by every large request
//! in the burst. Each class keeps two figures, each the largest seen in the current or the
//! previous window (of [`FORGET_AFTER_MS`]), so that an old outlier is forgotten after two windows
//! while a recurring one never is:
//!
//! - **peak**: how far above its `Content-Length` a request's allocation rose at its highest;
//! - **rise**: how far one poll rose above what the request was charged before it (a poll that
//!   parses a body into a tree and frees it again), after the first poll;
//!
//! and the *least* peak of its requests, the same way: what a request of the class surely
//! costs, where the peak is what it may cost.
//!
//! Each class also learns its requests' **CPU demand** (the time spent in their polls, see
//! [`super::cpu`]), as a moving average, whether its requests wait for their clients' bodies,
//! and keeps the name of the
//! first request that claimed its slot (method and path), so that an operator can see what
//! each route costs.
//!
//! The table is bounded: [`SLOTS`] classes, claimed first come, first served, and one overflow
//! class for everything after; once the overflow class is used, classes not seen for a whole
//! window give their slots up, so that the first comers cannot keep the table forever. A
//! name is bounded too ([`NAME_BYTES`]). Lock-free: a lookup is a hash and a few loads.

use std::{
    hash::{Hash, Hasher},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
};

use super::by_size::BySize;

/// The classes the table holds before it sends new ones to the overflow class.
pub(crate) const SLOTS: usize = 64;
/// How long a figure counts: it is forgotten after one to two of these without a match.
pub(crate) const FORGET_AFTER_MS: u64 = 4_000;
/// The longest name a class keeps (in labels and the snapshot): a longer one is cut at a
/// character boundary, and the class's hash appended so that names stay apart.
pub(crate) const NAME_BYTES: usize = 64;

/// Which requests are alike in cost; requests of one class share what is learned of them.
///
/// By default a request's class is its method and path (without the query). A classifier
/// (see [`AdmissionConfig::classify`](crate::AdmissionConfig::classify)) may refine it, for a
/// service whose costs depend on a header or a query parameter.
///
/// ```
/// use http::Method;
/// use tower_admission::CostClass;
///
/// let a = CostClass::route(&Method::GET, "/work");
/// assert_eq!(a, CostClass::route(&Method::GET, "/work"));
/// assert_ne!(a, CostClass::route(&Method::POST, "/work"));
/// assert_ne!(a, CostClass::new(("/work", "large")));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CostClass(u64);

impl CostClass {
    /// The class of everything that hashes like `key`.
    pub fn new(key: impl Hash) -> Self {
        let mut hasher = FxHasher::default();
        key.hash(&mut hasher);
        // 0 marks a free slot in the table.
        Self(hasher.finish().max(1))
    }

    /// No class: for pools without a budget, which never look one up.
    pub(crate) const NONE: CostClass = CostClass(0);

    /// One class, for tests that need any.
    #[cfg(test)]
    pub(crate) const ANY_FOR_TESTS: CostClass = CostClass(1);
}

/// rustc's FxHash: a rotate, an xor and a multiply per word, a tenth of SipHash's cost on a
/// short path. Classes need spread, not secrecy: whatever the keys, the table stays bounded.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a request is charged before its first poll, the least it will cost, and whether its
/// class has shown its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Estimate {
    pub(crate) charge: u64,
    pub(crate) least: u64,
    pub(crate) known: bool,
}

/// The CPU work its class shows for a request, in nanoseconds, and how long its bodies take
/// to arrive, in microseconds (each `None` until shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Work {
    pub(crate) cpu_ns: Option<u64>,
    pub(crate) longest_poll_ns: Option<u64>,
    pub(crate) body_us: Option<u64>,
}

/// A class's place in the table: `0..SLOTS`, or `SLOTS` for the overflow class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassId(u32);

impl ClassId {
    /// The class of everything the table has no slot for.
    pub(crate) const OVERFLOW: ClassId = ClassId(SLOTS as u32);
}

/// The largest value observed in the current or the previous window. Values are stored plus
/// one, so that 0 means "nothing observed".
#[derive(Debug, Default)]
struct RecentMax {
    current: AtomicU64,
    previous: AtomicU64,
}

impl RecentMax {
    fn get(&self) -> Option<u64> {
        let stored = self.current.load(Relaxed).max(self.previous.load(Relaxed));
        stored.checked_sub(1)
    }

    fn observe(&self, value: u64) {
        let stored = value.saturating_add(1);
        // Most observations are not a new maximum: a load, and no write.
        if stored > self.current.load(Relaxed) {
            self.current.fetch_max(stored, Relaxed);
        }
    }

    /// Starts a new window. A window without observations keeps the figure: an idle class
    /// is charged what it cost last, not nothing. A racing observation may land in the old
    /// window and be dropped with it; the next one restores it.
    fn rotate(&self) {
        let current = self.current.swap(0, Relaxed);
        if current != 0 {
            self.previous.store(current, Relaxed);
        }
    }

    fn clear(&self) {
        self.current.store(0, Relaxed);
        self.previous.store(0, Relaxed);
    }
}

/// The smallest value observed in the current or the previous window, kept as the largest
/// of `u64::MAX - value`.
#[derive(Debug, Default)]
struct RecentMin(RecentMax);

impl RecentMin {
    fn get(&self) -> Option<u64> {
        self.0.get().map(|flipped| u64::MAX - 1 - flipped)
    }

    fn observe(&self, value: u64) {
        self.0.observe(u64::MAX - 1 - value.min(u64::MAX - 1));
    }

    fn rotate(&self) {
        self.0.rotate();
    }

    fn clear(&self) {
        self.0.clear();
    }
}

/// A figure that grows with a request's body, or need not: the most observed, and the most
/// observed per KiB of body (a request without a body counts as one KiB). A request is
/// charged the lesser of the two for its own body: each bounds what the requests seen cost,
/// so a class whose cost grows with its bodies (a parse) charges a small body little, and one
/// whose cost does not charges no more than its most.
#[derive(Debug, Default)]
struct Scaled {
    most: RecentMax,
    per_kib: RecentMax,
}

impl Scaled {
    fn get(&self, declared: u64) -> Option<u64> {
        let most = self.most.get()?;
        Some(match self.per_kib.get() {
            Some(per_kib) => most.min(per_kib.saturating_mul(body_kib(declared))),
            None => most,
        })
    }

    fn observe(&self, value: u64, declared: u64) {
        self.most.observe(value);
        self.per_kib.observe(value.div_ceil(body_kib(declared)));
    }

    fn rotate(&self) {
        self.most.rotate();
        self.per_kib.rotate();
    }

    fn clear(&self) {
        self.most.clear();
        self.per_kib.clear();
    }
}

/// A body's length in KiB, plus one: a request without a body counts as one KiB.
fn body_kib(declared: u64) -> u64 {
    (declared / 1024).saturating_add(1)
}

#[derive(Debug, Default)]
struct Class {
    key: AtomicU64,
    /// The most a request allocated beyond its `Content-Length`, and the most per KiB of its
    /// body (see [`Scaled`]).
    peak: Scaled,
    least: RecentMin,
    /// The most one poll rose above a request's charge, and the most per KiB of its body.
    rise: Scaled,
    /// CPU demand per request, in nanoseconds, by the length of its body.
    cpu: BySize,
    /// How long its requests' bodies take to arrive at the quickest, in microseconds.
    body_us: RecentMin,
    /// Its requests' longest poll, in nanoseconds, by the length of their body.
    poll: BySize,
    /// The first request that claimed the slot, as `METHOD /path` (at most [`NAME_BYTES`]).
    name: Mutex<Option<Box<str>>>,
    /// The window in which a request of the class was last seen.
    seen: AtomicU64,
    /// Its requests in flight.
    in_flight: AtomicU64,
    /// How long its requests are in flight (from their first poll to the end of their last,
    /// where polls are timed), on average over about eight, in nanoseconds.
    served_ns: AtomicU64,
}

impl Class {
    fn name(&self) -> Option<String> {
        let name = self.name.lock().unwrap_or_else(PoisonError::into_inner);
        name.as_deref().map(str::to_owned)
    }

    /// Gives the slot up: its figures forgotten, then its key, so that a class claiming it
    /// starts afresh. (A request of the old class still in flight may teach the new one
    /// once: its figures are conservative all the same.)
    fn free(&self) {
        self.peak.clear();
        self.least.clear();
        self.rise.clear();
        self.cpu.clear();
        self.body_us.clear();
        self.poll.clear();
        *self.name.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.key.store(0, Relaxed);
    }
}

/// What one class has shown of its cost (see [`Classes::figures`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassFigures {
    pub(crate) name: String,
    pub(crate) cpu_ns: Option<u64>,
    pub(crate) peak_bytes: Option<u64>,
}

/// The table of cost classes, with the largest unknown part of a charge seen lately across
/// all of them.
#[derive(Debug)]
pub(crate) struct Classes {
    slots: Box<[Class]>,
    /// What a class is charged before anything was learned of it.
    initial: u64,
    /// The largest unknown part of a charge lately: what a request was expected to allocate
    /// beyond its `Content-Length` (which is known, and charged in full).
    largest: RecentMax,
    /// When the current window began, in the controller's milliseconds, and its number.
    window_start_ms: AtomicU64,
    window: AtomicU64,
    /// Whether a class found no slot in the current window.
    overflowed: AtomicBool,
}

impl Classes {
    pub(crate) fn new(initial: u64) -> Self {
        Self {
            slots: (0..=SLOTS).map(|_| Class::default()).collect(),
            initial,
            largest: RecentMax::default(),
            window_start_ms: AtomicU64::new(0),
            window: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
        }
    }

    /// The slot of `class`, claimed if it has none yet; `name` names a slot it claims.
    pub(crate) fn find(&self, class: CostClass, name: impl FnOnce() -> String) -> ClassId {
        // The high bits: a multiplicative hash mixes upwards.
        let start = ((class.0 >> 32) as usize) % SLOTS;
        for probe in 0..SLOTS {
            let index = (start + probe) % SLOTS;
            let slot = &self.slots[index];
            match slot.key.load(Relaxed) {
                k if k == class.0 => return self.seen(index),
                0 => match slot.key.compare_exchange(0, class.0, Relaxed, Relaxed) {
                    Ok(_) => {
                        let named = bounded_name(name(), class);
                        *slot.name.lock().unwrap_or_else(PoisonError::into_inner) = Some(named);
                        return self.seen(index);
                    }
                    Err(k) if k == class.0 => return self.seen(index),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        if !self.overflowed.load(Relaxed) {
            self.overflowed.store(true, Relaxed);
        }
        ClassId::OVERFLOW
    }

    /// Marks the slot at `index` seen in the current window (a load, and a store once a
    /// window).
    #[inline]
    fn seen(&self, index: usize) -> ClassId {
        let window = self.window.load(Relaxed);
        let seen = &self.slots[index].seen;
        if seen.load(Relaxed) != window {
            seen.store(window, Relaxed);
        }
        ClassId(index as u32)
    }

    fn class(&self, id: ClassId) -> &Class {
        &self.slots[id.0 as usize]
    }

    /// A request of `id` is admitted.
    pub(crate) fn started(&self, id: ClassId) {
        self.class(id).in_flight.fetch_add(1, Relaxed);
    }

    /// A request of `id` is done (never below zero, should a slot have changed hands), after
    /// `served_ns` in flight if it was answered.
    pub(crate) fn ended(&self, id: ClassId, served_ns: Option<u64>) {
        let class = self.class(id);
        let _ = class
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        if let Some(ns) = served_ns {
            // Racing updates may lose one sample: an average needs no more.
            let mean = class.served_ns.load(Relaxed);
            let mean = if mean == 0 {
                ns
            } else {
                mean - mean / 8 + ns / 8
            };
            class.served_ns.store(mean, Relaxed);
        }
    }

    /// How many requests of `id` are in flight, and how long one is, on average.
    pub(crate) fn in_flight(&self, id: ClassId) -> (u64, u64) {
        let class = self.class(id);
        (class.in_flight.load(Relaxed), class.served_ns.load(Relaxed))
    }

    /// What to charge a request of `id` that declared `declared` bytes before its first poll
    /// (its declared length and its class's peak lately), the least it will cost (its
    /// declared length and the least peak of its class lately, nothing for a class not seen
    /// yet), and whether its class has shown its cost.
    #[inline]
    pub(crate) fn estimate(&self, id: ClassId, declared: u64) -> Estimate {
        let class = self.class(id);
        let peak = class.peak.get(declared);
        let known = peak.is_some();
        let peak = peak.unwrap_or(self.initial);
        self.largest.observe(peak);
        Estimate {
            charge: declared.saturating_add(peak),
            least: declared.saturating_add(class.least.get().unwrap_or(0)),
            known,
        }
    }

    /// What a request of `id` that declared `declared` body bytes demands of a core and how
    /// long its longest poll will be, once measured, and how long a body of its class takes
    /// to arrive at the quickest lately, if the class has shown bodies (the time its clients
    /// take: a body that arrived more slowly also waited for a worker to read it).
    #[inline]
    pub(crate) fn work(&self, id: ClassId, declared: u64) -> Work {
        let class = self.class(id);
        Work {
            cpu_ns: class.cpu.of(declared),
            longest_poll_ns: class.poll.of(declared),
            body_us: class.body_us.get(),
        }
    }

    /// What a request of `id` that declared `declared` bytes is charged above its
    /// allocation, for what its next poll may add.
    pub(crate) fn rise(&self, id: ClassId, declared: u64) -> u64 {
        self.class(id).rise.get(declared).unwrap_or(0)
    }

    /// The largest unknown part of a charge lately: the soft limit keeps that much in hand.
    pub(crate) fn largest(&self) -> u64 {
        self.largest.get().unwrap_or(self.initial)
    }

    /// A request of `id` that declared `declared` bytes reached `peak` bytes.
    pub(crate) fn observe_peak(&self, id: ClassId, declared: u64, peak: u64) {
        let unknown = peak.saturating_sub(declared);
        self.class(id).peak.observe(unknown, declared);
        self.largest.observe(unknown);
    }

    /// A request of `id` that declared `declared` bytes ended, having peaked at `peak`.
    pub(crate) fn observe_end(&self, id: ClassId, declared: u64, peak: u64) {
        self.class(id).least.observe(peak.saturating_sub(declared));
    }

    /// One poll of a request of `id` that declared `declared` bytes rose `rise` bytes above
    /// its charge.
    pub(crate) fn observe_rise(&self, id: ClassId, declared: u64, rise: u64) {
        self.class(id).rise.observe(rise, declared);
    }

    /// A request of `id` that declared `declared` bytes ended after demanding `ns` in its
    /// polls, the longest of which took `longest_ns`.
    pub(crate) fn observe_cpu(&self, id: ClassId, declared: u64, ns: u64, longest_ns: u64) {
        let class = self.class(id);
        class.cpu.learn(declared, ns);
        class.poll.learn(declared, longest_ns);
    }

    /// A request of the class whose body took `us` microseconds to arrive ended.
    pub(crate) fn observe_body(&self, id: ClassId, us: u64) {
        self.class(id).body_us.observe(us);
    }

    /// Every class that has a slot (and the overflow class, once it has a figure): its name,
    /// CPU demand and peak.
    pub(crate) fn figures(&self) -> Vec<ClassFigures> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(index, class)| {
                let name = match class.name() {
                    Some(name) => name,
                    None if index == SLOTS => "other".to_owned(),
                    None => return None,
                };
                let cpu_ns = class.cpu.mean();
                let peak_bytes = class.peak.get(u64::MAX);
                (cpu_ns.is_some() || peak_bytes.is_some() || index < SLOTS).then_some(
                    ClassFigures {
                        name,
                        cpu_ns,
                        peak_bytes,
                    },
                )
            })
            .collect()
    }

    /// Starts a new window once the current one is over; `now_ms` on the controller's clock.
    pub(crate) fn tick(&self, now_ms: u64) {
        let start = self.window_start_ms.load(Relaxed);
        if now_ms.saturating_sub(start) < FORGET_AFTER_MS {
            return;
        }
        self.window_start_ms.store(now_ms, Relaxed);
        let window = self.window.fetch_add(1, Relaxed);
        // Classes were turned away: slots unused for the whole window just ended go.
        let evict = self.overflowed.swap(false, Relaxed);
        for class in self.slots[..SLOTS].iter() {
            if evict && class.seen.load(Relaxed) < window && class.key.load(Relaxed) != 0 {
                class.free();
                continue;
            }
            class.peak.rotate();
            class.least.rotate();
            class.rise.rotate();
            class.body_us.rotate();
        }
        let overflow = &self.slots[SLOTS];
        overflow.peak.rotate();
        overflow.least.rotate();
        overflow.rise.rotate();
        overflow.body_us.rotate();
        self.largest.rotate();
    }
}

/// `name`, cut to [`NAME_BYTES`] at a character boundary (with `…` and the class's hash, so
/// that two long names stay apart), control characters replaced: it goes into labels.
fn bounded_name(name: String, class: CostClass) -> Box<str> {
    let clean = |c: char| if c.is_control() { '?' } else { c };
    if name.len() <= NAME_BYTES {
        return name.chars().map(clean).collect::<String>().into();
    }
    let suffix = format!("…#{:08x}", class.0 as u32);
    let mut cut = NAME_BYTES - suffix.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut bounded: String = name[..cut].chars().map(clean).collect();
    bounded.push_str(&suffix);
    bounded.into()
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_new_class_is_charged_the_initial_figure_then_its_recent_maximum() {
        let classes = Classes::new(256 << 10);
        let work = classes.find(CostClass::route(&Method::GET, "/work"), String::new);
        assert_eq!(classes.estimate(work, 0).charge, 256 << 10);
        classes.observe_peak(work, 0, 64 * MIB);
        for _ in 0..1000 {
            classes.observe_peak(work, 0, 16 << 10);
        }
        assert_eq!(
            classes.estimate(work, MIB).charge,
            65 * MIB,
            "a maximum, not a mean"
        );
    }

    #[test]
    fn the_least_a_class_costs_is_learned_from_ended_requests() {
        let classes = Classes::new(MIB);
        let id = classes.find(CostClass::new("mixed"), String::new);
        assert_eq!(classes.estimate(id, 5).least, 5, "nothing known yet");
        classes.observe_end(id, 0, 64 * MIB);
        classes.observe_end(id, 0, 64 << 10);
        classes.observe_end(id, MIB, 2 * MIB);
        assert_eq!(classes.estimate(id, MIB).least, MIB + (64 << 10));
        classes.tick(FORGET_AFTER_MS);
        classes.tick(2 * FORGET_AFTER_MS);
        assert_eq!(classes.estimate(id, 0).least, 64 << 10, "kept while idle");
        classes.observe_end(id, 0, 8 * MIB);
        classes.tick(3 * FORGET_AFTER_MS);
        classes.tick(4 * FORGET_AFTER_MS);
        assert_eq!(
            classes.estimate(id, 0).least,
            8 * MIB,
            "the old minimum aged out"
        );
    }

    #[test]
    fn peaks_are_learned_above_the_declared_length() {
        let classes = Classes::new(0);
        let ingest = classes.find(CostClass::route(&Method::POST, "/ingest"), String::new);
        classes.observe_peak(ingest, 4 * MIB, 30 * MIB);
        assert_eq!(classes.estimate(ingest, 8 * MIB).charge, 34 * MIB);
        assert_eq!(
            classes.largest(),
            26 * MIB,
            "only the part beyond the declared length"
        );
    }

    #[test]
    fn a_small_body_is_charged_its_share_and_no_request_more_than_the_most() {
        const KIB: u64 = 1024;
        let classes = Classes::new(0);
        // A parse: 64 MiB for a 4 MiB body, 1 MiB for a 64 KiB one (16 KiB per KiB).
        let parse = classes.find(CostClass::new("parse"), String::new);
        classes.observe_peak(parse, 4 * MIB, 4 * MIB + 64 * MIB);
        classes.observe_peak(parse, 64 * KIB, 64 * KIB + MIB);
        // At least what it cost, far below what the large one did.
        let small = classes.estimate(parse, 64 * KIB).charge - 64 * KIB;
        assert!((MIB..MIB + MIB / 16).contains(&small), "{small}");
        assert_eq!(
            classes.estimate(parse, 8 * MIB).charge,
            8 * MIB + 64 * MIB,
            "the most"
        );
        // The same 10 MiB whatever the body: the small bodies set the share, the most bounds it.
        let fixed = classes.find(CostClass::new("fixed"), String::new);
        classes.observe_peak(fixed, KIB, KIB + 10 * MIB);
        classes.observe_peak(fixed, MIB, MIB + 10 * MIB);
        assert_eq!(classes.estimate(fixed, KIB).charge, KIB + 10 * MIB);
        assert_eq!(classes.estimate(fixed, MIB).charge, MIB + 10 * MIB);
        // What a poll may add, the same way.
        classes.observe_rise(parse, 4 * MIB, 64 * MIB);
        let rise = classes.rise(parse, 64 * KIB);
        assert!((MIB..MIB + MIB / 16).contains(&rise), "{rise}");
        assert!(classes.rise(parse, 0) <= 16 * KIB);
    }

    #[test]
    fn an_outlier_is_forgotten_after_two_windows_but_an_idle_class_keeps_its_figure() {
        let classes = Classes::new(0);
        let id = classes.find(CostClass::new("x"), String::new);
        classes.observe_peak(id, 0, 64 * MIB);
        classes.tick(FORGET_AFTER_MS); // the outlier moves to the previous window
        classes.observe_peak(id, 0, MIB);
        assert_eq!(classes.estimate(id, 0).charge, 64 * MIB);
        classes.tick(2 * FORGET_AFTER_MS);
        assert_eq!(classes.estimate(id, 0).charge, MIB, "forgotten");
        classes.tick(3 * FORGET_AFTER_MS);
        classes.tick(4 * FORGET_AFTER_MS);
        assert_eq!(classes.estimate(id, 0).charge, MIB, "idle: kept");
        classes.tick(4 * FORGET_AFTER_MS + 1);
        assert_eq!(classes.estimate(id, 0).charge, MIB, "not a window yet");
    }

    #[test]
    fn names_are_bounded_and_stay_apart() {
        let classes = Classes::new(0);
        let long = |tail: &str| format!("GET /{}{tail}", "é".repeat(30_000));
        let a = classes.find(CostClass::new("a"), || long("a"));
        let b = classes.find(CostClass::new("b"), || long("b"));
        let short = classes.find(CostClass::new("c"), || "GET /x\ny".to_owned());
        let names: Vec<String> = classes.figures().into_iter().map(|f| f.name).collect();
        assert!(
            names.iter().all(|name| name.len() <= NAME_BYTES),
            "{names:?}"
        );
        assert!(names.contains(&"GET /x?y".to_owned()), "{names:?}");
        let [name_a, name_b] = [a, b].map(|id| classes.class(id).name().unwrap());
        assert_ne!(name_a, name_b);
        assert!(
            name_a.starts_with("GET /é") && name_a.contains('…'),
            "{name_a}"
        );
        assert_ne!(short, a);
    }

    #[test]
    fn the_first_comers_do_not_keep_the_table_forever() {
        let classes = Classes::new(0);
        for i in 0..SLOTS {
            classes.find(CostClass::new(("old", i)), String::new);
        }
        let work = CostClass::route(&Method::GET, "/work");
        assert_eq!(classes.find(work, String::new), ClassId::OVERFLOW, "full");
        // A window passes in which only /work comes (turned away each time)...
        classes.tick(FORGET_AFTER_MS);
        assert_eq!(classes.find(work, String::new), ClassId::OVERFLOW);
        classes.tick(2 * FORGET_AFTER_MS);
        // ...then the old classes, unseen for a whole window, have given their slots up.
        let id = classes.find(work, || "GET /work".to_owned());
        assert_ne!(id, ClassId::OVERFLOW);
        assert_eq!(classes.class(id).name().as_deref(), Some("GET /work"));
        assert_eq!(classes.estimate(id, 0).charge, 0, "starts afresh");
        // Without a class turned away, an idle class keeps its slot.
        classes.observe_peak(id, 0, MIB);
        classes.tick(3 * FORGET_AFTER_MS);
        classes.tick(4 * FORGET_AFTER_MS);
        assert_eq!(classes.find(work, String::new), id);
        assert_eq!(classes.estimate(id, 0).charge, MIB);
    }

    #[test]
    fn classes_are_kept_apart_and_the_table_is_bounded() {
        let classes = Classes::new(0);
        let ids: Vec<ClassId> = (0..SLOTS + 10)
            .map(|i| classes.find(CostClass::new(i), String::new))
            .collect();
        assert!(ids[..SLOTS].iter().all(|id| (id.0 as usize) < SLOTS));
        assert!(
            ids[SLOTS..].iter().all(|id| id.0 as usize == SLOTS),
            "overflow"
        );
        for (i, id) in ids.iter().enumerate().take(SLOTS) {
            assert_eq!(
                classes.find(CostClass::new(i), String::new),
                *id,
                "found again"
            );
        }
        classes.observe_peak(ids[0], 0, MIB);
        assert_eq!(classes.estimate(ids[1], 0).charge, 0);
        classes.observe_rise(ids[2], 0, 5);
        assert_eq!(classes.rise(ids[2], 0), 5);
        assert_eq!(classes.rise(ids[3], 0), 0);
    }
}
