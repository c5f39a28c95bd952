//! Serial actions are global pinch points (DESIGN.md semantics 3): every
//! action records the serial history the world shows while it runs, and the
//! test proves no segment ever ran under another branch's serial action, no
//! segment ran while a serial action ran, and each serial action ran exactly
//! once per epoch.
//!
//! The world is process-global, so this file holds a single test.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use combtest::{Action, ActionResult, Halt, RunOptions, SerialAction, WalkOrder, run};
use serde::{Deserialize, Serialize};

/// The serial options the world currently has, one per level.
static WORLD: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Plain actions executing right now, anywhere.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// The branch (serial history) of each serial run, in run order.
static SERIAL_RUNS: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());
/// Everything that broke the invariant.
static VIOLATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Plain action runs observed.
static PLAIN_RUNS: AtomicUsize = AtomicUsize::new(0);

fn violation(text: String) {
    VIOLATIONS.lock().unwrap().push(text);
}

/// A walk's own record of the serial values handed to it.
#[derive(Debug, Clone, Default)]
struct Walker {
    serials: Vec<u32>,
}

/// A plain action of segment `LEVEL` (`TAG` keeps positions distinct).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work<const LEVEL: usize, const TAG: u8, const N: u32>(u32);

impl<const LEVEL: usize, const TAG: u8, const N: u32> Action<Walker> for Work<LEVEL, TAG, N> {
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self, walker: &mut Walker) -> ActionResult {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        PLAIN_RUNS.fetch_add(1, Ordering::Relaxed);
        if walker.serials.len() != LEVEL {
            violation(format!("level {LEVEL} action saw {} serial values", walker.serials.len()));
        }
        // Look at the world twice, yielding in between to widen the window in
        // which a misplaced serial action could change it.
        for _ in 0..2 {
            let world = WORLD.lock().unwrap().clone();
            if world.get(..LEVEL) != Some(&walker.serials[..]) {
                violation(format!(
                    "option {} of a walk of branch {:?} ran under world {world:?}",
                    self.0, walker.serials
                ));
            }
            std::thread::yield_now();
        }
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The serial action at `LEVEL` (1-based): sets the world's option there.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetWorld<const LEVEL: usize, const N: u32>(u32);

impl<const LEVEL: usize, const N: u32> SerialAction<Walker> for SetWorld<LEVEL, N> {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        let running = RUNNING.load(Ordering::SeqCst);
        if running != 0 {
            violation(format!("serial action at level {LEVEL} ran while {running} actions ran"));
        }
        let mut world = WORLD.lock().unwrap();
        world.truncate(LEVEL - 1);
        if world.len() != LEVEL - 1 {
            violation(format!("level {LEVEL} serial ran before level {}", LEVEL - 1));
        }
        world.push(self.0);
        SERIAL_RUNS.lock().unwrap().push(world.clone());
        Ok(self.0)
    }
    fn apply(&self, value: &u32, walker: &mut Walker) -> ActionResult {
        walker.serials.push(*value);
        Ok(())
    }
}

#[test]
fn serial_actions_are_global_pinch_points() {
    let order = WalkOrder::<Walker>::new()
        .then::<Work<0, 1, 3>>()
        .then::<Work<0, 2, 2>>()
        .serial::<SetWorld<1, 3>>()
        .then::<Work<1, 3, 3>>()
        .serial::<SetWorld<2, 2>>()
        .then::<Work<2, 4, 4>>();
    let walks = 3 * 2 * 3 * 3 * 2 * 4;
    let report = run(&order, RunOptions::default().threads(8)).unwrap();
    assert_eq!((report.walks, report.counts.passed), (walks, walks));
    assert!(VIOLATIONS.lock().unwrap().is_empty(), "{:?}", VIOLATIONS.lock().unwrap());
    // Every plain action of every walk ran once.
    assert_eq!(PLAIN_RUNS.load(Ordering::Relaxed) as u64, walks * 4);
    // One serial run per epoch: 3 at level 1, 3 x 2 at level 2, each branch
    // exactly once, depth-first.
    let runs = SERIAL_RUNS.lock().unwrap().clone();
    assert_eq!(report.serial_actions, 9);
    let mut per_branch: BTreeMap<Vec<u32>, usize> = BTreeMap::new();
    for branch in &runs {
        *per_branch.entry(branch.clone()).or_default() += 1;
    }
    assert_eq!(per_branch.len(), 9);
    assert!(per_branch.values().all(|&n| n == 1), "{per_branch:?}");
    let expected: Vec<Vec<u32>> = vec![
        vec![0],
        vec![0, 0],
        vec![0, 1],
        vec![1],
        vec![1, 0],
        vec![1, 1],
        vec![2],
        vec![2, 0],
        vec![2, 1],
    ];
    assert_eq!(runs, expected);
}
