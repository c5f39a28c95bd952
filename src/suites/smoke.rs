//! `smoke`: 9 walks of two trivial actions, no setup. Checks the tool
//! itself and measures its fixed cost (process start to exit).

use serde::{Deserialize, Serialize};

use crate::model::action::{Action, ActionResult};
use crate::order::{Entries, WalkOrder};
use crate::suites::{Fixture, Suite};

/// Adds its option to the walk's sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add(pub u32);

impl Action<u32> for Add {
    fn options() -> Vec<Self> {
        vec![Add(0), Add(1), Add(2)]
    }
    fn run(&self, sum: &mut u32) -> ActionResult {
        *sum += self.0;
        Ok(())
    }
}

/// Multiplies the walk's sum by its option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale(pub u32);

impl Action<u32> for Scale {
    fn options() -> Vec<Self> {
        vec![Scale(1), Scale(2), Scale(3)]
    }
    fn run(&self, sum: &mut u32) -> ActionResult {
        *sum *= self.0;
        Ok(())
    }
}

/// The smoke walk order: `Add, Scale`.
pub fn order() -> WalkOrder<u32, impl Entries<u32>> {
    WalkOrder::new().then::<Add>().then::<Scale>()
}

/// The `smoke` suite.
pub fn suite() -> Box<dyn Suite> {
    crate::suites::suite(
        "smoke",
        "9 trivial walks: checks the tool and its fixed cost",
        order(),
        || Ok(Fixture::new(0)),
    )
}
