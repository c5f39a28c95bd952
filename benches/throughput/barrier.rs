//! The barrier workload (issue 17): E1, `A(2) *S(10^4) A(1)`, a serial
//! action that does nothing with 10^4 options and 2 walks per branch, so
//! the run is 10^4 serial epochs of two trivial walks each: what one pass
//! through the barrier costs (the live-walk check, the serial action, the
//! Scheduler, a runner and back), in elapsed and in CPU time of the whole
//! process per serial run. Its same-run reference is the cheapest hand-off
//! there is between two plain threads: a round trip over a channel
//! (`round_trip_us`, the better of before and after combtest's run).
//!
//! E1L is E1 on a busy machine: the same run beside one thread per CPU
//! that only burns CPU (as a system under test or a build would), started
//! before the run and stopped after it. Its CPU per serial run leaves
//! their CPU out. Its reference is E1 itself, in another child.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;

use combtest::{Halt, RunOptions, SerialAction, WalkOrder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Add, K, result, run_order, timed};

/// Serial epochs in E1.
const EPOCHS: u64 = 10_000;

/// A serial action that does nothing, with `EPOCHS` options.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Tick(u64);

impl SerialAction<K> for Tick {
    type Value = ();
    fn options() -> Vec<Self> {
        (0..EPOCHS).map(Tick).collect()
    }
    fn run(&self) -> Result<(), Halt> {
        Ok(())
    }
}

/// CPU time (user + system) so far, in seconds, of this process
/// (`libc::RUSAGE_SELF`) or of the calling thread (`libc::RUSAGE_THREAD`).
fn cpu_s(of: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(of, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Microseconds of elapsed and of CPU time per round trip between two
/// plain threads over std channels.
fn round_trip() -> (f64, f64) {
    let (to_echo, echo_in) = channel::<u64>();
    let (echo_out, back) = channel::<u64>();
    let echo = std::thread::spawn(move || {
        for n in echo_in {
            if echo_out.send(n).is_err() {
                break;
            }
        }
    });
    let cpu = cpu_s(libc::RUSAGE_SELF);
    let ((), elapsed) = timed(|| {
        for n in 0..EPOCHS {
            to_echo.send(n).expect("echo thread up");
            back.recv().expect("echo thread up");
        }
    });
    let cpu = cpu_s(libc::RUSAGE_SELF) - cpu;
    drop(to_echo);
    echo.join().expect("echo thread ends");
    (elapsed * 1e6 / EPOCHS as f64, cpu * 1e6 / EPOCHS as f64)
}

/// Threads that burn CPU (one per CPU) until [`Busy::stop`], which gives
/// the CPU time they took, in seconds.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<f64>>,
}

impl Busy {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cpus)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..1_000 {
                            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005));
                        }
                    }
                    cpu_s(libc::RUSAGE_THREAD)
                })
            })
            .collect();
        Busy { stop, threads }
    }

    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().map(|t| t.join().expect("a busy thread ends")).sum()
    }
}

/// The barrier workloads' results, or `None` for another workload.
pub(crate) fn child(workload: &str) -> Option<serde_json::Map<String, Value>> {
    if workload != "E1" && workload != "E1L" {
        return None;
    }
    let order = WalkOrder::<K>::new().then::<Add<1, 2>>().serial::<Tick>().then::<Add<2, 1>>();
    let before = round_trip();
    let busy = (workload == "E1L").then(Busy::start);
    let cpu = cpu_s(libc::RUSAGE_SELF);
    let ((report, threads), elapsed) =
        timed(|| run_order(&order, RunOptions::default().threads(2)));
    let busy_cpu = busy.map_or(0.0, Busy::stop);
    let cpu = cpu_s(libc::RUSAGE_SELF) - cpu - busy_cpu;
    let after = round_trip();
    assert_eq!((report.counts.passed, report.serial_actions), (2 * EPOCHS, EPOCHS));
    let (trip, trip_cpu) = if before.0 <= after.0 { before } else { after };
    let per_serial = elapsed * 1e6 / EPOCHS as f64;
    let mut out = result(workload, report.walks, threads, elapsed, None);
    out.insert("us_per_serial".into(), json!(per_serial));
    out.insert("cpu_us_per_serial".into(), json!(cpu * 1e6 / EPOCHS as f64));
    out.insert("round_trip_us".into(), json!(trip));
    out.insert("round_trip_cpu_us".into(), json!(trip_cpu));
    out.insert("serial_vs_round_trip".into(), json!(per_serial / trip));
    Some(out)
}
