//! The SerialBarrier's decisions, as data in and answers out: where a
//! serial action runs ([`SerialPlacement`]: on the blocking pool, or in the
//! barrier's own task once it has shown itself short) and how an epoch's
//! live-walk check is answered ([`LiveCheck`]: by the probe answered with
//! the last `EpochDone`, or by asking). The barrier actor carries them out;
//! nothing here knows of a runtime.

use std::time::Duration;

use super::epoch::Epoch;

/// Longest run of a serial action that may be followed by a run in the
/// barrier's task. A hand-off to the blocking pool and back costs two
/// thread wake-ups, tens of microseconds on a loaded 2-core machine: a
/// serial action well under that is worth running where the barrier is; a
/// worker thread of the actors held this long delays nothing that matters
/// (no walk runs during a serial action).
pub const INLINE_BOUND: Duration = Duration::from_micros(100);

/// Where a serial action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On the blocking pool: a thread of its own, however long it takes.
    Pool,
    /// In the barrier's task, on an actors' worker thread.
    Inline,
}

/// What is known of one serial entry's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EntryRuns {
    /// Its last run took at most [`INLINE_BOUND`].
    last_short: bool,
    /// A run in the barrier's task took longer: never there again.
    banned: bool,
}

/// Per serial entry (by its position in the walk order), where its next
/// run goes: its first run on the pool; after a run of at most
/// [`INLINE_BOUND`], in the barrier's task; after a run longer than that
/// in the barrier's task, on the pool for the rest of the run. So a long
/// or blocking serial action holds an actors' worker at most once per
/// entry per run, and only right after a short run of the same entry.
#[derive(Debug, Clone, Default)]
pub struct SerialPlacement {
    entries: Vec<EntryRuns>,
}

impl SerialPlacement {
    /// Where the next run of the serial action at `position` goes.
    pub fn place(&self, position: usize) -> Place {
        match self.entries.get(position) {
            Some(e) if e.last_short && !e.banned => Place::Inline,
            _ => Place::Pool,
        }
    }

    /// The serial action at `position` ran at `place` and took `took`.
    pub fn ran(&mut self, position: usize, place: Place, took: Duration) {
        if self.entries.len() <= position {
            self.entries.resize(position + 1, EntryRuns::default());
        }
        let entry = &mut self.entries[position];
        entry.last_short = took <= INLINE_BOUND;
        if place == Place::Inline && !entry.last_short {
            entry.banned = true;
        }
    }
}

/// How the barrier learns whether an epoch's branch has a live walk left
/// before running its serial action (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveCheck {
    /// No check: the epoch has no serial action, or its walks run their
    /// first segment here (none can have ended yet).
    None,
    /// Answered: the probe sent with the epoch asked for ahead came back
    /// in `EpochDone`, taken when nothing ran.
    Known(bool),
    /// Not answered yet: ask the Scheduler (`AnyLive`, between epochs).
    Ask,
}

impl LiveCheck {
    /// Whether `epoch` needs the check: it has a serial action and its
    /// walks already ran a segment.
    pub fn needed(epoch: &Epoch) -> bool {
        epoch.serial.is_some() && !epoch.first
    }

    /// The check for `epoch`, given the probe's answer that came with the
    /// last `EpochDone` (`Some` only for the epoch that was asked for ahead
    /// and probed).
    pub fn of(epoch: &Epoch, probed: Option<bool>) -> Self {
        match (Self::needed(epoch), probed) {
            (false, _) => LiveCheck::None,
            (true, Some(live)) => LiveCheck::Known(live),
            (true, None) => LiveCheck::Ask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::epoch::{EpochId, SerialStep};

    const SHORT: Duration = Duration::from_micros(3);
    const LONG: Duration = Duration::from_millis(5);

    #[test]
    fn a_serial_action_runs_inline_only_after_a_short_run() {
        let mut p = SerialPlacement::default();
        assert_eq!(p.place(2), Place::Pool, "unmeasured: the pool");
        p.ran(2, Place::Pool, SHORT);
        assert_eq!(p.place(2), Place::Inline);
        assert_eq!(p.place(5), Place::Pool, "another entry is measured on its own");
        p.ran(2, Place::Inline, SHORT);
        assert_eq!(p.place(2), Place::Inline);
        p.ran(2, Place::Pool, INLINE_BOUND);
        assert_eq!(p.place(2), Place::Inline, "the bound itself is short");
    }

    #[test]
    fn a_long_run_inline_sends_the_entry_to_the_pool_for_good() {
        let mut p = SerialPlacement::default();
        p.ran(0, Place::Pool, SHORT);
        p.ran(0, Place::Inline, LONG);
        assert_eq!(p.place(0), Place::Pool);
        for _ in 0..3 {
            p.ran(0, Place::Pool, SHORT);
            assert_eq!(p.place(0), Place::Pool, "banned: short runs do not bring it back");
        }
    }

    #[test]
    fn a_long_run_on_the_pool_keeps_the_next_one_there() {
        let mut p = SerialPlacement::default();
        p.ran(1, Place::Pool, LONG);
        assert_eq!(p.place(1), Place::Pool);
        p.ran(1, Place::Pool, SHORT);
        assert_eq!(p.place(1), Place::Inline, "not banned: it never held a worker");
    }

    /// Over any sequence of run times, runs in the barrier's task longer
    /// than the bound number at most one per entry, and each follows a
    /// short run of the same entry.
    #[test]
    fn at_most_one_long_inline_run_per_entry() {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..200 {
            let mut p = SerialPlacement::default();
            let mut long_inline = [0u32; 3];
            let mut last_short = [false; 3];
            for _ in 0..100 {
                let entry = (next() % 3) as usize;
                let took = if next() % 4 == 0 { LONG } else { SHORT };
                let place = p.place(entry);
                if place == Place::Inline {
                    assert!(last_short[entry], "inline only right after a short run");
                    if took > INLINE_BOUND {
                        long_inline[entry] += 1;
                    }
                }
                p.ran(entry, place, took);
                last_short[entry] = took <= INLINE_BOUND;
            }
            assert!(long_inline.iter().all(|&n| n <= 1), "{long_inline:?}");
        }
    }

    fn epoch(serial: bool, first: bool) -> Epoch {
        Epoch {
            id: EpochId(1),
            level: 1,
            branch: vec![0],
            walks: 0..4,
            serial: serial.then_some(SerialStep { position: 1, option: 0 }),
            plain: 2..3,
            first,
            last: true,
        }
    }

    #[test]
    fn the_live_check_uses_the_probe_when_there_is_one() {
        assert_eq!(LiveCheck::of(&epoch(true, false), Some(false)), LiveCheck::Known(false));
        assert_eq!(LiveCheck::of(&epoch(true, false), Some(true)), LiveCheck::Known(true));
        assert_eq!(LiveCheck::of(&epoch(true, false), None), LiveCheck::Ask);
        // A first segment or an epoch without a serial action needs none.
        assert_eq!(LiveCheck::of(&epoch(true, true), Some(false)), LiveCheck::None);
        assert_eq!(LiveCheck::of(&epoch(false, false), None), LiveCheck::None);
        assert!(!LiveCheck::needed(&epoch(true, true)));
    }
}
