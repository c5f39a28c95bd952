//! Pruning by subtree against pruning walk by walk. A run asks each pruning
//! rule once per subtree of walks that agree on what the rule read; these
//! tests draw random pure rules (what each entry reads, in which order,
//! where it returns early, whether it reads the walk id) on random option
//! counts, run them with random thread counts and batch sizes (so that
//! units start and end anywhere in a subtree), and check that exactly the
//! walks the rules reject, asked walk by walk, were pruned.

use std::sync::{Mutex, MutexGuard};

use combtest::model::space::{EntryInfo, EntryKind, Space};
use combtest::{
    Action, ActionResult, AsyncAction, Halt, RunOptions, SerialAction, WalkContext, WalkId,
    WalkOrder, WalkView, run,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Entries per walk order.
const LEN: usize = 6;

/// One entry's pruning rule: a pure function of its own option and the
/// options it reads, in order, returning at the first decisive mix.
#[derive(Debug, Clone)]
struct Rule {
    seed: u64,
    reads: Vec<usize>,
    /// Mixes in the walk id at the end (the rule is then asked per walk).
    reads_id: bool,
}

/// What the entries of the current case do: option counts and rules.
#[derive(Debug, Clone)]
struct Case {
    options: [u32; LEN],
    rules: [Rule; LEN],
}

static CASE: Mutex<Option<Case>> = Mutex::new(None);
/// Test functions of this file run one case at a time (they share `CASE`).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn case() -> Case {
    CASE.lock().unwrap().clone().expect("a case is set")
}

fn mix(a: u64, b: u64) -> u64 {
    (a ^ b.wrapping_add(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(29)
}

/// The rule of `position` for option `own`, reading other options through
/// `read` and the id through `id`.
fn decide(rule: &Rule, own: u32, read: impl Fn(usize) -> u32, id: impl Fn() -> u64) -> bool {
    let mut h = mix(rule.seed, u64::from(own));
    if h.is_multiple_of(5) {
        return true; // Its own option alone rejects.
    }
    for &p in &rule.reads {
        h = mix(h, u64::from(read(p)));
        match h % 6 {
            0 => return true,
            1 => return false,
            _ => {}
        }
    }
    if rule.reads_id {
        h = mix(h, id());
    }
    h.is_multiple_of(4)
}

fn prunes(position: usize, own: u32, walk: &WalkView<'_>) -> bool {
    let case = case();
    decide(&case.rules[position], own, |p| walk.option_index(p), || walk.id().0)
}

type State = u32;

/// A plain entry whose rule is `CASE`'s at its position.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plain<const P: usize>(u32);

impl<const P: usize> Action<State> for Plain<P> {
    fn options() -> Vec<Self> {
        (0..case().options[P]).map(Self).collect()
    }
    fn run(&self, state: &mut State) -> ActionResult {
        *state += 1;
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        assert_eq!(walk.position(), P);
        prunes(P, self.0, walk)
    }
}

/// A plain entry with the default `prune`: its option is never read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quiet<const P: usize>(u32);

impl<const P: usize> Action<State> for Quiet<P> {
    fn options() -> Vec<Self> {
        (0..case().options[P]).map(Self).collect()
    }
    fn run(&self, state: &mut State) -> ActionResult {
        *state += 1;
        Ok(())
    }
}

/// A serial entry with a rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Serial<const P: usize>(u32);

impl<const P: usize> SerialAction<State> for Serial<P> {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..case().options[P]).map(Self).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0)
    }
    fn apply(&self, _: &u32, state: &mut State) -> ActionResult {
        *state += 1;
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        prunes(P, self.0, walk)
    }
}

/// An async entry with a rule (its batches run as futures, pruned first).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Later<const P: usize>(u32);

impl<const P: usize> AsyncAction<State> for Later<P> {
    fn options() -> Vec<Self> {
        (0..case().options[P]).map(Self).collect()
    }
    async fn run(&self, state: &mut State, _: WalkContext<'_>) -> ActionResult {
        *state += 1;
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        prunes(P, self.0, walk)
    }
}

/// Which entries of the walk order are serial, and which has no rule.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `Plain0 Quiet1 Plain2 Plain3 Plain4 Plain5`.
    Plain,
    /// `Plain0 *Serial1 Plain2 Quiet3 *Serial4 Plain5`.
    Serial,
    /// `Plain0 Quiet1 Later2 Plain3 Plain4 Plain5`.
    Async,
}

