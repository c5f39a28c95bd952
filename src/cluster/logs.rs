//! Log lines of a node, kept for its coordinators: a `tracing` layer that
//! `serve` installs appends each event (at the level the latest run asked
//! for) to a bounded buffer, and every heartbeat reply drains it. A node
//! that logs faster than it is pinged drops lines and says how many.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept between two pings.
const CAPACITY: usize = 10_000;

/// Forward events up to this level: 0 error, 1 warn, 2 info, 3 debug,
/// 4 trace.
static LEVEL: AtomicU8 = AtomicU8::new(1);

static BUFFER: Mutex<Buffer> = Mutex::new(Buffer { lines: VecDeque::new(), dropped: 0 });

struct Buffer {
    lines: VecDeque<(u8, String)>,
    dropped: u64,
}

/// Sets the level forwarded from now on.
pub(crate) fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
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

/// Most bytes of log lines in one heartbeat reply; the rest waits for the
/// next.
const MAX_DRAIN: usize = 1 << 20;

/// Takes buffered lines (up to `MAX_DRAIN` bytes) and the count of dropped
/// ones.
pub(crate) fn drain() -> (Vec<(u8, String)>, u64) {
    let mut buffer = BUFFER.lock().unwrap_or_else(|p| p.into_inner());
    let dropped = std::mem::take(&mut buffer.dropped);
    let mut bytes = 0;
    let mut lines = Vec::new();
    while let Some((_, line)) = buffer.lines.front() {
        if bytes + line.len() > MAX_DRAIN && !lines.is_empty() {
            break;
        }
        bytes += line.len();
        lines.extend(buffer.lines.pop_front());
    }
    (lines, dropped)
}

/// The layer `serve` installs.
pub(crate) struct ForwardLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ForwardLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let level = level_number(event.metadata().level());
        if level > LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let line = format!("{}: {}", event.metadata().target(), text.0.trim_start());
        let mut buffer = BUFFER.lock().unwrap_or_else(|p| p.into_inner());
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
