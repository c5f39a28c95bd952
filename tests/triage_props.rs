//! Property tests of the failure triage (`model::triage`) against brute
//! force: random small spaces, random outcomes per walk, optional samples.
//! Whatever conditions it reports must cover the group and no counter-walk
//! (a walk that passed, or went past the failing entry without this
//! failure); when it says none exists within its search, a brute check of
//! the full conjunction agrees that it admits a counter-walk or was cut by
//! the term limit. Minimal walks and counts are checked exactly.

use combtest::model::outcome::FailedWalk;
use combtest::model::space::{EntryInfo, EntryKind, Space};
use combtest::model::triage::{Conditions, MAX_TERMS, Neither, Signature, Triage};
use combtest::{AbortedWalks, WalkId};
use proptest::prelude::*;

const NAMES: [&str; 5] = ["A", "B", "C", "D", "E"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Passed,
    Failed { at: usize, kind: u8 },
    Neither,
    Aborted,
}

fn space(radix: &[u32]) -> Space {
    Space::new(
        radix
            .iter()
            .enumerate()
            .map(|(i, &r)| EntryInfo {
                name: NAMES[i],
                kind: EntryKind::Plain,
                options: (0..r).map(|o| format!("{}{o}", NAMES[i])).collect(),
            })
            .collect(),
    )
    .unwrap()
}

/// A space, an optional sample, and each walk's fate. Failures follow a
/// planted rule (so conditions usually exist) with some noise.
fn case() -> impl Strategy<Value = (Vec<u32>, bool, Vec<Fate>, Vec<bool>)> {
    prop::collection::vec(1u32..4, 1..5).prop_flat_map(|radix| {
        let size: u64 = radix.iter().map(|&r| u64::from(r)).product();
        let n = radix.len();
        (
            Just(radix),
            any::<bool>(),
            prop::collection::vec(
                prop_oneof![
                    6 => Just(Fate::Passed),
                    3 => (0..n, 0u8..2).prop_map(|(at, kind)| Fate::Failed { at, kind }),
                    1 => Just(Fate::Neither),
                    1 => Just(Fate::Aborted),
                ],
                size as usize,
            ),
            prop::collection::vec(any::<bool>(), size as usize),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn conditions_cover_the_group_and_no_counter_walk((radix, sampled, fates, in_sample) in case()) {
        let space = space(&radix);
        let ids: Vec<u64> = (0..space.size()).filter(|&id| !sampled || in_sample[id as usize]).collect();
        let mut failed = Vec::new();
        let mut neither = Vec::new();
        let mut aborted = Vec::new();
        for &id in &ids {
            match fates[id as usize] {
                Fate::Passed => {}
                Fate::Failed { at, kind } => failed.push(FailedWalk {
                    walk_id: WalkId(id),
                    action_index: at,
                    action: NAMES[at].into(),
                    error: format!("bug {kind} at {id}"),
                }),
                Fate::Neither => Neither::push_id(&mut neither, id),
                Fate::Aborted => aborted.push(id..id + 1),
            }
        }
        let mut triage = Triage::new(space.clone(), sampled.then_some(ids.as_slice()));
        // Batches arrive in any order, in pieces.
        for chunk in neither.chunks(3).rev() {
            triage.neither(chunk.to_vec());
        }
        let unfinished = [AbortedWalks { walks: aborted, reason: "lost".into() }];
        let groups = triage.groups(&failed, &unfinished);
        prop_assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), failed.len() as u64);
        for g in &groups {
            let members: Vec<&FailedWalk> =
                failed.iter().filter(|f| Signature::of(f) == g.signature).collect();
            prop_assert_eq!(members.len() as u64, g.count);
            let minimal = members
                .iter()
                .min_by_key(|f| {
                    let d = space.digits(f.walk_id.0).unwrap();
                    (d.iter().filter(|&&x| x != 0).count(), f.walk_id)
                })
                .unwrap();
            prop_assert_eq!(g.minimal.id, minimal.walk_id);
            let p = g.signature.action_index;
            let counter = |id: u64| match fates[id as usize] {
                Fate::Passed => true,
                Fate::Failed { at, .. } => {
                    at >= p && !members.iter().any(|f| f.walk_id.0 == id)
                }
                _ => false,
            };
            match &g.conditions {
                Conditions::Found { terms, sampled: s, conservative: false } => {
                    prop_assert_eq!(*s, sampled);
                    prop_assert!(terms.len() <= MAX_TERMS);
                    let admits = |id: u64| {
                        let d = space.digits(id).unwrap();
                        terms.iter().all(|t| t.position <= p && t.options.contains(&d[t.position]))
                    };
                    for f in &members {
                        prop_assert!(admits(f.walk_id.0), "group walk {} not covered", f.walk_id);
                    }
                    for &id in &ids {
                        prop_assert!(!(counter(id) && admits(id)), "counter-walk {} admitted by {}", id, g.conditions);
                    }
                }
                Conditions::NotFound { .. } => {
                    // The tightest conjunction (every entry up to p restricted to
                    // the group's options) admits a counter-walk, or needs more
                    // terms than allowed.
                    let taken = |e: usize, o: u32| {
                        members.iter().any(|f| space.digits(f.walk_id.0).unwrap()[e] == o)
                    };
                    let tight_admits_counter = ids.iter().any(|&id| {
                        let d = space.digits(id).unwrap();
                        counter(id) && (0..=p).all(|e| taken(e, d[e]))
                    });
                    let restricting = (0..=p).filter(|&e| (0..radix[e]).any(|o| !taken(e, o))).count();
                    prop_assert!(tight_admits_counter || restricting > MAX_TERMS);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
