//! Failure groups, minimal walks and failure-inducing conditions, end to
//! end: a bank-account suite with two planted bugs (one that depends on
//! two entries, one on three), plus pruning and cancelling that must count
//! as neither. The groups are asserted exactly; they do not depend on the
//! number of threads; a soak of 20 rounds gives the same groups with 20×
//! the counts; the human summary, `run --json` and `junit.xml` carry them.

use combtest::model::triage::{Conditions, FailureGroup};
use combtest::soak::{SoakLimit, SoakOptions, SoakStop, soak};
use combtest::suites::{Fixture, suite};
use combtest::{
    Action, ActionResult, Report, RunOptions, WalkId, WalkOrder, WalkView, cancel, fail,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposited: i64,
    strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Deposit(i64);
impl Action<Account> for Deposit {
    fn options() -> Vec<Self> {
        vec![Deposit(0), Deposit(10), Deposit(50)]
    }
    fn run(&self, a: &mut Account) -> ActionResult {
        a.balance += self.0;
        a.deposited = self.0;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Withdraw(i64);
impl Action<Account> for Withdraw {
    fn options() -> Vec<Self> {
        vec![Withdraw(0), Withdraw(10), Withdraw(50)]
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        // Withdrawing 10 under a plain audit makes no sense here: pruned,
        // neither for nor against any condition.
        walk.get::<Withdraw>() == Some(&Withdraw(10)) && walk.get::<Audit>() == Some(&Audit::On)
    }
    fn run(&self, a: &mut Account) -> ActionResult {
        // Bug 1 (two entries): an overdraft from an empty account is
        // reported as a failure with volatile numbers in its text.
        if a.deposited == 0 && self.0 == 50 {
            return fail(format!("balance {} went negative", a.balance - self.0));
        }
        a.balance = (a.balance - self.0).max(0);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Audit {
    Off,
    On,
    Strict,
}
impl Action<Account> for Audit {
    fn options() -> Vec<Self> {
        vec![Audit::Off, Audit::On, Audit::Strict]
    }
    fn run(&self, a: &mut Account) -> ActionResult {
        a.strict = *self == Audit::Strict;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Close {
    No,
    Yes,
}
impl Action<Account> for Close {
    fn options() -> Vec<Self> {
        vec![Close::No, Close::Yes]
    }
    fn run(&self, a: &mut Account) -> ActionResult {
        if *self == Close::Yes && a.deposited == 10 {
            return cancel();
        }
        // Bug 2 (three entries): closing a 50-unit account after a strict
        // audit fails.
        if *self == Close::Yes && a.deposited == 50 && a.strict {
            return fail(format!("ledger 0x{:x} off by {}", a.balance * 7919, a.balance));
        }
        Ok(())
    }
}

fn order() -> WalkOrder<Account, impl combtest::Entries<Account>> {
    WalkOrder::new().then::<Deposit>().then::<Withdraw>().then::<Audit>().then::<Close>()
}

fn run(threads: usize) -> Report<Account> {
    let options = RunOptions::new(Account::default()).threads(threads).max_batch(3);
    combtest::run(&order(), options).unwrap()
}

fn terms(g: &FailureGroup) -> Vec<(usize, Vec<u32>)> {
    match &g.conditions {
        Conditions::Found { terms, sampled: false, conservative: false } => {
            terms.iter().map(|t| (t.position, t.options.clone())).collect()
        }
        other => panic!("no conditions: {other:?}"),
    }
}

fn ids(g: &FailureGroup) -> Vec<u64> {
    g.walk_ids.iter().map(|id| id.0).collect()
}

/// Walk ids: Deposit is the most significant digit (×18), then Withdraw
/// (×6), Audit (×2), Close.
#[test]
fn two_bugs_give_two_groups_with_exact_minimal_walks_and_conditions() {
    let report = run(2);
    assert!(report.is_consistent());
    // Bug 1: Deposit=0, Withdraw=50: ids 12..18 (pruning needs
    // Withdraw=10). Bug 2: Deposit=50, Audit=Strict, Close=Yes: 41, 47, 53.
    assert_eq!(report.counts.failed, 9, "{:?}", report.failed_walks);
    let groups = &report.failure_groups;
    assert_eq!(groups.len(), 2, "{groups:#?}");

    let g = &groups[0];
    assert_eq!((g.signature.action_index, g.signature.action.as_str()), (1, "Withdraw"));
    assert_eq!(g.signature.error, "balance <n> went negative");
    assert_eq!(g.count, 6);
    assert_eq!(ids(g), [12, 13, 14, 15, 16]);
    assert_eq!(g.minimal.id, WalkId(12));
    assert_eq!(g.minimal.option_indices(), [0, 2, 0, 0]);
    assert_eq!(g.minimal_error, "balance -50 went negative");
    assert_eq!(terms(g), [(0, vec![0]), (1, vec![2])]);
    assert_eq!(
        g.conditions.to_string(),
        "fails whenever Deposit=Deposit(0) and Withdraw=Withdraw(50), whatever the other entries"
    );

    let g = &groups[1];
    assert_eq!((g.signature.action_index, g.signature.action.as_str()), (3, "Close"));
    assert_eq!(g.signature.error, "ledger <hex> off by <n>");
    assert_eq!(g.count, 3);
    assert_eq!(ids(g), [41, 47, 53]);
    assert_eq!(g.minimal.id, WalkId(41));
    assert_eq!(g.minimal.option_indices(), [2, 0, 2, 1]);
    assert_eq!(terms(g), [(0, vec![2]), (2, vec![2]), (3, vec![1])]);
}

#[test]
fn groups_do_not_depend_on_threads_or_batch_order() {
    let one = run(1);
    let four = run(4);
    assert_eq!(one.failure_groups, four.failure_groups);
    assert_eq!(
        (one.counts.pruned, one.counts.cancelled),
        (four.counts.pruned, four.counts.cancelled)
    );
    assert!(one.counts.pruned > 0 && one.counts.cancelled > 0, "the suite prunes and cancels");
}

#[test]
fn a_soak_of_twenty_rounds_aggregates_its_groups() {
    let suite = suite("bank", "two planted bugs", order(), || Ok(Fixture::new(Account::default())));
    let mut limit = SoakLimit::default();
    limit.rounds = Some(20);
    let mut options = SoakOptions::new(limit);
    options.run.threads = Some(2);
    let report = soak(suite.as_ref(), &options, &SoakStop::default(), &|_, _| {}).unwrap();
    assert_eq!(report.totals.rounds, 20);
    assert_eq!(report.totals.counts.failed, 180);
    // The final rate is the whole soak's.
    let t = &report.totals;
    assert!(t.walks_per_s > 0.0 && (t.walks_per_s * t.elapsed_s - t.walks as f64).abs() < 1.0);
    let groups: Vec<String> = report
        .failure_groups
        .iter()
        .map(|g| {
            let (first, last) = (g.first_round.unwrap(), g.last_round.unwrap());
            format!(
                "{} x{} rounds {first}-{last} minimal {}",
                g.action, g.count, g.minimal_walk.walk_id
            )
        })
        .collect();
    assert_eq!(
        groups,
        ["Withdraw x120 rounds 0-19 minimal 12", "Close x60 rounds 0-19 minimal 41"]
    );
    assert!(report.failure_groups[0].conditions.found);
}

#[test]
fn a_sampled_soak_speaks_only_of_the_walks_that_ran() {
    let suite = suite("bank", "two planted bugs", order(), || Ok(Fixture::new(Account::default())));
    let mut limit = SoakLimit::default();
    limit.rounds = Some(5);
    let mut options = SoakOptions::new(limit);
    options.seed = 7;
    options.sample = Some(40);
    options.run.threads = Some(2);
    let report = soak(suite.as_ref(), &options, &SoakStop::default(), &|_, _| {}).unwrap();
    assert_eq!(report.totals.walks, 200);
    let counted: u64 = report.failure_groups.iter().map(|g| g.count).sum();
    assert_eq!(counted, report.totals.counts.failed);
    assert!(!report.failure_groups.is_empty(), "40 of 54 walks per round include a failing one");
    assert!(
        report.failure_groups.iter().any(|g| g.conditions.found),
        "{:?}",
        report.failure_groups
    );
    for group in &report.failure_groups {
        assert!(group.conditions.sampled || !group.conditions.found, "{group:?}");
        if group.conditions.found {
            assert!(
                group.conditions.text.ends_with("(among the sampled walks that ran)"),
                "{}",
                group.conditions.text
            );
        }
    }
}

#[test]
fn live_progress_counts_groups_as_failures_arrive() {
    let suite = suite("bank", "two planted bugs", order(), || Ok(Fixture::new(Account::default())));
    let mut options = combtest::suites::SuiteOptions::default();
    options.progress = Some(Default::default());
    let report = suite.run(&options).unwrap();
    let progress = options.progress.as_ref().unwrap();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&progress.groups), 2);
    assert_eq!((load(&progress.failed), load(&progress.ended)), (9, report.walks));
}
