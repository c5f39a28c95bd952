//! The byte streams under ractor_cluster's sessions, on both sides.
//!
//! - [`Watched`]: a TCP stream handed to a `NodeServer` as an external
//!   connection (`ConnectionOpenedExternal`), which counts the frames each
//!   way (ractor_cluster frames are a u64 big-endian length and a payload)
//!   and can be closed from outside (its reads then fail, so the session
//!   ends even while it waits for a silent peer). What a close before
//!   authentication means is read from those counts ([`PreAuthClose`]),
//!   never guessed.
//! - [`Gate`]: a node's accept loop. It accepts on `--listen` itself, closes
//!   a connection at once when `max_pending` connections are already
//!   unauthenticated, and gives each the authentication deadline; `accept`
//!   errors (no file descriptors left) back off instead of spinning.
//! - [`connect_tcp`]: a coordinator's TCP connection to a node; [`Tcp`]
//!   hands it over as it is, [`TlsTransport`] after a TLS handshake.
//!
//! With TLS, `Watched` wraps the TLS stream: it counts the decrypted bytes,
//! that is ractor_cluster's frames, exactly as over plain TCP.
//!
//! ractor_cluster's `NodeServer` always binds a listener of its own; both
//! sides bind it to 127.0.0.1 on a port nobody is told, and kill any session
//! that arrives through it ([`kill_tree`]): every legitimate connection comes
//! through a `Watched` stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorRef};
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::cluster::tls::Tls;
use crate::model::membership::ConnectFailure;

/// The first byte of a TLS handshake record (a ClientHello); a
/// ractor_cluster frame starts with its length's high byte, 0.
const TLS_HANDSHAKE: u8 = 0x16;

/// Counts complete frames in a byte stream (u64 big-endian length, then
/// the payload).
#[derive(Debug, Default)]
struct FrameCounter {
    length: [u8; 8],
    have: usize,
    remaining: u64,
}

impl FrameCounter {
    /// Feeds bytes; returns how many frames they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut frames = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = (self.remaining as usize).min(bytes.len());
                self.remaining -= take as u64;
                bytes = &bytes[take..];
                if self.remaining == 0 {
                    frames += 1;
                }
                continue;
            }
            let take = (8 - self.have).min(bytes.len());
            self.length[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 8 {
                self.have = 0;
                self.remaining = u64::from_be_bytes(self.length);
                if self.remaining == 0 {
                    frames += 1;
                }
            }
        }
        frames
    }
}

/// What a connection saw, shared between its stream halves and whoever
/// watches it.
#[derive(Debug)]
pub(crate) struct Watch {
    /// The peer's address.
    pub(crate) peer: String,
    opened: Instant,
    received: AtomicU64,
    sent: AtomicU64,
    bytes_received: AtomicU64,
    /// The peer's first byte was a TLS handshake record's (a TLS client).
    tls_hello: AtomicBool,
    /// The peer closed its side.
    peer_closed: AtomicBool,
    /// Closed from outside (by `close`).
    closed: AtomicBool,
    pub(crate) deadline_passed: AtomicBool,
    pub(crate) authenticated: AtomicBool,
    reader: Mutex<Option<Waker>>,
    /// A TLS alert read before authentication that says the peer refused
    /// our certificate (in words).
    tls_refusal: Mutex<Option<String>>,
    /// Counted in a gate's unauthenticated connections until settled.
    gate: Option<Arc<GateCount>>,
    settled: AtomicBool,
}

