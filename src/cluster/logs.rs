//! Log lines of a node, kept for the coordinators of its runs: a `tracing`
//! layer ([`ForwardLayer`]) that `serve` installs appends each event emitted
//! while serving a run (on the run's runner threads, or while the run is
//! opened: a [`Scope`] marks the thread) to that run's buffer, at the level
//! the run's `Hello` asked for; each heartbeat drains it.
//!
//! Bounded on every side: nothing from `ractor` or `ractor_cluster`, and
//! nothing outside a run, is kept (so forwarding never logs about itself
//! into what it forwards, and a run never gets another run's or an old
//! connection's lines); a run keeps at most [`CAPACITY`] lines, and a
//! heartbeat carries at most [`MAX_LINES`] of them or [`MAX_BYTES`], with
//! the count of lines dropped.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::cluster::wire::{RunKey, RunLogs};

/// Lines a run keeps between two heartbeats; older ones are dropped.
pub(crate) const CAPACITY: usize = 5_000;
/// Lines one heartbeat carries per run.
pub(crate) const MAX_LINES: usize = 1_000;
/// Bytes one heartbeat carries per run.
pub(crate) const MAX_BYTES: usize = 256 << 10;

struct Buffer {
    level: u8,
    lines: VecDeque<(u8, String)>,
    dropped: u64,
}

fn buffers() -> std::sync::MutexGuard<'static, HashMap<RunKey, Buffer>> {
    static BUFFERS: std::sync::OnceLock<Mutex<HashMap<RunKey, Buffer>>> =
        std::sync::OnceLock::new();
    BUFFERS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

thread_local! {
    /// The run this thread serves now.
    static CURRENT: Cell<Option<RunKey>> = const { Cell::new(None) };
}

/// A run starts keeping lines up to `level` (0 error … 4 trace).
pub(crate) fn open(run: RunKey, level: u8) {
    buffers().insert(run, Buffer { level, lines: VecDeque::new(), dropped: 0 });
}

/// A run keeps nothing more.
pub(crate) fn close(run: RunKey) {
    buffers().remove(&run);
}

/// Marks the current thread as serving `run` until dropped.
pub(crate) struct Scope(Option<RunKey>);

impl Scope {
    pub(crate) fn enter(run: RunKey) -> Self {
        Scope(CURRENT.with(|current| current.replace(Some(run))))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// A heartbeat's share of `run`'s lines.
pub(crate) fn drain(run: RunKey) -> Option<RunLogs> {
    let mut buffers = buffers();
    let buffer = buffers.get_mut(&run)?;
    let dropped = std::mem::take(&mut buffer.dropped);
    let mut bytes = 0;
    let mut lines = Vec::new();
    while let Some((_, line)) = buffer.lines.front() {
        if lines.len() >= MAX_LINES || (bytes + line.len() > MAX_BYTES && !lines.is_empty()) {
            break;
        }
        bytes += line.len();
        lines.extend(buffer.lines.pop_front());
    }
    (!lines.is_empty() || dropped > 0).then_some(RunLogs { run, lines, dropped })
}

/// The level number of a `tracing` level.
pub(crate) fn level_number(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 0,
        tracing::Level::WARN => 1,
        tracing::Level::INFO => 2,
        tracing::Level::DEBUG => 3,
        tracing::Level::TRACE => 4,
    }
}

/// The level this process logs at (what a coordinator asks its nodes to
/// forward).
pub(crate) fn current_level() -> u8 {
    match tracing::level_filters::LevelFilter::current().into_level() {
        Some(level) => level_number(&level),
        None => 0,
    }
}

/// The layer `serve` installs.
pub(crate) struct ForwardLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ForwardLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let Some(run) = CURRENT.with(Cell::get) else { return };
        let target = event.metadata().target();
        if target.starts_with("ractor") {
            return;
        }
        let level = level_number(event.metadata().level());
        let mut buffers = buffers();
        let Some(buffer) = buffers.get_mut(&run) else { return };
        if level > buffer.level {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let line = format!("{target}: {}", text.0.trim_start());
        if buffer.lines.len() >= CAPACITY {
            buffer.lines.pop_front();
            buffer.dropped += 1;
        }
        buffer.lines.push_back((level, line));
    }
}

/// An event's message and fields as one line.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn lines_belong_to_their_run_and_are_capped_per_heartbeat() {
        let subscriber = tracing_subscriber::registry().with(ForwardLayer);
        tracing::subscriber::with_default(subscriber, || {
            let (a, b) = (0xa, 0xb);
            open(a, 2);
            open(b, 1);
            tracing::warn!("outside any run");
            {
                let _scope = Scope::enter(a);
                tracing::info!("for a");
                tracing::debug!("above a's level");
                tracing::warn!(target: "ractor_cluster::node", "never forwarded");
                for i in 0..(CAPACITY + 10) {
                    tracing::warn!(i, "flood");
                }
            }
            {
                let _scope = Scope::enter(b);
                tracing::warn!("for b");
            }
            let first = drain(a).unwrap();
            assert_eq!(first.lines.len(), MAX_LINES);
            assert_eq!(first.dropped, 11, "the oldest lines went when the buffer was full");
            assert!(
                first.lines.iter().all(|(_, l)| !l.contains("outside") && !l.contains("never"))
            );
            let second = drain(a).unwrap();
            assert_eq!((second.lines.len(), second.dropped), (MAX_LINES, 0));
            let b_lines = drain(b).unwrap();
            assert_eq!(b_lines.lines.len(), 1);
            assert!(b_lines.lines[0].1.ends_with("for b"), "{:?}", b_lines.lines);
            close(a);
            close(b);
            assert!(drain(a).is_none());
        });
    }
}
