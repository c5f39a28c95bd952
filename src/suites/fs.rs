//! `fs`: the real filesystem, in a fresh temp dir, checked against an
//! in-memory model of every file's bytes.
//!
//! Each walk creates its own file, writes at varied offsets and sizes,
//! truncates, renames and syncs it, and after every action reads the whole
//! file back and compares it with the model. The serial action checkpoints
//! the directory (fsync) and switches the write chunk size for every walk
//! of its branch, so each write is issued as one large call or as many small
//! ones. The last action verifies once more through a fresh handle and
//! removes the file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::action::{Action, ActionResult, Halt, SerialAction};
use crate::order::{Entries, WalkOrder};
use crate::suites::{Fixture, Suite};
use serde::{Deserialize, Serialize};

/// The directory of the run in progress, for the serial checkpoint (serial
/// actions see no walk state).
static RUN_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Unique file names across walks.
static NEXT_FILE: AtomicU64 = AtomicU64::new(0);

/// One walk's file and the bytes it must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsState {
    /// The run's temp dir.
    pub dir: PathBuf,
    /// The walk's file, once opened.
    pub path: Option<PathBuf>,
    /// What the file must contain.
    pub model: Vec<u8>,
    /// Bytes per write call, from the checkpoint serial action (0: whole
    /// write in one call).
    pub chunk: usize,
}

impl FsState {
    fn path(&self) -> Result<&PathBuf, Halt> {
        self.path.as_ref().ok_or_else(|| Halt::fail("no file: Open did not run"))
    }

    /// Reads the file back and compares it with the model.
    fn verify(&self, after: &str) -> ActionResult {
        let mut actual = Vec::new();
        File::open(self.path()?)?.read_to_end(&mut actual)?;
        if actual.len() != self.model.len() {
            return Err(Halt::fail(format!(
                "after {after}: file has {} bytes, model has {}",
                actual.len(),
                self.model.len()
            )));
        }
        if let Some(at) = actual.iter().zip(&self.model).position(|(a, m)| a != m) {
            return Err(Halt::fail(format!(
                "after {after}: byte {at} is {:#04x}, model says {:#04x}",
                actual[at], self.model[at]
            )));
        }
        Ok(())
    }

    /// Writes `len` pattern bytes at `offset`, `chunk` bytes per call, and
    /// applies the same write to the model.
    fn write(&mut self, offset: usize, len: usize, seed: u8) -> ActionResult {
        let data: Vec<u8> = (0..len).map(|i| pattern(offset + i, seed)).collect();
        let file = OpenOptions::new().write(true).open(self.path()?)?;
        let chunk = if self.chunk == 0 { len.max(1) } else { self.chunk };
        for (i, piece) in data.chunks(chunk).enumerate() {
            file.write_all_at(piece, (offset + i * chunk) as u64)?;
        }
        if len > 0 {
            if self.model.len() < offset + len {
                self.model.resize(offset + len, 0);
            }
            self.model[offset..offset + len].copy_from_slice(&data);
        }
        Ok(())
    }
}

fn pattern(at: usize, seed: u8) -> u8 {
    (at.wrapping_mul(31) % 251) as u8 ^ seed
}

/// Create the walk's file, empty or with 100 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Open {
    /// An empty new file.
    Empty,
    /// A new file holding 100 pattern bytes.
    Prefilled,
}

impl Action<FsState> for Open {
    fn options() -> Vec<Self> {
        vec![Open::Empty, Open::Prefilled]
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
        let path = state.dir.join(format!("walk-{n}"));
        OpenOptions::new().write(true).create_new(true).open(&path)?;
        state.path = Some(path);
        state.model.clear();
        if *self == Open::Prefilled {
            state.write(0, 100, 0x5a)?;
        }
        state.verify("Open")
    }
}

/// Write `len` bytes at `offset` (extending the file with zeros if the
/// offset is past its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// Where to write.
    pub offset: usize,
    /// How much.
    pub len: usize,
}

impl Action<FsState> for Write {
    fn options() -> Vec<Self> {
        let mut options = Vec::new();
        for offset in [0, 50, 4095] {
            for len in [0, 1, 5000] {
                options.push(Write { offset, len });
            }
        }
        options
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        state.write(self.offset, self.len, 0x11)?;
        state.verify("Write")
    }
}

/// Checkpoint the directory (fsync) and switch the write chunk size, for
/// every walk of the branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Checkpoint {
    /// Writes go out in 512-byte calls.
    SmallWrites,
    /// Each write goes out in one call.
    WholeWrites,
}

