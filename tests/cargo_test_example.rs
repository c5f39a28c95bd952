//! combtest inside `cargo test`, as a user writes it: a walk order built in
//! one function, checked by one call in a `#[test]`. The system under test
//! is a map kept in a sorted `Vec`, compared after every action with
//! `BTreeMap` (the model). One variant has a planted bug: overwriting key 0
//! with the value 2 is ignored. The correct map passes; the buggy one fails
//! the check with the message a user would read (its failure group, the
//! failed walks, how to replay each), and the failing walk replays alone.
//!
//! Run: `cargo test --test cargo_test_example`.

use std::collections::BTreeMap;

use combtest::prelude::*;
use serde::{Deserialize, Serialize};

/// The implementation under test.
#[derive(Debug, Clone, Default)]
struct VecMap {
    items: Vec<(u8, u8)>,
    /// The planted bug: overwriting key 0 with the value 2 is dropped.
    buggy: bool,
}

impl VecMap {
    fn insert(&mut self, key: u8, value: u8) {
        match self.items.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(_) if self.buggy && key == 0 && value == 2 => {}
            Ok(i) => self.items[i].1 = value,
            Err(i) => self.items.insert(i, (key, value)),
        }
    }

    fn remove(&mut self, key: u8) {
        if let Ok(i) = self.items.binary_search_by_key(&key, |&(k, _)| k) {
            self.items.remove(i);
        }
    }
}

/// A walk's state: the implementation and the model, side by side.
#[derive(Debug, Clone, Default)]
struct Both {
    map: VecMap,
    model: BTreeMap<u8, u8>,
}

impl Both {
    fn new(buggy: bool) -> Self {
        Both { map: VecMap { buggy, ..VecMap::default() }, model: BTreeMap::new() }
    }

    fn agree(&self, after: impl std::fmt::Debug) -> ActionResult {
        let model: Vec<(u8, u8)> = self.model.iter().map(|(&k, &v)| (k, v)).collect();
        if self.map.items != model {
            return fail(format!("after {after:?}: map {:?}, model {model:?}", self.map.items));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Insert {
    key: u8,
    value: u8,
}

impl Action<Both> for Insert {
    fn options() -> Vec<Self> {
        (0..3).flat_map(|key| (1..3).map(move |value| Insert { key, value })).collect()
    }
    fn run(&self, both: &mut Both) -> ActionResult {
        both.map.insert(self.key, self.value);
        both.model.insert(self.key, self.value);
        both.agree(self)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Remove(u8);

impl Action<Both> for Remove {
    fn options() -> Vec<Self> {
        (0..3).map(Remove).collect()
    }
    fn run(&self, both: &mut Both) -> ActionResult {
        both.map.remove(self.0);
        both.model.remove(&self.0);
        both.agree(self)
    }
}

/// The walk order, returned from a function: 6 x 6 x 3 = 108 walks.
fn order() -> WalkOrder<Both, impl Entries<Both>> {
    WalkOrder::new().then::<Insert>().then::<Insert>().then::<Remove>()
}

#[test]
fn the_correct_map_passes_every_walk() {
    let report = check(&order(), Both::new(false));
    assert_eq!((report.walks, report.counts.passed), (108, 108));
    assert!(report.failure_groups.is_empty());
}

#[test]
fn the_planted_bug_fails_with_a_readable_message() {
    let panic = std::panic::catch_unwind(|| check(&order(), Both::new(true)))
        .expect_err("the buggy map must fail the check");
    let message = panic.downcast_ref::<String>().expect("a formatted panic message");
    // Insert{0,1} then Insert{0,2}, whatever Remove does: 3 walks (ids
    // 3, 4, 5: Insert's options are the most significant digit, x18, then
    // the second Insert's, x3), one group, and the options that induce it;
    // then the walks one by one, each with the line that replays it.
    for part in [
        "combtest: FAIL: 3 of 108 walks failed, 0 aborted (completed",
        "failure groups: 1 (3 failed walks)",
        "[1] 3 walks: Insert (entry 1): after Insert { key: <n>, value: <n> }: map [(<n>, <n>)], model [(<n>, <n>)]",
        "fails whenever Insert[0]=Insert { key: 0, value: 1 } and Insert[1]=Insert { key: 0, value: 2 }, whatever the other entries",
        "minimal walk 3: Insert (entry 1) failed: after Insert { key: 0, value: 2 }: map [(0, 1)], model [(0, 2)]",
        "[Insert[0]=Insert { key: 0, value: 1 }, Insert[1]=Insert { key: 0, value: 2 }, Remove=Remove(0)]",
        "replay: order.replay(3, initial)",
        "walks 3, 4, 5",
        "failed walks: 3\n  walk 3: ",
        "  walk 4: Insert (entry 1) failed: after Insert { key: 0, value: 2 }: map [(0, 1)], model [(0, 2)]\n    replay: order.replay(4, initial)\n",
    ] {
        assert!(message.contains(part), "missing {part:?} in:\n{message}");
    }
    // Groups first, then the walks one by one.
    assert!(message.find("failure groups:") < message.find("failed walks:"), "{message}");
    // The failing walk replays alone, as the message says.
    let replay = order().replay(3, Both::new(true)).unwrap();
    assert_eq!(
        replay.outcome,
        WalkOutcome::Failed {
            action_index: 1,
            action: "Insert",
            error: "after Insert { key: 0, value: 2 }: map [(0, 1)], model [(0, 2)]".to_string(),
        }
    );
}

#[test]
fn walk_ids_convert_to_and_from_u64() {
    let id = WalkId::from(3u64);
    assert_eq!(u64::from(id), 3);
    assert_eq!(order().walk(u64::from(id)).unwrap().id, id);
}