impl Shape {
    fn kinds(self) -> [EntryKind; LEN] {
        let (p, s) = (EntryKind::Plain, EntryKind::Serial);
        match self {
            Shape::Plain | Shape::Async => [p; LEN],
            Shape::Serial => [p, s, p, p, s, p],
        }
    }

    /// The entries with the default `prune`.
    fn quiet(self) -> usize {
        match self {
            Shape::Serial => 3,
            Shape::Plain | Shape::Async => 1,
        }
    }
}

/// The ids the rules reject, asked walk by walk in walk order (the first
/// rule that rejects decides, as in a run).
fn expected_pruned(shape: Shape, case: &Case) -> Vec<u64> {
    let entries = (0..LEN)
        .map(|p| EntryInfo {
            name: "E",
            kind: shape.kinds()[p],
            options: (0..case.options[p]).map(|o| o.to_string()).collect(),
        })
        .collect();
    let space = Space::new(entries).unwrap();
    (0..space.size())
        .filter(|&id| {
            let digits = space.digits(id).unwrap();
            (0..LEN).any(|p| {
                p != shape.quiet() && decide(&case.rules[p], digits[p], |q| digits[q], || id)
            })
        })
        .collect()
}

fn rules() -> impl Strategy<Value = Rule> {
    (any::<u64>(), prop::collection::vec(0..LEN, 0..4), prop::bool::weighted(0.15))
        .prop_map(|(seed, reads, reads_id)| Rule { seed, reads, reads_id })
}

fn cases() -> impl Strategy<Value = Case> {
    (prop::array::uniform6(1u32..5), prop::array::uniform6(rules()))
        .prop_map(|(options, rules)| Case { options, rules })
}

fn set(case: &Case) -> MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    *CASE.lock().unwrap() = Some(case.clone());
    guard
}

/// Runs `order` and checks its pruned walks against [`expected_pruned`].
fn check<C: combtest::Entries<State>>(
    order: &WalkOrder<State, C>,
    shape: Shape,
    case: &Case,
    threads: usize,
    batch: Option<u64>,
) -> Result<(), TestCaseError> {
    let mut options = RunOptions::new(0).threads(threads).gather_states(true);
    if let Some(batch) = batch {
        options = options.max_batch(batch);
    }
    let report = run(order, options).unwrap();
    let expected = expected_pruned(shape, case);
    let pruned: Vec<u64> =
        (0..report.walks).filter(|&id| !report.states.contains_key(&WalkId(id))).collect();
    prop_assert_eq!(report.counts.pruned, expected.len() as u64);
    prop_assert_eq!(&pruned, &expected);
    prop_assert_eq!(report.counts.passed + report.counts.pruned, report.walks);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn plain_orders_prune_exactly_the_rejected_walks(
        case in cases(), threads in 1usize..4, batch in prop::option::of(1u64..40),
    ) {
        let _one = set(&case);
        let order = WalkOrder::<State>::new()
            .then::<Plain<0>>()
            .then::<Quiet<1>>()
            .then::<Plain<2>>()
            .then::<Plain<3>>()
            .then::<Plain<4>>()
            .then::<Plain<5>>();
        check(&order, Shape::Plain, &case, threads, batch)?;
    }

    #[test]
    fn orders_with_serial_entries_prune_exactly_the_rejected_walks(
        case in cases(), threads in 1usize..4, batch in prop::option::of(1u64..40),
    ) {
        let _one = set(&case);
        let order = WalkOrder::<State>::new()
            .then::<Plain<0>>()
            .serial::<Serial<1>>()
            .then::<Plain<2>>()
            .then::<Quiet<3>>()
            .serial::<Serial<4>>()
            .then::<Plain<5>>();
        check(&order, Shape::Serial, &case, threads, batch)?;
    }

    #[test]
    fn async_orders_prune_exactly_the_rejected_walks(
        case in cases(), threads in 1usize..3, batch in prop::option::of(1u64..40),
    ) {
        let _one = set(&case);
        let order = WalkOrder::<State>::new()
            .then::<Plain<0>>()
            .then::<Quiet<1>>()
            .then_async::<Later<2>>()
            .then::<Plain<3>>()
            .then::<Plain<4>>()
            .then::<Plain<5>>();
        check(&order, Shape::Async, &case, threads, batch)?;
    }
}
