//! The memory reading: what a precise reading (epoch advance) and one sampler refresh (a
//! precise reading every tenth call, else `approximate_stats.active`) cost with 1, 8 and 64
//! threads having allocated, and the share of one core the sampler thread really uses.
//!
//! ```sh
//! cargo bench --bench sampler
//! ```

use std::{
    hint::black_box,
    sync::{Arc, Barrier, mpsc},
    thread,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion};
use tower_admission::{Admission, AdmissionConfig, JemallocMemory, MemoryBudget, MemorySource};

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

/// `threads` threads that have each allocated (and freed half of) a mix of sizes, so each has
/// a populated thread cache; they stay alive until the returned sender is dropped.
fn allocating_threads(threads: usize) -> (mpsc::Sender<()>, Vec<thread::JoinHandle<()>>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let stopped = Arc::new(std::sync::Mutex::new(stopped));
    let ready = Arc::new(Barrier::new(threads + 1));
    let handles = (0..threads)
        .map(|t| {
            let ready = ready.clone();
            let stopped = stopped.clone();
            thread::spawn(move || {
                let mut kept: Vec<Vec<u8>> = (0..4_000)
                    .map(|i| vec![t as u8; 16 << (i % 9)]) // 16 B .. 4 KiB
                    .collect();
                kept.retain(|v| v.len() % 32 == 0); // free some: the tcache fills
                ready.wait();
                let _ = stopped.lock().unwrap().recv();
                drop(black_box(kept));
            })
        })
        .collect();
    ready.wait();
    (stop, handles)
}

/// What the crate's precise reading does: an epoch advance, then `stats.allocated` less the
/// bytes parked in thread caches, each read through a MIB looked up once.
fn precise_reading() -> impl FnMut() -> u64 {
    use tikv_jemalloc_ctl::{Access, AsName, epoch, stats};
    let advance = epoch::mib().unwrap();
    let allocated = stats::allocated::mib().unwrap();
    let cached: tikv_jemalloc_ctl::Mib<[usize; 4]> =
        b"stats.arenas.4096.tcache_bytes\0".name().mib().unwrap();
    move || {
        advance.advance().unwrap();
        let cached: usize = cached.read().unwrap();
        (allocated.read().unwrap() - cached) as u64
    }
}

fn refresh_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("sampler refresh");
    let memory = JemallocMemory::new().unwrap();
    for threads in [1, 8, 64] {
        let (stop, handles) = allocating_threads(threads);
        group.bench_function(BenchmarkId::new("precise", threads), |b| {
            b.iter(precise_reading())
        });
        group.bench_function(BenchmarkId::new("refresh", threads), |b| {
            b.iter(|| memory.refresh().unwrap())
        });
        drop(stop);
        handles.into_iter().for_each(|h| h.join().unwrap());
    }
    group.finish();
}

/// Nanoseconds the named thread of this process has run on a CPU.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            if !name.starts_with(comm.trim()) {
                return None;
            }
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            schedstat.split_whitespace().next()?.parse().ok()
        })
}

/// Runs a real pool for `seconds` with 8 allocating threads and measures the sampler
/// thread's CPU time from `/proc/self/task/*/schedstat`.
fn sampler_cpu_share(label: &str, budget: MemoryBudget, seconds: u64) {
    let (stop, handles) = allocating_threads(8);
    let admission = Admission::new(AdmissionConfig::default().memory_budget(budget)).unwrap();
    thread::sleep(Duration::from_millis(100));
    let before = thread_cpu_ns("admission-sampler").expect("the sampler thread is running");
    let start = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    let used = thread_cpu_ns("admission-sampler").unwrap() - before;
    let elapsed = start.elapsed();
    let share = used as f64 / elapsed.as_nanos() as f64 * 100.0;
    println!(
        "sampler CPU ({label}): {:.1} ms over {:.1} s = {share:.3} % of one core",
        used as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    drop(admission);
    drop(stop);
    handles.into_iter().for_each(|h| h.join().unwrap());
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    refresh_cost(&mut criterion);
    criterion.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        sampler_cpu_share(
            "default 10ms interval, far from the budget",
            MemoryBudget::Percent(75.0),
            5,
        );
        let memory = JemallocMemory::new().unwrap();
        // Within 10 % of the budget the sampler runs four times as often.
        let near = MemoryBudget::Bytes(memory.allocated_bytes() + (1 << 20));
        sampler_cpu_share("near the budget: 2.5ms interval", near, 5);
    }
}
