//! Async actions against a real server: a small TCP key-value service of
//! this example's own, started on 127.0.0.1 (a port the OS picks), and a
//! combtest suite whose walks are its async clients.
//!
//! ```sh
//! cargo run --example async_server            # the report, exit code 0
//! cargo run --example async_server -- --json  # the report as one JSON object
//! ASYNC_SERVER_BUG=1 cargo run --example async_server   # walks fail, exit code 1
//! ```
//!
//! The service speaks a line protocol, one command a line, one answer a
//! line, each connection served concurrently on the server's own tokio
//! runtime (a thread of its own):
//!
//! ```text
//! SET k v   ->  OK
//! GET k     ->  VALUE v  |  NONE
//! DEL k     ->  OK (it was there)  |  NONE
//! QUIT      ->  BYE, and the server closes the connection
//! ```
//!
//! Each walk is one client: its state (built per walk by a factory from
//! the `ServerAddr` fixture and the walk's id) holds its connection, opened
//! in its first async action (a tokio socket must be made inside the
//! runtime that drives it), and a model of what the server should hold
//! for it. Its keys are namespaced by its walk id, so thousands of walks
//! share the server without seeing each other's writes. Every answer is
//! checked against the model; the last action reads every key back and
//! says QUIT. The server closes first, so the TIME_WAIT of the thousands
//! of connections a run makes stays on the server's port, not on the
//! client's ephemeral ports.
//!
//! With `ASYNC_SERVER_BUG=1` the server forgets every 7th SET (it answers
//! `OK` and stores nothing), and the walks that read the key back fail.
//!
//! `tests/async_server.rs` runs this binary and also includes this file as
//! a module, to run the suite against a server of its own and replay walks.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use combtest::prelude::*;
use combtest::{Built, RunError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// The service under test.

/// What the server counts, shared with whoever started it.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
    /// Most connections open at once.
    pub peak_open: AtomicUsize,
    /// SET commands received.
    pub sets: AtomicU64,
    /// SETs forgotten by the planted bug.
    pub forgotten: AtomicU64,
}

