//! Panicking actions are walk outcomes: they stay off stderr (the report
//! has them), while panics anywhere else still reach the process's hook.
//! The panic hook is process-global, so this file holds a single test.

use std::sync::atomic::{AtomicUsize, Ordering};

use combtest::{Action, ActionResult, RunOptions, WalkOrder, run};
use serde::{Deserialize, Serialize};

static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Explode(u32);

impl Action<u32> for Explode {
    fn options() -> Vec<Self> {
        (0..20).map(Explode).collect()
    }
    fn run(&self, _: &mut u32) -> ActionResult {
        if self.0.is_multiple_of(2) {
            panic!("boom {}", self.0);
        }
        Ok(())
    }
}

#[test]
fn action_panics_do_not_reach_the_panic_hook() {
    // Stands in for the default hook, which would print to stderr.
    std::panic::set_hook(Box::new(|_| {
        HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));
    let order = WalkOrder::<u32>::new().then::<Explode>();
    let report = run(&order, RunOptions::default().threads(2)).unwrap();
    assert_eq!((report.counts.failed, report.counts.passed), (10, 10));
    assert!(report.failed_walks.iter().all(|f| f.error.starts_with("panicked: boom")));
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 0, "a walk's panic reached the hook");

    // A panic outside combtest's threads still does.
    let outside = std::thread::spawn(|| panic!("not a walk")).join();
    assert!(outside.is_err());
    assert_eq!(HOOK_CALLS.load(Ordering::SeqCst), 1);
}
