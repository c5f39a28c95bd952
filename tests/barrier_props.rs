//! The serial barrier's invariants over random walk orders, outcomes and
//! thread counts (seeded): each serial action runs exactly once per branch
//! that still has a live walk, depth-first, never while a segment of any
//! walk is under way (between its first and its last action), and never
//! under another branch's history; every plain action sees its branch's
//! serial history; the report accounts for every walk exactly as a plain
//! sequential interpreter does. The random outcomes make dead branches
//! (all walks cancelled or failed: the live check, by the probe that comes
//! back with `EpochDone` or by `AnyLive`), failing and panicking serial
//! actions (a failed branch), and slow serial actions (they spin for 300
//! us, so the runner threads park and are woken for the epoch after).
//!
//! `BARRIER_CASES` (default 24) and `BARRIER_SEED` (default 1) choose the
//! cases; a long run: `BARRIER_CASES=2000 cargo test --release --test
//! barrier_props`. The world is process-global, so this file holds a
//! single test.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use combtest::{Action, ActionResult, Entries, Halt, RunOptions, SerialAction, WalkOrder, run};
use serde::{Deserialize, Serialize};

const OK: u8 = 0;
const CANCEL: u8 = 1;
const FAIL: u8 = 2;
const PANIC: u8 = 3;
const SLOW: u8 = 4;

/// Entries by tag: plain actions 0-3, serial actions 4-5.
const TAGS: usize = 6;

/// The current case: each entry's option count and what each option does.
static CASE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// The serial options the world has now, one per level.
static WORLD: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Walks between the first and the last action of a segment, anywhere.
static MID_SEGMENT: AtomicUsize = AtomicUsize::new(0);
/// The branch of each serial run, in run order.
static SERIAL_RUNS: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());
static VIOLATIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn violation(text: String) {
    VIOLATIONS.lock().unwrap().push(text);
}

fn behaviour(tag: usize, option: u32) -> u8 {
    CASE.lock().unwrap()[tag][option as usize]
}

fn option_count(tag: usize) -> u32 {
    CASE.lock().unwrap()[tag].len() as u32
}

/// A walk's own record of the serial values handed to it.
#[derive(Debug, Clone, Default)]
struct Walker {
    serials: Vec<u32>,
}

/// A plain action of segment `LEVEL`, first and/or last of its segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work<const TAG: usize, const LEVEL: usize, const FIRST: bool, const LAST: bool>(u32);

impl<const TAG: usize, const LEVEL: usize, const FIRST: bool, const LAST: bool> Action<Walker>
    for Work<TAG, LEVEL, FIRST, LAST>
{
    fn options() -> Vec<Self> {
        (0..option_count(TAG)).map(Self).collect()
    }
    fn run(&self, walker: &mut Walker) -> ActionResult {
        if FIRST {
            MID_SEGMENT.fetch_add(1, Ordering::SeqCst);
        }
        if walker.serials.len() != LEVEL {
            violation(format!("level {LEVEL} action saw {} serial values", walker.serials.len()));
        }
        for _ in 0..2 {
            let world = WORLD.lock().unwrap().clone();
            if world.get(..LEVEL) != Some(&walker.serials[..]) {
                violation(format!("a walk of {:?} ran under world {world:?}", walker.serials));
            }
            std::thread::yield_now();
        }
        let outcome = behaviour(TAG, self.0);
        if LAST || outcome != OK {
            MID_SEGMENT.fetch_sub(1, Ordering::SeqCst);
        }
        match outcome {
            CANCEL => Err(Halt::Cancel),
            FAIL => Err(Halt::fail("scripted failure")),
            _ => Ok(()),
        }
    }
}

/// The serial action at `LEVEL` (1-based): sets the world's option there.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetWorld<const TAG: usize, const LEVEL: usize>(u32);