impl SerialAction<FsState> for Checkpoint {
    type Value = usize;
    fn options() -> Vec<Self> {
        vec![Checkpoint::SmallWrites, Checkpoint::WholeWrites]
    }
    fn run(&self) -> Result<usize, Halt> {
        let dir = RUN_DIR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let dir = dir.ok_or_else(|| Halt::fail("no run directory is set"))?;
        File::open(&dir)?.sync_all()?;
        Ok(match self {
            Checkpoint::SmallWrites => 512,
            Checkpoint::WholeWrites => 0,
        })
    }
    fn apply(&self, chunk: &usize, state: &mut FsState) -> ActionResult {
        state.chunk = *chunk;
        Ok(())
    }
}

/// Overwrite a range after the checkpoint, in the branch's chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overwrite {
    /// Where to write.
    pub offset: usize,
    /// How much.
    pub len: usize,
}

impl Action<FsState> for Overwrite {
    fn options() -> Vec<Self> {
        let mut options = Vec::new();
        for offset in [0, 4097] {
            for len in [3, 9000] {
                options.push(Overwrite { offset, len });
            }
        }
        options
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        state.write(self.offset, self.len, 0x77)?;
        state.verify("Overwrite")
    }
}

/// Set the file's length (shrinking it, or growing it with zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncate(pub usize);

impl Action<FsState> for Truncate {
    fn options() -> Vec<Self> {
        vec![Truncate(0), Truncate(100), Truncate(12_000)]
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        OpenOptions::new().write(true).open(state.path()?)?.set_len(self.0 as u64)?;
        state.model.resize(self.0, 0);
        state.verify("Truncate")
    }
}

/// Keep the file's name or rename it within the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rename {
    /// Leave it.
    Keep,
    /// Move it to a new name; the old name must be gone.
    Move,
}

impl Action<FsState> for Rename {
    fn options() -> Vec<Self> {
        vec![Rename::Keep, Rename::Move]
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        if *self == Rename::Move {
            let old = state.path()?.clone();
            let new = old.with_extension("moved");
            std::fs::rename(&old, &new)?;
            if old.exists() {
                return Err(Halt::fail(format!("{} still exists after rename", old.display())));
            }
            state.path = Some(new);
        }
        state.verify("Rename")
    }
}

/// Make the file durable, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sync {
    /// No sync.
    Skip,
    /// fdatasync.
    Data,
    /// fsync.
    All,
}

impl Action<FsState> for Sync {
    fn options() -> Vec<Self> {
        vec![Sync::Skip, Sync::Data, Sync::All]
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        let file = OpenOptions::new().write(true).open(state.path()?)?;
        match self {
            Sync::Skip => {}
            Sync::Data => file.sync_data()?,
            Sync::All => file.sync_all()?,
        }
        state.verify("Sync")
    }
}

/// Verify through a fresh handle and remove the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Close;

impl Action<FsState> for Close {
    fn options() -> Vec<Self> {
        vec![Close]
    }
    fn run(&self, state: &mut FsState) -> ActionResult {
        state.verify("Close")?;
        let path = state.path()?.clone();
        std::fs::remove_file(&path)?;
        if path.exists() {
            return Err(Halt::fail(format!("{} still exists after remove", path.display())));
        }
        Ok(())
    }
}

/// The filesystem walk order:
/// `Open, Write, *Checkpoint, Overwrite, Truncate, Rename, Sync, Close`.
pub fn order() -> WalkOrder<FsState, impl Entries<FsState>> {
    WalkOrder::new()
        .then::<Open>()
        .then::<Write>()
        .serial::<Checkpoint>()
        .then::<Overwrite>()
        .then::<Truncate>()
        .then::<Rename>()
        .then::<Sync>()
        .then::<Close>()
}

/// Creates the run's temp dir; it is removed when the run ends.
pub fn setup() -> Result<Fixture<FsState>, String> {
    let dir = tempfile::Builder::new()
        .prefix("combtest-fs-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    *RUN_DIR.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.path().to_path_buf());
    let initial = FsState { dir: dir.path().to_path_buf(), ..FsState::default() };
    Ok(Fixture::new(initial).with(dir))
}

/// The `fs` suite.
pub fn suite() -> Box<dyn Suite> {
    crate::suites::suite(
        "fs",
        "real files in a temp dir: write/overwrite/truncate/rename/sync checked against a model",
        order(),
        setup,
    )
}
