//! The bug-finding benchmark's system under test, written once and shared
//! by `benches/bugfind.rs` (combtest against proptest-state-machine) and
//! `tests/bugfind_model.rs` (the bugs are real and the clean store passes):
//! a tiny LSM-style key-value store (`Store`: memtable, write-ahead log,
//! flushed segments, compaction, an optional read cache, crash recovery),
//! its reference model (`Model`: a `BTreeMap`), the one operation alphabet
//! both tools draw from (`Op::options()`, `Mode::options()`), and five
//! planted bugs (`Bug`), each switched on alone.
//!
//! The bugs, and why each is plausible, are in BENCHMARKS.md ("Bug finding
//! against random stateful testing"); `Bug`'s variants repeat them briefly.

// Each including target uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use combtest::{Action, ActionResult, Entries, Halt, SerialAction, WalkOrder, fail};
use serde::{Deserialize, Serialize};

/// The keys and values operations use. Value 0 stands for the empty value.
pub const KEYS: u8 = 3;
/// Values are `0..VALUES`; 0 is the empty value (`b""`).
pub const VALUES: u8 = 3;
/// The longest operation sequence either tool tries (combtest's walk order
/// has exactly this many operations after its serial `Mode`).
pub const MAX_OPS: usize = 4;

/// A planted bug. At most one is switched on in a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bug {
    /// B1 (4 ops): a flush leaves tombstones out of the segment it writes,
    /// so an older value of the key, in an earlier segment, comes back.
    Zombie,
    /// B2 (3 ops, cache on): a delete does not invalidate the read cache.
    StaleCache,
    /// B3 (4 ops): compaction merges segments in the wrong order, so the
    /// oldest value of a key wins.
    MergeOrder,
    /// B4 (2 ops): recovery takes a record with an empty value for the end
    /// of the log, and drops it and everything after it.
    EmptyValueEndsLog,
    /// B5 (3 ops): a write to a key whose memtable slot holds a tombstone
    /// leaves the tombstone there.
    UpsertTombstone,
}

impl Bug {
    /// Every planted bug, in table order.
    pub const ALL: [Bug; 5] = [
        Bug::Zombie,
        Bug::StaleCache,
        Bug::MergeOrder,
        Bug::EmptyValueEndsLog,
        Bug::UpsertTombstone,
    ];

    /// The table's short name (B1..B5).
    pub fn label(self) -> &'static str {
        match self {
            Bug::Zombie => "B1 zombie",
            Bug::StaleCache => "B2 stale-cache",
            Bug::MergeOrder => "B3 merge-order",
            Bug::EmptyValueEndsLog => "B4 empty-value-log",
            Bug::UpsertTombstone => "B5 upsert-tombstone",
        }
    }

    /// How many operations its shortest trigger has.
    pub fn min_ops(self) -> usize {
        match self {
            Bug::Zombie | Bug::MergeOrder => 4,
            Bug::StaleCache | Bug::UpsertTombstone => 3,
            Bug::EmptyValueEndsLog => 2,
        }
    }
}

/// One operation on the store: the whole alphabet is `Op::options()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write `value` (0: the empty value) under `key`.
    Put { key: u8, value: u8 },
    /// Delete `key`.
    Delete(u8),
    /// Read `key`; the answer is compared with the model's.
    Get(u8),
    /// Write the memtable out as a new segment and truncate the log.
    Flush,
    /// Flush, then merge every segment into one, dropping tombstones.
    Compact,
    /// Crash and recover: the cache and memtable are lost, the log replayed.
    Reopen,
}

/// The cache setting, chosen once per run: combtest's serial action,
/// proptest's initial state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// No read cache.
    NoCache,
    /// A read-through and write-through cache of live values.
    Cache,
}

/// A write-ahead log record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Put(u8, u8),
    Delete(u8),
}