impl<const TAG: usize, const LEVEL: usize> SerialAction<Walker> for SetWorld<TAG, LEVEL> {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..option_count(TAG)).map(Self).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        let mid = MID_SEGMENT.load(Ordering::SeqCst);
        if mid != 0 {
            violation(format!(
                "serial action at level {LEVEL} ran while {mid} walks were mid-segment"
            ));
        }
        {
            let mut world = WORLD.lock().unwrap();
            world.truncate(LEVEL - 1);
            if world.len() != LEVEL - 1 {
                violation(format!("level {LEVEL} serial ran before level {}", LEVEL - 1));
            }
            world.push(self.0);
            SERIAL_RUNS.lock().unwrap().push(world.clone());
        }
        match behaviour(TAG, self.0) {
            FAIL => Err(Halt::fail("scripted serial failure")),
            PANIC => panic!("scripted serial panic"),
            SLOW => {
                // Long enough for the runner threads to park meanwhile.
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_micros(300) {
                    std::hint::spin_loop();
                }
                Ok(self.0)
            }
            _ => Ok(self.0),
        }
    }
    fn apply(&self, value: &u32, walker: &mut Walker) -> ActionResult {
        walker.serials.push(*value);
        Ok(())
    }
}

/// An entry of a shape, for the sequential interpreter.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Plain(usize),
    Serial(usize),
}
use Entry::{Plain as P, Serial as S};

/// `P0 | S4 P1 P2 | S5 P3`: a leading segment, then two serial levels.
fn leading() -> WalkOrder<Walker, impl Entries<Walker>> {
    WalkOrder::new()
        .then::<Work<0, 0, true, true>>()
        .serial::<SetWorld<4, 1>>()
        .then::<Work<1, 1, true, false>>()
        .then::<Work<2, 1, false, true>>()
        .serial::<SetWorld<5, 2>>()
        .then::<Work<3, 2, true, true>>()
}
const LEADING: &[Entry] = &[P(0), S(4), P(1), P(2), S(5), P(3)];

/// `S4 P0 P1 | S5 P2`: the walks start after the first serial action.
fn serial_first() -> WalkOrder<Walker, impl Entries<Walker>> {
    WalkOrder::new()
        .serial::<SetWorld<4, 1>>()
        .then::<Work<0, 1, true, false>>()
        .then::<Work<1, 1, false, true>>()
        .serial::<SetWorld<5, 2>>()
        .then::<Work<2, 2, true, true>>()
}
const SERIAL_FIRST: &[Entry] = &[S(4), P(0), P(1), S(5), P(2)];

/// `P0 P1 | S4 P2 | S5`: a trailing serial action (a segment of no plain
/// action).
fn trailing() -> WalkOrder<Walker, impl Entries<Walker>> {
    WalkOrder::new()
        .then::<Work<0, 0, true, false>>()
        .then::<Work<1, 0, false, true>>()
        .serial::<SetWorld<4, 1>>()
        .then::<Work<2, 1, true, true>>()
        .serial::<SetWorld<5, 2>>()
}
const TRAILING: &[Entry] = &[P(0), P(1), S(4), P(2), S(5)];

/// splitmix64: enough randomness for drawing cases, the same everywhere.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a sequential interpreter expects: counts (passed, failed,
/// cancelled), the branches whose serial action runs, and the serial
/// epochs in all.
struct Expected {
    counts: (u64, u64, u64),
    runs: BTreeSet<Vec<u32>>,
    serial_epochs: u64,
}

