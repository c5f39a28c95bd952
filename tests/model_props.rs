//! Property tests of the pure model: the walk-id bijection, branch ranges,
//! and epoch coverage (every segment of every walk planned exactly once, in
//! order, in ranges that blocks tile exactly).

use combtest::model::epoch::EpochCursor;
use combtest::model::space::{Blocks, EntryInfo, EntryKind, Space};
use proptest::prelude::*;

/// Walk orders of 1 to 6 entries, any mix of plain and serial, with spaces
/// of at most a few thousand walks.
fn spaces() -> impl Strategy<Value = Space> {
    prop::collection::vec((any::<bool>(), 1u32..5), 1..7).prop_map(|entries| {
        let entries = entries
            .into_iter()
            .map(|(serial, n)| EntryInfo {
                name: "E",
                kind: if serial { EntryKind::Serial } else { EntryKind::Plain },
                options: (0..n).map(|i| i.to_string()).collect(),
            })
            .collect();
        Space::new(entries).expect("small spaces are valid")
    })
}

proptest! {
    #[test]
    fn ids_and_options_are_a_bijection(space in spaces()) {
        let mut seen = std::collections::HashSet::new();
        let mut stepped = space.digits(0).unwrap();
        for id in 0..space.size() {
            let digits = space.digits(id).unwrap();
            for (d, n) in digits.iter().zip(space.option_counts()) {
                prop_assert!(d < n);
            }
            prop_assert_eq!(space.id_of(&digits), Some(id));
            prop_assert!(seen.insert(digits.clone()));
            // The odometer visits ids in order.
            prop_assert_eq!(&stepped, &digits);
            let more = space.step(&mut stepped);
            prop_assert_eq!(more, id + 1 < space.size());
        }
        prop_assert!(space.digits(space.size()).is_err());
    }

    #[test]
    fn every_branch_is_one_contiguous_range(space in spaces()) {
        for id in 0..space.size() {
            let digits = space.digits(id).unwrap();
            for level in 0..=space.serial_positions().len() {
                let branch = space.branch_of(&digits, level);
                let range = space.branch_range(&branch);
                prop_assert!(range.contains(&id));
                // Every walk of the range shares the branch.
                for other in [range.start, range.end - 1] {
                    let other = space.digits(other).unwrap();
                    prop_assert_eq!(space.branch_of(&other, level), branch.clone());
                }
            }
        }
    }

    #[test]
    fn epochs_cover_every_segment_once_in_order(space in spaces(), runners in 1usize..9) {
        let size = space.size() as usize;
        let per_walk = space.segments_per_walk();
        // The levels each walk saw, in the order its segments were planned.
        let mut seen: Vec<Vec<usize>> = vec![Vec::new(); size];
        let blocks = Blocks::for_space(&space, runners);
        let mut epochs = 0u64;
        let mut serial_epochs = 0u64;
        for epoch in EpochCursor::new(space.clone()) {
            epochs += 1;
            serial_epochs += u64::from(epoch.serial.is_some());
            prop_assert_eq!(epoch.first, epoch.level == space.first_level());
            prop_assert_eq!(epoch.last, epoch.level == space.last_level());
            // Blocks tile the epoch exactly.
            let mut next = epoch.walks.start;
            for part in blocks.split(epoch.walks.clone()) {
                prop_assert_eq!(part.start, next);
                prop_assert_eq!(blocks.block_of(part.start), part.clone());
                next = part.end;
            }
            prop_assert_eq!(next, epoch.walks.end);
            for id in epoch.walks.clone() {
                let digits = space.digits(id).unwrap();
                prop_assert_eq!(space.branch_of(&digits, epoch.level), epoch.branch.clone());
                seen[id as usize].push(epoch.level);
            }
        }
        let first = space.first_level();
        for levels in &seen {
            let expected: Vec<usize> = (first..first + per_walk).collect();
            prop_assert_eq!(levels, &expected);
        }
        // One epoch per branch at each level.
        let counts = space.option_counts();
        let mut branches = 1u64;
        let mut expected_epochs = u64::from(space.has_leading_segment());
        for &p in space.serial_positions() {
            branches *= u64::from(counts[p]);
            expected_epochs += branches;
        }
        prop_assert_eq!(epochs, expected_epochs);
        prop_assert_eq!(u128::from(epochs), space.epoch_count());
        prop_assert_eq!(serial_epochs, expected_epochs - u64::from(space.has_leading_segment()));
    }
}

