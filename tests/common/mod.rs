//! Actions shared by the integration tests.
#![allow(dead_code)]

use combtest::{Action, ActionResult, Halt, SerialAction};
use serde::{Deserialize, Serialize};

/// Every walk's state: the (tag, option) of each entry it ran, in order.
pub type Trail = Vec<(u8, u32)>;

/// A plain action with `N` options (0..N) that appends itself to the trail.
/// `TAG` makes each position its own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append<const TAG: u8, const N: u32>(pub u32);

impl<const TAG: u8, const N: u32> Action<Trail> for Append<TAG, N> {
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((TAG, self.0));
        Ok(())
    }
}

/// A serial action with `N` options whose value (its option) is appended to
/// the trail of every walk of its branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialAppend<const TAG: u8, const N: u32>(pub u32);

impl<const TAG: u8, const N: u32> SerialAction<Trail> for SerialAppend<TAG, N> {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0)
    }
    fn apply(&self, value: &u32, trail: &mut Trail) -> ActionResult {
        trail.push((TAG, *value));
        Ok(())
    }
}

/// The trail a walk must end with: its chosen options, tagged by position.
pub fn expected_trail(tags: &[u8], options: &[u32]) -> Trail {
    tags.iter().copied().zip(options.iter().copied()).collect()
}