impl Watch {
    fn new(peer: String, gate: Option<Arc<GateCount>>) -> Self {
        Watch {
            peer,
            opened: Instant::now(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            tls_hello: AtomicBool::new(false),
            peer_closed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            deadline_passed: AtomicBool::new(false),
            authenticated: AtomicBool::new(false),
            reader: Mutex::new(None),
            tls_refusal: Mutex::new(None),
            gate,
            settled: AtomicBool::new(false),
        }
    }

    /// Closes the connection: its reads fail from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(waker) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take() {
            waker.wake();
        }
    }

    /// The session authenticated: it no longer counts against the cap.
    pub(crate) fn authenticate(&self) {
        self.authenticated.store(true, Ordering::Release);
        self.settle();
    }

    fn settle(&self) {
        if !self.settled.swap(true, Ordering::AcqRel)
            && let Some(gate) = &self.gate
        {
            gate.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The peer's refusal of our TLS certificate, if a read before
    /// authentication failed with one.
    pub(crate) fn tls_refusal(&self) -> Option<String> {
        self.tls_refusal.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why a connection that never authenticated closed, from what it saw.
    pub(crate) fn pre_auth_close(&self) -> PreAuthClose {
        PreAuthClose {
            received: self.received.load(Ordering::Acquire),
            sent: self.sent.load(Ordering::Acquire),
            bytes_received: self.bytes_received.load(Ordering::Acquire),
            tls_hello: self.tls_hello.load(Ordering::Acquire),
            deadline_passed: self.deadline_passed.load(Ordering::Acquire),
            peer_closed: self.peer_closed.load(Ordering::Acquire),
            after: self.opened.elapsed(),
        }
    }
}

/// What a connection saw before it closed unauthenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreAuthClose {
    /// Frames received from the peer.
    pub(crate) received: u64,
    /// Frames sent to it.
    pub(crate) sent: u64,
    pub(crate) bytes_received: u64,
    /// Its first byte opened a TLS handshake.
    pub(crate) tls_hello: bool,
    /// The authentication deadline closed it (node side).
    pub(crate) deadline_passed: bool,
    /// The peer closed first.
    pub(crate) peer_closed: bool,
    /// How long after it opened.
    pub(crate) after: Duration,
}

impl PreAuthClose {
    /// The coordinator's reading: `Ok` the cause when it is certain, `Err`
    /// a message that says what is not known. The handshake: the
    /// coordinator sends its name; the node answers a status and, if it goes
    /// on, its challenge; the coordinator answers with its digest of the
    /// cookie, which the node checks.
    pub(crate) fn at_coordinator(&self, address: &str) -> (String, bool) {
        if self.received == 0 {
            let message = format!(
                "node {address} closed the connection before authenticating: it refused it (it \
                 is at its cap of unauthenticated connections, or it is not a combtest node); \
                 see its log"
            );
            return (message, false);
        }
        if self.received == 1 {
            let message = format!(
                "node {address} refused the session: it already has one under this coordinator's \
                 name; see its log"
            );
            return (message, false);
        }
        if self.sent >= 2 && self.after < Duration::from_secs(1) {
            let message = format!(
                "node {address} refused our cookie: the cookies differ (give both sides the same \
                 --cookie, COMBTEST_COOKIE or cookie file)"
            );
            return (message, true);
        }
        let message = format!(
            "node {address} closed the connection before authentication: wrong cookie or refused \
             by the node (the handshake took {}), see its log",
            humantime::format_duration(Duration::from_millis(self.after.as_millis() as u64))
        );
        (message, false)
    }

    /// The node's reading, for its log.
    pub(crate) fn at_node(&self, deadline: Duration) -> String {
        let deadline = humantime::format_duration(deadline);
        if self.deadline_passed {
            return format!("no authentication within {deadline}: closed");
        }
        match self.received {
            0 if self.tls_hello => "it started a TLS handshake: this node runs without TLS \
                 (give it --tls-cert, --tls-key and --tls-ca)"
                .to_string(),
            0 if self.bytes_received == 0 => {
                "it closed without sending anything (not a combtest coordinator?)".to_string()
            }
            0 => format!(
                "it sent {} bytes but no valid handshake (not a combtest coordinator)",
                self.bytes_received
            ),
            1 if self.sent == 0 => {
                "its first frame was not a handshake (not a combtest coordinator)".to_string()
            }
            1 if self.sent == 1 => {
                "refused: a session under its name is already open (duplicate connection)"
                    .to_string()
            }
            1 => "it closed after our challenge without answering it".to_string(),
            _ => "wrong cookie: its answer to our challenge did not match".to_string(),
        }
    }
}

/// A gate's count of unauthenticated connections.
#[derive(Debug, Default)]
pub(crate) struct GateCount {
    pending: AtomicUsize,
}

/// A byte stream (TCP, or TLS over it: the decrypted side) whose frames are
/// counted and which can be closed from outside.
pub(crate) struct Watched<T> {
    stream: T,
    watch: Arc<Watch>,
}

impl<T> Watched<T> {
    pub(crate) fn new(stream: T, watch: Arc<Watch>) -> Self {
        Watched { stream, watch }
    }
}

struct WatchedRead<T> {
    inner: tokio::io::ReadHalf<T>,
    watch: Arc<Watch>,
    frames: FrameCounter,
}

struct WatchedWrite<T> {
    inner: tokio::io::WriteHalf<T>,
    watch: Arc<Watch>,
    frames: FrameCounter,
}

impl<T> Drop for WatchedRead<T> {
    fn drop(&mut self) {
        // The session is gone: it never authenticated, or it did already.
        self.watch.settle();
    }
}

/// What a `Watched` stream may wrap.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

impl<T: Stream> ClusterBidiStream for Watched<T> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.stream);
        let reader = WatchedRead {
            inner: read,
            watch: Arc::clone(&self.watch),
            frames: FrameCounter::default(),
        };
        let writer =
            WatchedWrite { inner: write, watch: self.watch, frames: FrameCounter::default() };
        (Box::new(reader), Box::new(writer))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.watch.peer.clone())
    }
}

