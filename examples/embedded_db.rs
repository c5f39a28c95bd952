//! Testing a real embedded database (redb) with combtest: a node binary
//! with one suite, `kv`.
//!
//! ```sh
//! cargo run --example embedded_db -- run --suite kv                  # in-process
//! cargo run --example embedded_db -- run --suite kv --local-nodes 2  # on 2 nodes
//! KV_BUG=1 cargo run --example embedded_db -- run --suite kv         # a planted bug
//! ```
//!
//! - **Fixtures**, once per run on each process (coordinator and nodes):
//!   the temp dir where each walk's database file lives, and the node's
//!   checkpoint policy, which the serial action sets on every node.
//! - **Starting states from a factory**: every walk opens a fresh database
//!   file of its own, `walk-<id>.redb`, and keeps a model (a `BTreeMap`) of
//!   what it must hold. The state holds a `redb::Database`: neither serde
//!   nor `Clone`, so the suite is an `opaque_suite`.
//! - **Actions** write and delete through real transactions and check every
//!   key against the model; `Reopen` closes the file and opens it again
//!   (durability of committed writes). `Write` stands at two positions.
//! - **A serial action**, `Checkpoint(on/off)`: `run_in` decides the policy
//!   once, on the coordinator; `apply_on_node` sets it in each node's
//!   fixture before that node's walks go on; `apply` compacts the walk's
//!   database when it is on.
//!
//! With `KV_BUG=1`, `Delete` of key 2 forgets to commit: the walks that
//! read key 2 back after it fail, and the failure group names the entries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use combtest::suites::{Fixture, builtin, opaque_suite};
use combtest::{
    Action, ActionResult, Fixtures, Halt, SerialAction, SerialContext, WalkContext, WalkId,
    WalkOrder,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

const TABLE: TableDefinition<u8, u32> = TableDefinition::new("kv");

/// Where the run's database files live (a fixture).
struct Root(tempfile::TempDir);

/// Whether walks compact their database at a checkpoint (a fixture, set on
/// each node by `Checkpoint::apply_on_node`).
#[derive(Default)]
struct Policy {
    compact: AtomicBool,
}

/// A walk's state: its own database and what it must hold.
struct Store {
    path: PathBuf,
    db: Option<Database>,
    model: BTreeMap<u8, u32>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("model", &self.model).finish()
    }
}

impl Store {
    fn db(&self) -> Result<&Database, Halt> {
        self.db.as_ref().ok_or_else(|| Halt::fail("the database is closed"))
    }

    /// Every key the model knows, and one it does not, read back.
    fn check(&self) -> ActionResult {
        let read = self.db()?.begin_read().map_err(db_error)?;
        let table = match read.open_table(TABLE) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(db_error(error)),
        };
        for key in 0..4u8 {
            let stored = match &table {
                Some(table) => table.get(key).map_err(db_error)?.map(|v| v.value()),
                None => None,
            };
            let expected = self.model.get(&key).copied();
            if stored != expected {
                return Err(Halt::fail(format!(
                    "key {key}: the database holds {stored:?}, the model {expected:?}"
                )));
            }
        }
        Ok(())
    }
}

fn db_error(error: impl std::fmt::Display) -> Halt {
    Halt::fail(format!("redb: {error}"))
}

/// The factory: a fresh database file for walk `id`.
fn open_store(fixtures: &Fixtures, walk: WalkId) -> Result<Store, Halt> {
    let root = fixtures.require::<Root>()?;
    let path = root.0.path().join(format!("walk-{walk}.redb"));
    let db = Database::create(&path).map_err(db_error)?;
    Ok(Store { path, db: Some(db), model: BTreeMap::new() })
}

/// Writes `value` at `key` in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Write {
    key: u8,
    value: u32,
}