/// An operation on the holdings of a 64-walk space.
#[derive(Debug, Clone)]
enum HoldingOp {
    Record { start: u64, len: u64, home: usize, live: Vec<bool> },
    Release { start: u64, len: u64 },
    Lose { home: usize },
}

fn holding_ops() -> impl Strategy<Value = Vec<HoldingOp>> {
    let op = prop_oneof![
        3 => (0u64..64, 1u64..20, 0usize..3, prop::collection::vec(any::<bool>(), 20)).prop_map(
            |(start, len, home, live)| {
                let len = len.min(64 - start);
                HoldingOp::Record { start, len, home, live: live[..len as usize].to_vec() }
            }
        ),
        1 => (0u64..64, 1u64..20).prop_map(|(start, len)| HoldingOp::Release { start, len: len.min(64 - start) }),
        1 => (0usize..3).prop_map(|home| HoldingOp::Lose { home }),
    ];
    prop::collection::vec(op, 1..30)
}

proptest! {
    /// `Holdings` agrees with a per-walk model: every walk is held at one
    /// home or not at all, live or not; `pieces` routes exactly the held
    /// walks that have live ones around them, and `lose` returns exactly
    /// the live walks of the lost home.
    #[test]
    fn holdings_match_a_per_walk_model(ops in holding_ops()) {
        use combtest::model::holdings::{Holdings, LiveSet};
        let mut holdings = Holdings::new();
        let mut model: Vec<Option<(usize, bool)>> = vec![None; 64];
        for op in ops {
            match op {
                HoldingOp::Record { start, len, home, live } => {
                    holdings.record(start..start + len, home, LiveSet::from_bits(live.clone()));
                    for (i, l) in live.into_iter().enumerate() {
                        model[start as usize + i] = Some((home, l));
                    }
                }
                HoldingOp::Release { start, len } => {
                    holdings.release(start..start + len);
                    for slot in &mut model[start as usize..(start + len) as usize] {
                        *slot = None;
                    }
                }
                HoldingOp::Lose { home } => {
                    let lost: Vec<u64> = holdings.lose(home).into_iter().flatten().collect();
                    let expected: Vec<u64> = (0..64u64)
                        .filter(|&i| model[i as usize] == Some((home, true)))
                        .collect();
                    prop_assert_eq!(lost, expected);
                    for slot in &mut model {
                        if slot.is_some_and(|(h, _)| h == home) {
                            *slot = None;
                        }
                    }
                }
            }
            prop_assert_eq!(
                holdings.live(),
                model.iter().filter(|s| s.is_some_and(|(_, l)| l)).count() as u64
            );
            // Every live walk is routed to its home; nothing unheld is.
            let pieces = holdings.pieces(0..64);
            for id in 0..64u64 {
                let routed: Vec<usize> =
                    pieces.iter().filter(|(r, _)| r.contains(&id)).map(|(_, h)| *h).collect();
                match model[id as usize] {
                    Some((home, true)) => prop_assert_eq!(routed, vec![home]),
                    None => prop_assert!(routed.is_empty()),
                    Some((home, false)) => prop_assert!(routed.is_empty() || routed == vec![home]),
                }
            }
        }
    }
}

proptest! {
    /// A `LiveSet` built bit by bit (`none` then `set`), or by appending
    /// sets (`extend`, aligned on a word or not), holds exactly the bits it
    /// was given, in order.
    #[test]
    fn live_sets_hold_their_bits(
        parts in prop::collection::vec(prop::collection::vec(any::<bool>(), 0..150), 1..5)
    ) {
        use combtest::model::holdings::LiveSet;
        let mut joined = LiveSet::default();
        for bits in &parts {
            let mut set = LiveSet::none(bits.len() as u64);
            for (offset, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
                set.set(offset as u64);
            }
            prop_assert_eq!(&set, &LiveSet::from_bits(bits.iter().copied()));
            joined.extend(&set);
        }
        let all: Vec<bool> = parts.concat();
        prop_assert_eq!(&joined, &LiveSet::from_bits(all.iter().copied()));
        prop_assert_eq!(joined.count(), all.iter().filter(|b| **b).count() as u64);
    }
}