/// The key-value server, running on a thread of its own until dropped.
pub struct Server {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts the server on 127.0.0.1, on a port the OS picks. With
    /// `forget_every = Some(n)`, every `n`th SET is answered `OK` and not
    /// stored (the planted bug).
    pub fn start(forget_every: Option<u64>) -> std::io::Result<Server> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // Listening here, so the address is known (and connections queue)
        // before the server thread runs: nobody waits for it to be ready.
        // The backlog is large: hundreds of walks connect at once, and a
        // connection that overflows the default backlog (128) waits a whole
        // second for its SYN to be sent again.
        let listener = {
            let _in_runtime = runtime.enter();
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            socket.listen(4096)?
        };
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new().name("kv-server".into()).spawn(move || {
            runtime.block_on(async move {
                let store = Arc::new(Store { map: Mutex::default(), forget_every });
                tokio::select! {
                    _ = stopped => {}
                    _ = accept(listener, store, shared) => {}
                }
            });
            // Dropping the runtime here drops every connection's task.
        })?;
        Ok(Server { addr, stats, stop: Some(stop), thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counts.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server's contents.
struct Store {
    map: Mutex<HashMap<String, String>>,
    forget_every: Option<u64>,
}

async fn accept(listener: tokio::net::TcpListener, store: Arc<Store>, stats: Arc<ServerStats>) {
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(_) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: back off a little rather than spin.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let now = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_open.fetch_max(now, Ordering::Relaxed);
        let (store, stats) = (Arc::clone(&store), Arc::clone(&stats));
        tokio::spawn(async move {
            let _ = serve(socket, &store, &stats).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Answers one connection's commands until it closes.
async fn serve(socket: TcpStream, store: &Store, stats: &ServerStats) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut socket = BufReader::new(socket);
    let mut line = String::new();
    loop {
        line.clear();
        if socket.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        if command == "QUIT" {
            return socket.get_mut().write_all(b"BYE\n").await;
        }
        let answer = answer(command, store, stats);
        socket.get_mut().write_all(answer.as_bytes()).await?;
    }
}

/// The answer to one command, with its newline.
fn answer(command: &str, store: &Store, stats: &ServerStats) -> String {
    let mut words = command.splitn(3, ' ');
    let mut map = store.map.lock().unwrap_or_else(|p| p.into_inner());
    match (words.next(), words.next(), words.next()) {
        (Some("SET"), Some(key), Some(value)) => {
            let n = stats.sets.fetch_add(1, Ordering::Relaxed) + 1;
            if store.forget_every.is_some_and(|every| n.is_multiple_of(every)) {
                stats.forgotten.fetch_add(1, Ordering::Relaxed);
            } else {
                map.insert(key.to_string(), value.to_string());
            }
            "OK\n".to_string()
        }
        (Some("GET"), Some(key), None) => match map.get(key) {
            Some(value) => format!("VALUE {value}\n"),
            None => "NONE\n".to_string(),
        },
        (Some("DEL"), Some(key), None) => match map.remove(key) {
            Some(_) => "OK\n".to_string(),
            None => "NONE\n".to_string(),
        },
        _ => format!("ERR unknown command: {command}\n"),
    }
}

// ---------------------------------------------------------------------------
// The suite: each walk is an async client of the server.

/// The server's address, a fixture of the run.
#[derive(Debug, Clone, Copy)]
pub struct ServerAddr(pub SocketAddr);

/// Client-side counts, a fixture of the run. The run drops its fixtures
/// when it ends, so what is read afterwards is behind an `Arc`.
#[derive(Debug, Default)]
pub struct Gauge {
    /// Requests waiting for their answer now.
    waiting: AtomicUsize,
    /// Most requests waiting at once: walks in flight, each awaiting the
    /// server.
    pub peak_waiting: AtomicUsize,
}

/// The `Gauge` fixture.
pub struct ClientGauge(pub Arc<Gauge>);

/// The keys a walk uses (each namespaced by its walk id on the server).
pub const KEYS: [char; 3] = ['a', 'b', 'c'];

/// How long a request may wait for its answer before the walk fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One walk's client: its connection (opened by its first request) and
/// what it expects the server to hold for it.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    walk: WalkId,
    conn: Option<BufReader<TcpStream>>,
    /// The expected contents of this walk's keys.
    pub model: BTreeMap<char, u32>,
    /// Requests sent.
    pub requests: u32,
}

/// The state factory: a client of the fixture's server for walk `walk`.
/// It does not connect: a tokio socket belongs to the runtime it is made
/// in, and the factory runs outside the runner's runtime.
pub fn client(fixtures: &Fixtures, walk: WalkId) -> Result<Client, Halt> {
    let addr = fixtures.require::<ServerAddr>()?.0;
    Ok(Client { addr, walk, conn: None, model: BTreeMap::new(), requests: 0 })
}

impl Client {
    /// Sends `verb` for this walk's `key` (and `value`), and returns the
    /// answer without its newline; connects first if this is the walk's
    /// first request. The key on the server is namespaced by the walk's id;
    /// errors name only the walk's own key (`GET a`), so that the failure
    /// groups gather the walks that failed alike.
    async fn call(
        &mut self,
        verb: &str,
        key: char,
        value: Option<u32>,
        cx: &WalkContext<'_>,
    ) -> Result<String, Halt> {
        let command = match value {
            Some(value) => format!("{verb} w{}.{key} {value}\n", self.walk),
            None => format!("{verb} w{}.{key}\n", self.walk),
        };
        let gauge = cx.fixtures().get::<ClientGauge>().map(|g| &*g.0);
        let _waiting = gauge.map(Waiting::new);
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.exchange(&command)).await;
        self.requests += 1;
        match answer {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.conn = None;
                Err(Halt::fail(format!("{verb} {key}: {error}")))
            }
            Err(_) => Err(Halt::fail(format!("{verb} {key}: no answer within {ANSWER_TIMEOUT:?}"))),
        }
    }

    async fn exchange(&mut self, command: &str) -> std::io::Result<String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.get_mut().write_all(command.as_bytes()).await?;
        let mut answer = String::new();
        if conn.read_line(&mut answer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(answer.trim_end().to_string())
    }

    /// Says QUIT, waits for the server to close, and drops the connection.
    async fn quit(&mut self) -> ActionResult {
        let Some(mut conn) = self.conn.take() else { return Ok(()) };
        let bye = async {
            conn.get_mut().write_all(b"QUIT\n").await?;
            let mut rest = String::new();
            conn.read_to_string(&mut rest).await?;
            Ok::<_, std::io::Error>(rest)
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, bye).await {
            Ok(Ok(rest)) => expect("QUIT", rest.trim_end(), "BYE"),
            Ok(Err(error)) => fail(format!("QUIT: {error}")),
            Err(_) => fail(format!("QUIT: not closed within {ANSWER_TIMEOUT:?}")),
        }
    }

    /// Reads `key` back and checks it against the model.
    async fn check(&mut self, key: char, cx: &WalkContext<'_>) -> ActionResult {
        let answer = self.call("GET", key, None, cx).await?;
        let expected = match self.model.get(&key) {
            Some(value) => format!("VALUE {value}"),
            None => "NONE".to_string(),
        };
        expect(&format!("GET {key}"), &answer, &expected)
    }
}

/// Fails the walk unless `request` was answered `expected`.
fn expect(request: &str, answer: &str, expected: &str) -> ActionResult {
    match answer == expected {
        true => Ok(()),
        false => fail(format!("{request}: answered {answer:?}, expected {expected:?}")),
    }
}

/// Counts a request as waiting while it lives.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        let now = gauge.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        gauge.peak_waiting.fetch_max(now, Ordering::Relaxed);
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes one of the walk's keys: a SET of a value, or a DEL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Write {
    Set { key: char, value: u32 },
    Del { key: char },
}

impl AsyncAction<Client> for Write {
    fn options() -> Vec<Self> {
        let sets = KEYS.iter().flat_map(|&key| (1..=2).map(move |value| Write::Set { key, value }));
        sets.chain(KEYS.iter().map(|&key| Write::Del { key })).collect()
    }
    async fn run(&self, client: &mut Client, cx: WalkContext<'_>) -> ActionResult {
        match *self {
            Write::Set { key, value } => {
                let answer = client.call("SET", key, Some(value), &cx).await?;
                expect(&format!("SET {key} {value}"), &answer, "OK")?;
                client.model.insert(key, value);
            }
            Write::Del { key } => {
                let answer = client.call("DEL", key, None, &cx).await?;
                let expected = if client.model.remove(&key).is_some() { "OK" } else { "NONE" };
                expect(&format!("DEL {key}"), &answer, expected)?;
            }
        }
        Ok(())
    }
}

/// Reads one of the walk's keys back and checks it against the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Read(pub char);

impl AsyncAction<Client> for Read {
    fn options() -> Vec<Self> {
        KEYS.iter().map(|&key| Read(key)).collect()
    }
    async fn run(&self, client: &mut Client, cx: WalkContext<'_>) -> ActionResult {
        client.check(self.0, &cx).await
    }
}

/// The last step: reads every key back, then says QUIT and waits for the
/// server to close the connection (a walk's state lives until its batch
/// ends: a walk that is done should not hold a socket until then).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit;

impl AsyncAction<Client> for Audit {
    fn options() -> Vec<Self> {
        vec![Audit]
    }
    async fn run(&self, client: &mut Client, cx: WalkContext<'_>) -> ActionResult {
        for key in KEYS {
            client.check(key, &cx).await?;
        }
        client.quit().await
    }
}

/// The walk order: 9 × 9 × 3 × 9 × 3 × 1 = 6,561 walks, each a client
/// making 7 to 8 requests on a connection of its own.
pub fn order() -> WalkOrder<Client, impl Entries<Client>> {
    WalkOrder::new()
        .then_async::<Write>()
        .then_async::<Write>()
        .then_async::<Read>()
        .then_async::<Write>()
        .then_async::<Read>()
        .then_async::<Audit>()
}

/// The run's fixtures for a server at `addr`.
pub fn fixtures(addr: SocketAddr, gauge: &Arc<Gauge>) -> Fixtures {
    Fixtures::new().with(ServerAddr(addr)).with(ClientGauge(Arc::clone(gauge)))
}

/// The run's options: a client per walk, 2 runner threads, 256 walks in
/// flight on each.
pub fn options(addr: SocketAddr, gauge: &Arc<Gauge>) -> RunOptions<Client, Built> {
    RunOptions::factory(client).fixtures(fixtures(addr, gauge)).threads(2).in_flight(256)
}

/// Starts a server (buggy when `ASYNC_SERVER_BUG=1`), runs the suite against
/// it, and prints the report (as JSON with `--json`). Exit code 0 when every
/// walk passed, 1 when any failed, 2 when the run could not start.
fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let bug = std::env::var("ASYNC_SERVER_BUG").is_ok_and(|v| v == "1");
    let server = match Server::start(bug.then_some(7)) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("error: the server did not start: {error}");
            return ExitCode::from(2);
        }
    };
    let gauge = Arc::new(Gauge::default());
    let order = order();
    let report = match run(&order, options(server.addr(), &gauge)) {
        Ok(report) => report,
        Err(error) => return could_not_run(error),
    };
    let stats = server.stats();
    let peak_waiting = gauge.peak_waiting.load(Ordering::Relaxed);
    let peak_open = stats.peak_open.load(Ordering::Relaxed);
    let accepted = stats.accepted.load(Ordering::Relaxed);
    let forgotten = stats.forgotten.load(Ordering::Relaxed);
    if json {
        let summary = combtest::model::trace::Summary::of(&report);
        let mut value = serde_json::to_value(&summary).expect("plain data serializes");
        value["server"] = serde_json::json!({
            "addr": server.addr().to_string(),
            "bug": bug,
            "connections": accepted,
            "peak_open_connections": peak_open,
            "sets": stats.sets.load(Ordering::Relaxed),
            "forgotten_sets": forgotten,
        });
        value["peak_requests_waiting"] = serde_json::json!(peak_waiting);
        println!("{value}");
    } else {
        print!("{report}");
        println!(
            "server {}: {accepted} connections, at most {peak_open} open at once; at most \
             {peak_waiting} requests waiting at once{}",
            server.addr(),
            match bug {
                true => format!("; the planted bug forgot {forgotten} SETs"),
                false => String::new(),
            }
        );
    }
    match report.success() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    }
}

fn could_not_run(error: RunError) -> ExitCode {
    eprintln!("error: the walk order could not run: {error}");
    ExitCode::from(2)
}
