//! The reference's own expectations (py-combtest's test_walk_segments and
//! test_runner), ported.

mod common;

use combtest::{Action, ActionResult, RunOptions, WalkOrder, fail, run};
use common::{Append, SerialAppend, Trail, expected_trail};
use serde::{Deserialize, Serialize};

fn gathered() -> RunOptions<Trail> {
    RunOptions::default().gather_states(true).threads(3)
}

#[test]
fn two_serial_actions_972_walks() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 3>>()
        .then::<Append<2, 3>>()
        .serial::<SerialAppend<3, 2>>()
        .then::<Append<4, 3>>()
        .then::<Append<5, 3>>()
        .serial::<SerialAppend<6, 2>>()
        .then::<Append<7, 3>>();
    assert_eq!(order.size().unwrap(), 972);
    assert_eq!(order.segments_per_walk().unwrap(), 3);
    let report = run(&order, gathered()).unwrap();
    assert!(report.is_consistent());
    assert_eq!((report.walks, report.counts.passed, report.counts.segments), (972, 972, 2916));
    assert_eq!(report.serial_actions, 2 + 2 * 2);
    assert_eq!(report.states.len(), 972);
    for (id, trail) in &report.states {
        let walk = order.walk(id.0).unwrap();
        assert_eq!(trail, &expected_trail(&[1, 2, 3, 4, 5, 6, 7], &walk.option_indices()));
    }
    // Branch ids match the serial options: ids 0..486 ran under S1=0, and
    // within them 0..243 under S2=0.
    for id in [0u64, 242, 243, 485, 486, 971] {
        let trail = &report.states[&combtest::WalkId(id)];
        let s1 = trail[2].1;
        let s2 = trail[5].1;
        assert_eq!((s1, s2), ((id / 486) as u32, ((id / 243) % 2) as u32), "walk {id}");
    }
}

#[test]
fn leading_and_trailing_serial_108_walks() {
    let order = WalkOrder::<Trail>::new()
        .serial::<SerialAppend<1, 2>>()
        .then::<Append<2, 3>>()
        .then::<Append<3, 3>>()
        .then::<Append<4, 3>>()
        .serial::<SerialAppend<5, 2>>();
    assert_eq!(order.size().unwrap(), 108);
    assert_eq!(order.segments_per_walk().unwrap(), 2);
    let report = run(&order, gathered()).unwrap();
    assert_eq!(
        (report.counts.passed, report.counts.segments, report.serial_actions),
        (108, 216, 2 + 4)
    );
    for (id, trail) in &report.states {
        let walk = order.walk(id.0).unwrap();
        assert_eq!(trail, &expected_trail(&[1, 2, 3, 4, 5], &walk.option_indices()));
    }
}

#[test]
fn no_serial_actions_81_walks() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 3>>()
        .then::<Append<2, 3>>()
        .then::<Append<3, 3>>()
        .then::<Append<4, 3>>();
    assert_eq!(order.segments_per_walk().unwrap(), 1);
    let report = run(&order, gathered()).unwrap();
    assert_eq!((report.walks, report.counts.passed, report.counts.segments), (81, 81, 81));
    assert_eq!(report.serial_actions, 0);
    assert_eq!(report.states.len(), 81);
}

#[test]
fn append_suite_1500_walks_4500_segments() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 5>>()
        .then::<Append<2, 10>>()
        .serial::<SerialAppend<3, 5>>()
        .then::<Append<4, 3>>()
        .serial::<SerialAppend<5, 2>>();
    let report = run(&order, gathered()).unwrap();
    assert_eq!((report.walks, report.counts.passed, report.counts.segments), (1500, 1500, 4500));
    assert_eq!(report.serial_actions, 5 + 5 * 2);
    for (id, trail) in &report.states {
        let walk = order.walk(id.0).unwrap();
        assert_eq!(trail, &expected_trail(&[1, 2, 3, 4, 5], &walk.option_indices()));
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AlwaysFails;

impl Action<Trail> for AlwaysFails {
    fn options() -> Vec<Self> {
        vec![AlwaysFails]
    }
    fn run(&self, _: &mut Trail) -> ActionResult {
        fail("this action always fails")
    }
}

#[test]
fn a_single_failing_action() {
    let order = WalkOrder::<Trail>::new().then::<AlwaysFails>();
    let report = run(&order, RunOptions::default()).unwrap();
    assert_eq!((report.walks, report.counts.failed, report.counts.passed), (1, 1, 0));
    assert_eq!(report.failed_walks.len(), 1);
    let failure = &report.failed_walks[0];
    assert_eq!(failure.walk_id.0, 0);
    assert_eq!((failure.action_index, failure.action.as_ref()), (0, "AlwaysFails"));
    assert_eq!(failure.error, "this action always fails");
    assert!(!report.success());
}