impl Action<Store> for Write {
    fn options() -> Vec<Self> {
        (0..4u8).map(|key| Write { key, value: 1 }).collect()
    }
    fn run_in(&self, store: &mut Store, cx: &WalkContext<'_>) -> ActionResult {
        // Values differ by position, so the two writes are told apart.
        let value = self.value * 10 + cx.position() as u32;
        let write = store.db()?.begin_write().map_err(db_error)?;
        {
            let mut table = write.open_table(TABLE).map_err(db_error)?;
            table.insert(self.key, value).map_err(db_error)?;
        }
        write.commit().map_err(db_error)?;
        store.model.insert(self.key, value);
        store.check()
    }
}

/// Deletes a key in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delete(u8);

impl Action<Store> for Delete {
    fn options() -> Vec<Self> {
        (0..4u8).map(Delete).collect()
    }
    fn run(&self, store: &mut Store) -> ActionResult {
        let write = store.db()?.begin_write().map_err(db_error)?;
        {
            let mut table = write.open_table(TABLE).map_err(db_error)?;
            table.remove(self.0).map_err(db_error)?;
        }
        let bug = self.0 == 2 && std::env::var("KV_BUG").is_ok_and(|v| v == "1");
        match bug {
            true => write.abort().map_err(db_error)?,
            false => write.commit().map_err(db_error)?,
        }
        store.model.remove(&self.0);
        Ok(())
    }
}

/// Closes the database file and opens it again (or not).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Reopen {
    Keep,
    Reopen,
}

impl Action<Store> for Reopen {
    fn options() -> Vec<Self> {
        vec![Reopen::Keep, Reopen::Reopen]
    }
    fn run(&self, store: &mut Store) -> ActionResult {
        if let Reopen::Reopen = self {
            drop(store.db.take());
            store.db = Some(Database::open(&store.path).map_err(db_error)?);
        }
        store.check()
    }
}

/// A checkpoint policy for the whole run: compact every walk's database
/// (on) or not (off).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Checkpoint {
    Off,
    Compact,
}

impl SerialAction<Store> for Checkpoint {
    type Value = bool;
    fn options() -> Vec<Self> {
        vec![Checkpoint::Off, Checkpoint::Compact]
    }
    /// Once per epoch, on the coordinator: the policy.
    fn run_in(&self, _: &SerialContext<'_>) -> Result<bool, Halt> {
        Ok(matches!(self, Checkpoint::Compact))
    }
    /// Once on each node holding walks of the branch: set its policy.
    fn apply_on_node(&self, compact: &bool, cx: &SerialContext<'_>) -> ActionResult {
        cx.fixture::<Policy>()?.compact.store(*compact, Ordering::SeqCst);
        Ok(())
    }
    /// On each walk: compact its database when the node's policy says so.
    fn apply_in(&self, compact: &bool, store: &mut Store, cx: &WalkContext<'_>) -> ActionResult {
        let policy = cx.fixture::<Policy>()?.compact.load(Ordering::SeqCst);
        if policy != *compact {
            return Err(Halt::fail("the node's policy is not this branch's"));
        }
        if policy {
            let db = store.db.as_mut().ok_or_else(|| Halt::fail("the database is closed"))?;
            db.compact().map_err(db_error)?;
        }
        store.check()
    }
}

/// `Write x Delete x Reopen x *Checkpoint x Write x Reopen`: 4 x 4 x 2 x 2
/// x 4 x 2 = 512 walks, each with its own database file.
fn order() -> WalkOrder<Store, impl combtest::Entries<Store>> {
    WalkOrder::new()
        .then::<Write>()
        .then::<Delete>()
        .then::<Reopen>()
        .serial::<Checkpoint>()
        .then::<Write>()
        .then::<Reopen>()
}

fn main() -> std::process::ExitCode {
    let mut suites = builtin();
    suites.push(opaque_suite(
        "kv",
        "512 walks on redb databases of their own, around a checkpoint policy",
        order(),
        || {
            let root = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
            Ok(Fixture::factory(open_store).with(Root(root)).with(Policy::default()))
        },
    ));
    combtest::cli::main(suites)
}