fn expect(shape: &[Entry], case: &[Vec<u8>]) -> Expected {
    let counts_of: Vec<u32> = shape
        .iter()
        .map(|e| match *e {
            P(tag) | S(tag) => case[tag].len() as u32,
        })
        .collect();
    let mut expected = Expected { counts: (0, 0, 0), runs: BTreeSet::new(), serial_epochs: 0 };
    let mut per_level = 1;
    for (entry, &n) in shape.iter().zip(&counts_of) {
        if matches!(entry, S(_)) {
            per_level *= u64::from(n);
            expected.serial_epochs += per_level;
        }
    }
    let mut options = vec![0u32; shape.len()];
    'walks: loop {
        let mut branch = Vec::new();
        let mut ended = None;
        for (entry, &option) in shape.iter().zip(&options) {
            match *entry {
                P(tag) => match case[tag][option as usize] {
                    CANCEL => ended = Some(2),
                    FAIL => ended = Some(1),
                    _ => {}
                },
                S(tag) => {
                    branch.push(option);
                    expected.runs.insert(branch.clone());
                    if matches!(case[tag][option as usize], FAIL | PANIC) {
                        ended = Some(1);
                    }
                }
            }
            if ended.is_some() {
                break;
            }
        }
        match ended {
            None => expected.counts.0 += 1,
            Some(1) => expected.counts.1 += 1,
            _ => expected.counts.2 += 1,
        }
        // The next tuple of options, odometer-wise.
        for i in (0..options.len()).rev() {
            options[i] += 1;
            if options[i] < counts_of[i] {
                continue 'walks;
            }
            options[i] = 0;
        }
        break;
    }
    expected
}

/// A random case: 1-3 options per plain entry, 1-4 per serial entry, each
/// option ok, cancelling or failing (plain), or ok, failing, panicking or
/// slow (serial).
fn draw_case(draw: &mut Draw) -> Vec<Vec<u8>> {
    (0..TAGS)
        .map(|tag| {
            let serial = tag >= 4;
            let n = 1 + draw.below(if serial { 4 } else { 3 });
            (0..n)
                .map(|_| {
                    let roll = draw.below(10);
                    match (serial, roll) {
                        (false, 0..=1) => CANCEL,
                        (false, 2) => FAIL,
                        (true, 0) => FAIL,
                        (true, 1) if draw.below(2) == 0 => PANIC,
                        (true, 2..=3) => SLOW,
                        _ => OK,
                    }
                })
                .collect()
        })
        .collect()
}

fn run_case<C: Entries<Walker>>(
    order: &WalkOrder<Walker, C>,
    shape: &[Entry],
    options: RunOptions<Walker>,
    label: &str,
) {
    let expected = expect(shape, &CASE.lock().unwrap());
    let report = run(order, options).unwrap();
    let violations = std::mem::take(&mut *VIOLATIONS.lock().unwrap());
    assert!(violations.is_empty(), "{label}: {violations:?}");
    assert!(report.is_consistent(), "{label}: {report:?}");
    let c = &report.counts;
    assert_eq!((c.passed, c.failed, c.cancelled), expected.counts, "{label}");
    let runs = std::mem::take(&mut *SERIAL_RUNS.lock().unwrap());
    // Exactly once per branch with a live walk, depth-first (lexicographic
    // order of the branches is the depth-first order).
    let want: Vec<Vec<u32>> = expected.runs.iter().cloned().collect();
    assert_eq!(runs, want, "{label}");
    assert_eq!(report.serial_actions, want.len() as u64, "{label}");
    assert_eq!(report.serial_actions + report.serial_skipped, expected.serial_epochs, "{label}");
}

#[test]
fn serial_barrier_invariants_hold_over_random_cases() {
    let cases: u64 = std::env::var("BARRIER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let seed: u64 = std::env::var("BARRIER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut draw = Draw(seed);
    for case in 0..cases {
        *CASE.lock().unwrap() = draw_case(&mut draw);
        WORLD.lock().unwrap().clear();
        let threads = 1 + draw.below(4) as usize;
        let mut options = RunOptions::new(Walker::default()).threads(threads);
        let batch = [0, 1, 2, 7][draw.below(4) as usize];
        if batch > 0 {
            options = options.max_batch(batch);
        }
        let label = format!(
            "seed {seed} case {case}: {threads} threads, batch {batch}, {:?}",
            CASE.lock().unwrap()
        );
        match draw.below(3) {
            0 => run_case(&leading(), LEADING, options, &format!("leading, {label}")),
            1 => {
                run_case(&serial_first(), SERIAL_FIRST, options, &format!("serial first, {label}"))
            }
            _ => run_case(&trailing(), TRAILING, options, &format!("trailing, {label}")),
        }
    }
}
