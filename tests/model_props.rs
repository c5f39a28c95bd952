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