impl<T: Stream> AsyncRead for WatchedRead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.watch.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed by combtest",
            )));
        }
        *this.watch.reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(error)) = &polled
            && !this.watch.authenticated.load(Ordering::Acquire)
            && let Some(refusal) = crate::cluster::tls::refusal(error)
        {
            *this.watch.tls_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
        }
        if let Poll::Ready(Ok(())) = polled {
            let read = &buf.filled()[before..];
            if read.is_empty() {
                this.watch.peer_closed.store(true, Ordering::Release);
            } else {
                let before =
                    this.watch.bytes_received.fetch_add(read.len() as u64, Ordering::AcqRel);
                if before == 0 && read[0] == TLS_HANDSHAKE {
                    this.watch.tls_hello.store(true, Ordering::Release);
                }
                let frames = this.frames.feed(read);
                this.watch.received.fetch_add(frames, Ordering::AcqRel);
            }
        }
        polled
    }
}

impl<T: Stream> AsyncWrite for WatchedWrite<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            let frames = this.frames.feed(&buf[..written]);
            this.watch.sent.fetch_add(frames, Ordering::AcqRel);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection being opened: the stream to hand to a NodeServer and its
/// watch, or why not (naming the node).
pub(crate) type Connecting = futures::future::BoxFuture<
    'static,
    Result<(Box<dyn ClusterBidiStream>, Arc<Watch>), ConnectFailure>,
>;

/// How a coordinator reaches its nodes: plain TCP ([`Tcp`]) or TLS over it
/// ([`TlsTransport`], its handshake inside the connection's time),
/// without changing the membership.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Opens a connection to `address` within `timeout`: the stream to hand
    /// to a NodeServer, and its watch.
    fn connect(&self, address: String, timeout: Duration) -> Connecting;
}

/// Plain TCP.
pub(crate) struct Tcp;

impl Transport for Tcp {
    fn connect(&self, address: String, timeout: Duration) -> Connecting {
        Box::pin(async move {
            let (stream, watch) = connect_tcp(&address, timeout).await.map_err(|reason| {
                ConnectFailure::Transient(format!("cannot reach node {address}: {reason}"))
            })?;
            let stream = Watched::new(stream, Arc::clone(&watch));
            Ok((Box::new(stream) as Box<dyn ClusterBidiStream>, watch))
        })
    }
}

/// TLS over TCP: the client handshake ([`Tls::connect`]) in what is left
/// of the connection's time.
pub(crate) struct TlsTransport(pub(crate) Tls);

impl Transport for TlsTransport {
    fn connect(&self, address: String, timeout: Duration) -> Connecting {
        let tls = self.0.clone();
        Box::pin(async move {
            let started = Instant::now();
            let (stream, watch) = connect_tcp(&address, timeout).await.map_err(|reason| {
                ConnectFailure::Transient(format!("cannot reach node {address}: {reason}"))
            })?;
            let left = timeout.saturating_sub(started.elapsed());
            let stream = tls.connect(&address, stream, left, timeout).await?;
            let stream = Watched::new(stream, Arc::clone(&watch));
            Ok((Box::new(stream) as Box<dyn ClusterBidiStream>, watch))
        })
    }
}

