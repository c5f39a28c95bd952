//! The SerialBarrier's decisions, as data in and answers out: how an
//! epoch's live-walk check is answered ([`LiveCheck`]: by the probe answered
//! with the last `EpochDone`, or by asking). The barrier actor carries them
//! out; nothing here knows of a runtime.

use super::epoch::Epoch;

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
