//! Time that counts only while this process runs: the [`PauseClock`].
//!
//! A coordinator that was stopped (SIGSTOP, a debugger, a laptop lid) or
//! starved of CPU for longer than a heartbeat timeout must not blame its
//! nodes, or its walks, for its own silence: when it runs again, every timer
//! it had has expired at once, and pongs and results waiting in its sockets
//! may be read after them. So heartbeat and walk timeouts are measured on
//! this clock: a thread ticks every [`PERIOD`]; a gap between two ticks of
//! more than [`THRESHOLD`] means the process did not run, and only
//! `THRESHOLD` of it counts. Reading the clock applies the same rule to the
//! time since the last tick, so a reader that runs before the ticker after
//! a pause sees no jump either. The clock is monotonic.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the clock's thread ticks.
const PERIOD: Duration = Duration::from_millis(20);
/// The longest gap between ticks that counts in full.
pub(crate) const THRESHOLD: Duration = Duration::from_millis(250);

struct Ticks {
    start: Instant,
    last: Instant,
    /// Time not counted, up to `last`.
    paused: Duration,
}

impl Ticks {
    fn new(now: Instant) -> Self {
        Ticks { start: now, last: now, paused: Duration::ZERO }
    }

    /// The clock's thread ran at `now`.
    fn tick(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last);
        if gap > THRESHOLD {
            self.paused += gap - THRESHOLD;
        }
        self.last = self.last.max(now);
    }

    /// Effective time at `now`.
    fn read(&self, now: Instant) -> Duration {
        let since = now.saturating_duration_since(self.last).min(THRESHOLD);
        self.last.saturating_duration_since(self.start).saturating_sub(self.paused) + since
    }
}

/// Effective time since the clock started.
pub(crate) struct PauseClock;

fn ticks() -> &'static Mutex<Ticks> {
    static TICKS: OnceLock<Mutex<Ticks>> = OnceLock::new();
    TICKS.get_or_init(|| {
        let now = Instant::now();
        let spawned = std::thread::Builder::new().name("combtest-clock".into()).spawn(|| {
            loop {
                std::thread::sleep(PERIOD);
                ticks().lock().unwrap_or_else(|p| p.into_inner()).tick(Instant::now());
            }
        });
        if let Err(error) = spawned {
            // Without its thread the clock is a plain monotonic clock.
            tracing::warn!(%error, "cannot start the pause clock's thread");
        }
        Mutex::new(Ticks::new(now))
    })
}

impl PauseClock {
    /// Effective time since the clock started.
    pub(crate) fn now() -> Duration {
        ticks().lock().unwrap_or_else(|p| p.into_inner()).read(Instant::now())
    }

    /// Sleeps until `duration` of effective time has passed.
    pub(crate) async fn sleep(duration: Duration) {
        let until = PauseClock::now() + duration;
        loop {
            let now = PauseClock::now();
            if now >= until {
                return;
            }
            tokio::time::sleep(until - now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_counts_only_the_threshold_and_time_never_goes_back() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut ticks = Ticks::new(start);
        for ms in (20..=1000).step_by(20) {
            ticks.tick(at(ms));
        }
        assert_eq!(ticks.read(at(1010)), Duration::from_millis(1010));
        // Stopped for 5 s: a reader before the next tick sees the threshold
        // only, and so does everyone after it.
        let before = ticks.read(at(6000));
        assert_eq!(before, Duration::from_millis(1000) + THRESHOLD);
        ticks.tick(at(6000));
        assert_eq!(ticks.read(at(6000)), before);
        ticks.tick(at(6020));
        assert_eq!(ticks.read(at(6020)), before + Duration::from_millis(20));
    }

    #[test]
    fn the_clock_advances_and_never_jumps_back() {
        let a = PauseClock::now();
        std::thread::sleep(Duration::from_millis(30));
        let b = PauseClock::now();
        assert!(b > a, "{a:?} {b:?}");
        assert!(b - a <= Duration::from_millis(30) + THRESHOLD, "{a:?} {b:?}");
    }
}