/// The store under test. `None` in a memtable or segment is a tombstone.
#[derive(Debug, Clone, Default)]
pub struct Store {
    bug: Option<Bug>,
    cache_on: bool,
    memtable: BTreeMap<u8, Option<u8>>,
    /// Flushed segments, oldest first.
    segments: Vec<BTreeMap<u8, Option<u8>>>,
    /// Records since the last flush.
    wal: Vec<Record>,
    cache: BTreeMap<u8, u8>,
}

impl Store {
    /// An empty store with `bug` planted (or none), in `mode`.
    pub fn new(bug: Option<Bug>, mode: Mode) -> Self {
        Store { bug, cache_on: mode == Mode::Cache, ..Store::default() }
    }

    fn has(&self, bug: Bug) -> bool {
        self.bug == Some(bug)
    }

    /// Performs `op`; `Some(answer)` for a `Get`.
    pub fn apply(&mut self, op: Op) -> Option<Option<u8>> {
        match op {
            Op::Put { key, value } => {
                self.wal.push(Record::Put(key, value));
                self.memtable_put(key, value);
                if self.cache_on {
                    self.cache.insert(key, value);
                }
            }
            Op::Delete(key) => {
                // Deleting an absent key writes nothing.
                if self.lookup(key).is_some() {
                    self.wal.push(Record::Delete(key));
                    self.memtable.insert(key, None);
                    if !self.has(Bug::StaleCache) {
                        self.cache.remove(&key);
                    }
                }
            }
            Op::Get(key) => return Some(self.get(key)),
            Op::Flush => self.flush(),
            Op::Compact => self.compact(),
            Op::Reopen => self.reopen(),
        }
        None
    }

    fn memtable_put(&mut self, key: u8, value: u8) {
        if !self.has(Bug::UpsertTombstone) {
            self.memtable.insert(key, Some(value));
            return;
        }
        // B5: "update the slot if the key has one, else insert" updates
        // only a live value: a tombstone's slot stays dead.
        match self.memtable.get_mut(&key) {
            Some(slot) => {
                if let Some(live) = slot {
                    *live = value;
                }
            }
            None => {
                self.memtable.insert(key, Some(value));
            }
        }
    }

    fn get(&mut self, key: u8) -> Option<u8> {
        if self.cache_on
            && let Some(&value) = self.cache.get(&key)
        {
            return Some(value);
        }
        let found = self.lookup(key);
        if self.cache_on
            && let Some(value) = found
        {
            self.cache.insert(key, value);
        }
        found
    }

    /// The live value of `key`: memtable, then segments newest first.
    fn lookup(&self, key: u8) -> Option<u8> {
        std::iter::once(&self.memtable)
            .chain(self.segments.iter().rev())
            .find_map(|table| table.get(&key).copied())
            .flatten()
    }

    fn flush(&mut self) {
        let mut segment = std::mem::take(&mut self.memtable);
        if self.has(Bug::Zombie) {
            // B1: "nothing to store for a deleted key".
            segment.retain(|_, value| value.is_some());
        }
        if !segment.is_empty() {
            self.segments.push(segment);
        }
        self.wal.clear();
    }

    fn compact(&mut self) {
        self.flush();
        let mut merged = BTreeMap::new();
        let oldest_wins = self.has(Bug::MergeOrder);
        let segments = std::mem::take(&mut self.segments);
        // Later inserts win: oldest first is right; B3 goes newest first.
        let ordered: Box<dyn Iterator<Item = _>> = if oldest_wins {
            Box::new(segments.into_iter().rev())
        } else {
            Box::new(segments.into_iter())
        };
        for segment in ordered {
            merged.extend(segment);
        }
        // Every level is merged: tombstones have nothing left to hide.
        merged.retain(|_, value| value.is_some());
        if !merged.is_empty() {
            self.segments.push(merged);
        }
    }

    fn reopen(&mut self) {
        self.cache.clear();
        self.memtable.clear();
        let wal = std::mem::take(&mut self.wal);
        for record in wal {
            // B4: a zero-length value reads as the zero padding at the end
            // of a preallocated log file.
            if self.has(Bug::EmptyValueEndsLog) && matches!(record, Record::Put(_, 0)) {
                break;
            }
            self.wal.push(record);
            match record {
                Record::Put(key, value) => self.memtable_put(key, value),
                Record::Delete(key) => {
                    self.memtable.insert(key, None);
                }
            }
        }
    }

