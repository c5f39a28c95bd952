//! Pure data and decisions: walk space, walk ids, epochs, outcomes, the
//! trace and report formats. Nothing here imports the actor runtime, so all
//! of it is tested without one.

pub mod action;
pub mod dispatch;
pub mod epoch;
pub mod holdings;
pub mod junit;
pub mod membership;
pub mod outcome;
pub mod sample;
pub mod space;
pub mod trace;
pub mod triage;
pub mod walk;