/// Opens a coordinator's TCP connection to `address`, within `timeout`:
/// the stream and the watch its `Watched` wrapper will share.
pub(crate) async fn connect_tcp(
    address: &str,
    timeout: Duration,
) -> Result<(TcpStream, Arc<Watch>), String> {
    let resolved: SocketAddr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve it: {e}"))?
        .next()
        .ok_or_else(|| "it resolves to no address".to_string())?;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(resolved))
        .await
        .map_err(|_| format!("no connection within {}", humantime::format_duration(timeout)))?
        .map_err(|e| connect_error(&e))?;
    let _ = stream.set_nodelay(true);
    let watch = Arc::new(Watch::new(resolved.to_string(), None));
    Ok((stream, watch))
}

/// Why a connection could not be made, in words: "connection refused
/// (nothing listens on that port)" rather than the OS error's own text.
fn connect_error(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on that port)".to_string()
        }
        ErrorKind::TimedOut => "the connection timed out (is the host up?)".to_string(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
            "no route to the host (is it up, is the address right?)".to_string()
        }
        _ => error.to_string(),
    }
}

/// Kills a session actor and everything under it (a killed actor does not
/// stop its children, and a session's reader may be waiting on a silent
/// peer, which only a kill interrupts): its socket closes.
pub(crate) fn kill_tree(cell: &ActorCell) {
    for child in cell.get_children() {
        kill_tree(&child);
    }
    cell.kill();
}

/// A node's accept loop: its cap on unauthenticated connections and its
/// authentication deadline.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) max_pending: usize,
    pub(crate) deadline: Duration,
    count: Arc<GateCount>,
    /// Connections not yet settled, by peer label.
    watches: Mutex<HashMap<String, Arc<Watch>>>,
    refused: AtomicU64,
    /// The TLS handshake every connection goes through first, if any.
    tls: Option<Tls>,
}

impl Gate {
    pub(crate) fn new(max_pending: usize, deadline: Duration, tls: Option<Tls>) -> Self {
        Gate {
            max_pending: max_pending.max(1),
            deadline,
            count: Arc::new(GateCount::default()),
            watches: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            tls,
        }
    }

    /// The connection of this peer label, if it came through the gate.
    pub(crate) fn watch(&self, peer: &str) -> Option<Arc<Watch>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner()).get(peer).cloned()
    }

    /// Forgets a connection (its session ended).
    pub(crate) fn forget(&self, peer: &str) -> Option<Arc<Watch>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner()).remove(peer)
    }

    /// Connections not yet authenticated.
    pub(crate) fn pending(&self) -> usize {
        self.count.pending.load(Ordering::Acquire)
    }

    /// Accepts connections on `listener` forever, handing each to `server`.
    pub(crate) async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        server: ActorRef<NodeServerMessage>,
    ) {
        let mut last_report: Option<Instant> = None;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors (or another transient error):
                    // do not spin; connections wait in the backlog.
                    tracing::warn!(%error, "cannot accept a connection; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.pending() >= self.max_pending {
                drop(stream);
                let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // The first refusal at once, then at most one line a second.
                if last_report.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(
                        refused,
                        max_pending = self.max_pending,
                        "refusing connections: {} already waiting to authenticate \
                         (--max-pending)",
                        crate::model::count(self.max_pending as u64, "connection")
                    );
                    last_report = Some(Instant::now());
                    self.refused.store(0, Ordering::Relaxed);
                }
                continue;
            }
            let _ = stream.set_nodelay(true);
            let label = peer.to_string();
            self.count.pending.fetch_add(1, Ordering::AcqRel);
            let watch = Arc::new(Watch::new(label.clone(), Some(Arc::clone(&self.count))));
            self.watches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(label.clone(), Arc::clone(&watch));
            let deadline = self.deadline;
            let timer = Arc::clone(&watch);
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                if !timer.authenticated.load(Ordering::Acquire) {
                    timer.deadline_passed.store(true, Ordering::Release);
                    timer.close();
                }
            });
            let Some(tls) = &self.tls else {
                if !open_session(&server, Box::new(Watched::new(stream, watch))) {
                    return;
                }
                continue;
            };
            // The TLS handshake runs on a task of the connection's own, under
            // its authentication deadline: the loop never waits on a peer.
            let (gate, acceptor, server) = (Arc::clone(&self), tls.acceptor(), server.clone());
            let until = Instant::now() + self.deadline;
            tokio::spawn(async move {
                match crate::cluster::tls::accept(&acceptor, stream, until, gate.deadline).await {
                    Ok(stream) => {
                        open_session(&server, Box::new(Watched::new(stream, watch)));
                    }
                    Err(reason) => {
                        // Refused: its pending slot is free again at once.
                        gate.forget(&label);
                        watch.settle();
                        tracing::warn!("refused a connection from {label}: TLS: {reason}");
                    }
                }
            });
        }
    }
}

