//! The README's example: a bank account, two kinds of action, every
//! combination run in parallel.
//!
//! Run: `cargo run --example quickstart`

use combtest::{Action, ActionResult, RunOptions, WalkOrder, cancel, fail, run};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit(i64);

impl Action<Account> for Deposit {
    fn options() -> Vec<Self> {
        vec![Deposit(0), Deposit(10), Deposit(100)]
    }
    fn run(&self, account: &mut Account) -> ActionResult {
        account.balance += self.0;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Withdraw(i64);

impl Action<Account> for Withdraw {
    fn options() -> Vec<Self> {
        vec![Withdraw(5), Withdraw(50)]
    }
    fn run(&self, account: &mut Account) -> ActionResult {
        if account.balance < self.0 {
            return cancel(); // The bank refuses: nothing to test on this walk.
        }
        account.balance -= self.0;
        if account.balance < 0 { fail("overdrawn") } else { Ok(()) }
    }
}

fn main() {
    let order = WalkOrder::<Account>::new().then::<Deposit>().then::<Withdraw>().then::<Withdraw>();
    let report = run(&order, RunOptions::default()).expect("the walk order is valid");
    println!(
        "{} walks: {} passed, {} cancelled, {} failed",
        report.walks, report.counts.passed, report.counts.cancelled, report.counts.failed
    );
}