    /// Every live key and value, by the read path of a full scan (which
    /// merges newest over oldest, and does not use the cache).
    pub fn scan(&self) -> BTreeMap<u8, u8> {
        let mut all = BTreeMap::new();
        for table in self.segments.iter().chain(std::iter::once(&self.memtable)) {
            all.extend(table.iter().map(|(&k, &v)| (k, v)));
        }
        all.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
    }
}

/// The reference model: what the store should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The run's cache setting.
    pub mode: Mode,
    /// The live keys and values.
    pub map: BTreeMap<u8, u8>,
}

impl Model {
    /// An empty model in `mode`.
    pub fn new(mode: Mode) -> Self {
        Model { mode, map: BTreeMap::new() }
    }

    /// Performs `op` on the model.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Put { key, value } => {
                self.map.insert(key, value);
            }
            Op::Delete(key) => {
                self.map.remove(&key);
            }
            Op::Get(_) | Op::Flush | Op::Compact | Op::Reopen => {}
        }
    }
}

/// Performs `op` on the store and checks it against the model, which has
/// already performed it: a `Get`'s answer, then the whole contents.
pub fn check(store: &mut Store, model: &Model, op: Op) -> Result<(), String> {
    if let Some(answer) = store.apply(op) {
        let expected = model.map.get(&op_key(op)).copied();
        if answer != expected {
            return Err(format!("{op:?} returned {answer:?}, expected {expected:?}"));
        }
    }
    let contents = store.scan();
    if contents != model.map {
        return Err(format!("after {op:?}: store holds {contents:?}, model {:?}", model.map));
    }
    Ok(())
}

fn op_key(op: Op) -> u8 {
    match op {
        Op::Put { key, .. } | Op::Delete(key) | Op::Get(key) => key,
        Op::Flush | Op::Compact | Op::Reopen => 0,
    }
}

/// A combtest walk's state: the store and the model side by side.
#[derive(Debug, Clone)]
pub struct World {
    /// The system under test.
    pub store: Store,
    /// The reference.
    pub model: Model,
}

impl World {
    /// A fresh world with `bug` planted; the serial `Mode` sets its cache.
    pub fn new(bug: Option<Bug>) -> Self {
        World { store: Store::new(bug, Mode::NoCache), model: Model::new(Mode::NoCache) }
    }
}

impl Action<World> for Op {
    fn options() -> Vec<Self> {
        let mut ops = Vec::new();
        for key in 0..KEYS {
            ops.extend((0..VALUES).map(|value| Op::Put { key, value }));
        }
        ops.extend((0..KEYS).map(Op::Delete));
        ops.extend((0..KEYS).map(Op::Get));
        ops.extend([Op::Flush, Op::Compact, Op::Reopen]);
        ops
    }

    fn run(&self, world: &mut World) -> ActionResult {
        world.model.apply(*self);
        check(&mut world.store, &world.model, *self).or_else(fail)
    }
}

impl SerialAction<World> for Mode {
    type Value = Mode;

    fn options() -> Vec<Self> {
        vec![Mode::NoCache, Mode::Cache]
    }

    fn run(&self) -> Result<Mode, Halt> {
        Ok(*self)
    }

    fn apply(&self, mode: &Mode, world: &mut World) -> ActionResult {
        world.store.cache_on = *mode == Mode::Cache;
        world.model.mode = *mode;
        Ok(())
    }
}

/// combtest's walk order: the cache setting, then `MAX_OPS` operations,
/// each any option of the alphabet.
pub fn order() -> WalkOrder<World, impl Entries<World>> {
    WalkOrder::new().serial::<Mode>().then::<Op>().then::<Op>().then::<Op>().then::<Op>()
}