/// Hands an accepted (and, with TLS, decrypted) stream to the node's
/// NodeServer; `false` when the cluster layer is gone.
fn open_session(server: &ActorRef<NodeServerMessage>, stream: Box<dyn ClusterBidiStream>) -> bool {
    let opened =
        server.cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: true });
    if opened.is_err() {
        tracing::error!("the cluster layer is gone; no more connections are taken");
    }
    opened.is_ok()
}

/// The cap on unauthenticated connections for this process: `wanted`, but
/// never more than a quarter of the open-file limit (the rest is for
/// sessions, runs and the suite's own files).
pub(crate) fn pending_cap(wanted: usize) -> usize {
    match open_file_limit() {
        Some(limit) => wanted.min((limit / 4) as usize).max(1),
        None => wanted,
    }
}

/// The soft limit on open files (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut bytes = (len as u64).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(7u8, len));
        bytes
    }

    #[test]
    fn frames_are_counted_across_any_split() {
        let mut stream = frame(3);
        stream.extend(frame(0));
        stream.extend(frame(300));
        for chunk in [1, 2, 5, 8, 9, 1000] {
            let mut counter = FrameCounter::default();
            let frames: u64 = stream.chunks(chunk).map(|c| counter.feed(c)).sum();
            assert_eq!(frames, 3, "chunks of {chunk}");
        }
        let mut counter = FrameCounter::default();
        assert_eq!(counter.feed(&frame(10)[..12]), 0, "half a frame is not one");
    }

    #[test]
    fn closes_before_authentication_are_named_by_what_was_seen() {
        let seen = |received, sent, after_ms| PreAuthClose {
            received,
            sent,
            bytes_received: received * 20,
            tls_hello: false,
            deadline_passed: false,
            peer_closed: true,
            after: Duration::from_millis(after_ms),
        };
        let (nothing, permanent) = seen(0, 1, 5).at_coordinator("n:1");
        assert!(nothing.contains("cap of unauthenticated connections") && !permanent, "{nothing}");
        let (duplicate, _) = seen(1, 1, 5).at_coordinator("n:1");
        assert!(duplicate.contains("already has one"), "{duplicate}");
        let (cookie, permanent) = seen(2, 2, 5).at_coordinator("n:1");
        assert!(cookie.contains("the cookies differ") && permanent, "{cookie}");
        let (slow, permanent) = seen(2, 2, 4_000).at_coordinator("n:1");
        assert!(slow.contains("wrong cookie or refused by the node") && !permanent, "{slow}");

        let deadline = Duration::from_secs(5);
        assert_eq!(
            seen(2, 2, 10).at_node(deadline),
            "wrong cookie: its answer to our challenge did not match"
        );
        assert!(seen(1, 1, 10).at_node(deadline).contains("duplicate connection"));
        assert!(seen(1, 0, 10).at_node(deadline).contains("not a combtest coordinator"));
        assert!(seen(0, 0, 10).at_node(deadline).contains("not a combtest coordinator"));
        let tls = PreAuthClose { tls_hello: true, bytes_received: 300, ..seen(0, 0, 10) };
        assert!(tls.at_node(deadline).contains("this node runs without TLS"));
        let timed_out = PreAuthClose { deadline_passed: true, ..seen(0, 0, 5_000) };
        assert_eq!(timed_out.at_node(deadline), "no authentication within 5s: closed");
    }
}
