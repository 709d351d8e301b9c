//! The HTTP side: `/metrics`, `/healthz`, `/`, on hyper (HTTP/1.1) over tokio, with TLS
//! (rustls) and basic auth from the web configuration file. A request only reads what the
//! scan loop published, so answering costs a pointer copy and a socket write.
//!
//! It cannot go deaf. One thread runs a single-threaded tokio runtime: the accept loop
//! and every connection are tasks, so a slow or idle client holds a few kilobytes, never
//! a thread. Every phase of a connection has a limit ([`LIMITS`]): the TLS handshake and
//! the request head (hyper's header read timeout, which also ends idle keep-alive
//! connections), the head's size (431 above it), each write that makes no progress, and
//! the whole time from a request's head to the end of its answer. Connections are capped
//! (512, or a quarter of the open-files limit when that is less); at the cap
//! — or when accept(2) fails for lack of file descriptors — the connection that has
//! waited longest without a request in progress (idle keep-alive, a slow head, a slow
//! handshake) is closed to make room, so a scraper is served at once however many idle
//! clients hold sockets. When every connection is busy answering, the new one is closed
//! at once. Accept errors never end the loop: they are logged once (until accepting
//! works again) and retried after a short pause.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};

use super::metrics::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use super::web_config::{BasicAuth, Credentials, WebConfig};
use super::{Shared, POLL};

/// The limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// TLS handshake, and a request head from the moment the connection waits for one
    /// (so also how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// From a request's head to the last byte of its answer.
    pub request_timeout: Duration,
    /// One write that makes no progress (a client that stopped reading).
    pub write_timeout: Duration,
    /// The request line and headers together, bytes (431 above it).
    pub max_header_bytes: usize,
    /// hyper's read buffer, bytes.
    pub max_buf_size: usize,
    /// Header lines of one request.
    pub max_headers: usize,
    /// Open connections at most. `None`: [`DEFAULT_MAX_CONNECTIONS`], lowered to a
    /// quarter of the open-files limit so sockets never run out before the cap.
    pub max_connections: Option<usize>,
    /// bcrypt checks running at once (each is ~50 ms of a core at cost 10), and how long
    /// a request waits for a turn before it gets 503.
    pub bcrypt_parallel: usize,
    pub bcrypt_wait: Duration,
}

pub const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(30),
    write_timeout: Duration::from_secs(10),
    max_header_bytes: 8 << 10,
    max_buf_size: 16 << 10,
    max_headers: 64,
    max_connections: None,
    bcrypt_parallel: 2,
    bcrypt_wait: Duration::from_secs(5),
};

/// The connection cap unless `--web.max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The accept queue the kernel keeps for us (capped by `net.core.somaxconn`).
const BACKLOG: u32 = 1024;

const INDEX: &str = "<!DOCTYPE html>
<html><head><meta charset=\"utf-8\"><title>dismount_iso_qemu exporter</title></head>
<body><h1>dismount_iso_qemu exporter</h1>
<p>VMs of this libvirt host, their guest OS, agent state and ISO media, for Prometheus.</p>
<ul><li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/healthz\">/healthz</a></li></ul>
</body></html>
";

/// What a request gets: status, content type, body (gzipped when `gzip`).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Arc<[u8]>,
    pub gzip: bool,
}

fn text(status: u16, body: &str) -> Answer {
    Answer {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Arc::from(body.as_bytes()),
        gzip: false,
    }
}

/// Whether the scraper accepts OpenMetrics (Prometheus says so in `Accept`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Whether the scraper accepts a gzipped body (`Accept-Encoding: gzip`, not `gzip;q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut it = part.split(';').map(str::trim);
            let coding = it.next().unwrap_or("");
            let q = it
                .find_map(|p| p.strip_prefix("q="))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
    })
}

/// The request headers `answer` looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct Negotiation<'a> {
    pub accept: Option<&'a str>,
    pub accept_encoding: Option<&'a str>,
}

/// The latest rendering of `shared` in the format and encoding the scraper asked for.
fn metrics_answer(shared: &Shared, n: Negotiation) -> Answer {
    let e = shared.exposition();
    let gzip = accepts_gzip(n.accept_encoding);
    let (content_type, body) = match (wants_openmetrics(n.accept), gzip) {
        (true, false) => (OPENMETRICS_CONTENT_TYPE, e.openmetrics),
        (true, true) => (OPENMETRICS_CONTENT_TYPE, e.openmetrics_gzip),
        (false, false) => (TEXT_CONTENT_TYPE, e.text),
        (false, true) => (TEXT_CONTENT_TYPE, e.text_gzip),
    };
    Answer {
        status: 200,
        content_type,
        body,
        gzip,
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none: add [hosts.NAME] tables".to_string()
    } else {
        names.join(", ")
    }
}

/// The first value of `key` in `url`'s query, percent-decoded (`+` is a space); `None`
/// when absent, empty or not UTF-8.
pub fn query_param(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (percent_decode(k)? == key)
            .then(|| percent_decode(v))
            .flatten()
            .filter(|v| !v.is_empty())
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Route one request. Pure over `shared`, so tests call it without sockets.
pub fn answer(shared: &Shared, method: &Method, url: &str, n: Negotiation) -> Answer {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return text(405, "only GET and HEAD\n");
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/metrics" => metrics_answer(shared, n),
        "/probe" => {
            let names = shared.target_names();
            let Some(name) = query_param(url, "target") else {
                return text(
                    400,
                    &format!(
                        "give a target: /probe?target=NAME (the config file's hosts: {})\n",
                        list_or_none(&names)
                    ),
                );
            };
            match shared.target(&name) {
                Some(t) => metrics_answer(t, n),
                None => text(
                    404,
                    &format!(
                        "unknown target {:?}: /probe serves the config file's hosts ({})\n",
                        crate::render::text::sanitize(&name),
                        list_or_none(&names)
                    ),
                ),
            }
        }
        "/healthz" => match shared.health() {
            Ok(()) => text(200, "ok\n"),
            Err(reason) => text(503, &format!("{reason}\n")),
        },
        "/" => Answer {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: Arc::from(INDEX.as_bytes()),
            gzip: false,
        },
        _ => text(404, "not found: try /metrics, /healthz or /\n"),
    }
}

// ---------------------------------------------------------------------------------------
// Connections: who is open, who is busy, whom to close at the cap.

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Since when it has had no request in progress (or since its accept).
    idle_since: Mutex<Instant>,
    /// A request is being answered: never evicted.
    busy: AtomicBool,
    /// Close now (evicted).
    kill: Notify,
    /// `busy` changed: the connection's task re-arms its request deadline.
    changed: Notify,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            idle_since: Mutex::new(Instant::now()),
            busy: AtomicBool::new(false),
            kill: Notify::new(),
            changed: Notify::new(),
        }
    }

    fn set_busy(&self, busy: bool) {
        if !busy {
            *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        self.busy.store(busy, Ordering::SeqCst);
        self.changed.notify_one();
    }
}

/// Marks the connection idle again when the answer's body is dropped (written or not).
struct IdleOnDrop(Arc<Conn>);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.set_busy(false);
    }
}

#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn insert(&self) -> (u64, Arc<Conn>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let c = Arc::new(Conn::new());
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&c));
        (id, c)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Close the connection that has waited longest without a request in progress.
    /// `false` when every connection is busy answering.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = open
            .iter()
            .filter(|(_, c)| !c.busy.load(Ordering::SeqCst))
            .min_by_key(|(_, c)| *c.idle_since.lock().unwrap_or_else(|e| e.into_inner()))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| open.remove(&id)) {
            Some(c) => {
                c.kill.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct Deregister(Arc<Ctx>, u64);

impl Drop for Deregister {
    fn drop(&mut self) {
        self.0.conns.remove(self.1);
    }
}

// ---------------------------------------------------------------------------------------
// A write timeout for any stream.

/// A stream whose writes fail with `TimedOut` after `timeout` without progress.
struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a `Pending` write: `Ready(Err)` once the stall has lasted `timeout`.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading (write timeout)",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stall(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

// ---------------------------------------------------------------------------------------
// The answer's body: the shared bytes, never copied.

/// How much of a body hyper gets at once.
const FRAME: usize = 64 << 10;

/// Shared bytes, never copied; marks the connection idle when hyper is done with it.
pub struct Body {
    data: Option<Bytes>,
    len: u64,
    _idle: Option<IdleOnDrop>,
}

impl Body {
    fn new(data: Arc<[u8]>, idle: Option<IdleOnDrop>) -> Body {
        let len = data.len() as u64;
        Body {
            data: (len > 0).then(|| Bytes::from_owner(data)),
            len,
            _idle: idle,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    /// The body in slices of [`FRAME`] (zero-copy): hyper asks for the next one only as
    /// the socket takes the last, so the connection stays busy — under the request
    /// timeout, safe from eviction — until the answer is nearly written, not from the
    /// moment one frame of the whole body was handed over.
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.data.as_mut() {
            Some(d) if d.len() > FRAME => Some(d.split_to(FRAME)),
            _ => self.data.take(),
        };
        Poll::Ready(frame.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

// ---------------------------------------------------------------------------------------
// The server.

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub listen: SocketAddr,
    pub web: WebConfig,
    pub limits: Limits,
}

impl Endpoint {
    /// Plain HTTP, no auth: what `serve` does without `--web.config.file`.
    pub fn plain(listen: SocketAddr) -> Endpoint {
        Endpoint {
            listen,
            web: WebConfig::default(),
            limits: LIMITS,
        }
    }
}

/// What every connection task shares.
struct Ctx {
    shared: Arc<Shared>,
    conns: Registry,
    http: hyper::server::conn::http1::Builder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    auth: Option<Arc<BasicAuth>>,
    bcrypt: Semaphore,
    headers: Vec<(HeaderName, HeaderValue)>,
    limits: Limits,
    max_connections: usize,
}

/// A bound server, not yet serving.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    ctx: Arc<Ctx>,
    pub addr: SocketAddr,
    /// The connection cap in force (see [`Limits::max_connections`]).
    pub max_connections: usize,
}

/// Raise the soft open-files limit to the hard one (as Go programs do) and return it.
fn open_files_limit() -> libc::rlim_t {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct we own; no other memory involved.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                rl.rlim_cur = rl.rlim_max;
            }
        }
    }
    rl.rlim_cur
}

impl Server {
    /// Bind now (so a taken port is an error at start); serve later with [`Server::spawn`].
    pub fn bind(endpoint: Endpoint, shared: Arc<Shared>) -> Result<Server, String> {
        let listen = endpoint.listen;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(endpoint.limits.bcrypt_parallel.max(1))
            .thread_name("http-blocking")
            .build()
            .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
        let listener = {
            let _guard = runtime.enter();
            let socket = if listen.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            };
            socket
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(listen)?;
                    s.listen(BACKLOG)
                })
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?
        };
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let limits = endpoint.limits;
        let fd_limit = open_files_limit();
        let max_connections = limits.max_connections.unwrap_or_else(|| {
            DEFAULT_MAX_CONNECTIONS
                .min(usize::try_from(fd_limit / 4).unwrap_or(usize::MAX))
                .max(16)
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_buf_size.max(8192))
            .max_header_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let headers = endpoint
            .web
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        let ctx = Arc::new(Ctx {
            shared,
            conns: Registry::default(),
            http,
            tls: endpoint
                .web
                .tls
                .clone()
                .map(tokio_rustls::TlsAcceptor::from),
            auth: endpoint.web.auth.clone(),
            bcrypt: Semaphore::new(limits.bcrypt_parallel.max(1)),
            headers,
            limits,
            max_connections,
        });
        tracing::debug!(
            max_connections,
            open_files_limit = fd_limit,
            "HTTP limits: {limits:?}"
        );
        Ok(Server {
            runtime,
            listener,
            ctx,
            addr,
            max_connections,
        })
    }

    /// Whether connections speak TLS.
    pub fn tls(&self) -> bool {
        self.ctx.tls.is_some()
    }

    /// Serve on a thread of its own until `stop` is set; open connections are then
    /// dropped (within a second).
    pub fn spawn(self, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<()>, String> {
        std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                let Server {
                    runtime,
                    listener,
                    ctx,
                    ..
                } = self;
                runtime.block_on(accept_loop(listener, ctx, stop));
                runtime.shutdown_timeout(Duration::from_millis(500));
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))
    }
}

/// Out of file descriptors (ours or the system's) or of kernel memory: wait and retry.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when accept(2) has been failing, how often, and when last: the trouble is
    // logged once, and its end once it has been quiet for QUIET.
    const QUIET: Duration = Duration::from_secs(5);
    let mut failing: Option<(Instant, u64, Instant)> = None;
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            r = listener.accept() => match r {
                Ok((tcp, _peer)) => {
                    if let Some((since, n, last)) = failing {
                        if last.elapsed() >= QUIET {
                            failing = None;
                            tracing::info!(
                                failures = n,
                                "accepting connections again ({n} failures over {:.1}s)",
                                (last - since).as_secs_f64()
                            );
                        }
                    }
                    admit(tcp, &ctx);
                }
                Err(e) => {
                    let exhausted = is_exhaustion(&e);
                    match &mut failing {
                        Some((_, n, last)) => {
                            *n += 1;
                            *last = Instant::now();
                        }
                        None => {
                            failing = Some((Instant::now(), 1, Instant::now()));
                            if exhausted {
                                tracing::warn!(
                                    open = ctx.conns.len(),
                                    "accepting a connection failed: {e}; closing idle connections and retrying (logged once until it recovers)"
                                );
                            } else {
                                tracing::warn!("accepting a connection failed: {e}; retrying (logged once until it recovers)");
                            }
                        }
                    }
                    if exhausted {
                        // Free a batch, so a queue of hundreds drains in milliseconds.
                        for _ in 0..(ctx.conns.len() / 16).max(8) {
                            if !ctx.conns.evict_oldest_idle() {
                                break;
                            }
                        }
                    }
                    // Give the closed connections' tasks a moment to free their sockets,
                    // and never spin on an error that persists.
                    let pause = if exhausted { 5 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    }
}

/// A new connection: make room at the cap, then serve it on a task of its own.
fn admit(tcp: TcpStream, ctx: &Arc<Ctx>) {
    if ctx.conns.len() >= ctx.max_connections && !ctx.conns.evict_oldest_idle() {
        // Every connection is busy answering: this one is closed at once.
        tracing::debug!("connection cap reached with every connection busy; closing a new one");
        return;
    }
    let _ = tcp.set_nodelay(true);
    let (id, conn) = ctx.conns.insert();
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        let _deregister = Deregister(Arc::clone(&ctx), id);
        let io = WriteTimeout::new(tcp, ctx.limits.write_timeout);
        match &ctx.tls {
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(ctx.limits.header_read_timeout, acceptor.accept(io));
                let tls = tokio::select! {
                    r = handshake => match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    },
                    _ = conn.kill.notified() => return,
                };
                serve_connection(TokioIo::new(tls), conn, ctx.clone()).await;
            }
            None => serve_connection(TokioIo::new(io), conn, ctx.clone()).await,
        }
    });
}

/// Serve HTTP/1.1 on one connection until it ends, is evicted, or a request overruns.
async fn serve_connection<I>(io: I, conn: Arc<Conn>, ctx: Arc<Ctx>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = {
        let conn = Arc::clone(&conn);
        let ctx = Arc::clone(&ctx);
        hyper::service::service_fn(move |req| handle(req, Arc::clone(&conn), Arc::clone(&ctx)))
    };
    let http = ctx.http.serve_connection(io, service);
    tokio::pin!(http);
    loop {
        let deadline = conn
            .busy
            .load(Ordering::SeqCst)
            .then(|| tokio::time::Instant::now() + ctx.limits.request_timeout);
        tokio::select! {
            r = &mut http => {
                if let Err(e) = r {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = conn.kill.notified() => return,
            _ = conn.changed.notified() => {}
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::debug!("request timeout: closing the connection");
                return;
            }
        }
    }
}

fn header<'a>(req: &'a Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Answer one request: basic auth when configured, then [`answer`].
async fn handle(
    req: Request<hyper::body::Incoming>,
    conn: Arc<Conn>,
    ctx: Arc<Ctx>,
) -> Result<Response<Body>, Infallible> {
    conn.set_busy(true);
    let idle = IdleOnDrop(conn);
    if let Some(auth) = &ctx.auth {
        let creds = auth.credentials(
            req.headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        );
        let ok = match creds {
            Credentials::Remembered => Ok(true),
            Credentials::Missing => Ok(false),
            Credentials::Check { user, password } => {
                check_password(&ctx, auth, user, password).await
            }
        };
        match ok {
            Ok(true) => {}
            Ok(false) => {
                let mut r = respond(&ctx, text(401, "Unauthorized\n"), idle);
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic"),
                );
                return Ok(r);
            }
            Err(busy) => return Ok(respond(&ctx, text(503, busy), idle)),
        }
    }
    let n = Negotiation {
        accept: header(&req, "accept"),
        accept_encoding: header(&req, "accept-encoding"),
    };
    let url = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let a = answer(&ctx.shared, req.method(), url, n);
    Ok(respond(&ctx, a, idle))
}

/// bcrypt off the runtime's thread, a few at a time: a flood of wrong passwords costs
/// those threads, never a scrape with remembered credentials.
async fn check_password(
    ctx: &Ctx,
    auth: &Arc<BasicAuth>,
    user: String,
    password: Vec<u8>,
) -> Result<bool, &'static str> {
    let busy = "too many password checks at once; try again\n";
    let Ok(Ok(_permit)) = tokio::time::timeout(ctx.limits.bcrypt_wait, ctx.bcrypt.acquire()).await
    else {
        return Err(busy);
    };
    let auth = Arc::clone(auth);
    tokio::task::spawn_blocking(move || auth.verify(&user, &password))
        .await
        .map_err(|_| busy)
}

fn respond(ctx: &Ctx, a: Answer, idle: IdleOnDrop) -> Response<Body> {
    let mut r = Response::new(Body::new(a.body, Some(idle)));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    if a.gzip {
        h.insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
        h.insert(
            hyper::header::VARY,
            HeaderValue::from_static("Accept, Accept-Encoding"),
        );
    }
    for (k, v) in &ctx.headers {
        h.insert(k.clone(), v.clone());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    use crate::serve::metrics::Exposition;
    use crate::serve::web_config::parse;

    /// A server over an empty exposition (or `body` as the text format), with `limits`.
    fn server(
        limits: Limits,
        web: WebConfig,
        body: Option<Vec<u8>>,
    ) -> (SocketAddr, Arc<AtomicBool>) {
        let shared = Arc::new(Shared::new(Duration::from_secs(60)));
        if let Some(b) = body {
            let b: Arc<[u8]> = Arc::from(b);
            shared.publish(Exposition {
                openmetrics: Arc::clone(&b),
                text: Arc::clone(&b),
                openmetrics_gzip: Arc::clone(&b),
                text_gzip: b,
            });
        }
        let endpoint = Endpoint {
            listen: "127.0.0.1:0".parse().unwrap(),
            web,
            limits,
        };
        let s = Server::bind(endpoint, shared).unwrap();
        let addr = s.addr;
        let stop = Arc::new(AtomicBool::new(false));
        s.spawn(Arc::clone(&stop)).unwrap();
        (addr, stop)
    }

    fn fast_limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            ..LIMITS
        }
    }

    /// Read until EOF or error: (bytes, how long).
    fn drain(s: &mut std::net::TcpStream) -> (Vec<u8>, Duration) {
        let t = Instant::now();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        (got, t.elapsed())
    }

    fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\n{extra}\r\n").unwrap();
        String::from_utf8_lossy(&drain(&mut s).0).into_owned()
    }

    #[test]
    fn slow_heads_and_idle_keep_alive_are_closed_after_the_header_timeout() {
        let (addr, stop) = server(fast_limits(), WebConfig::default(), None);
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .unwrap();
        let (got, took) = drain(&mut slow);
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");

        // A kept-alive connection: answered, then closed once idle for the same time.
        let mut ka = std::net::TcpStream::connect(addr).unwrap();
        ka.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ka.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (got, took) = drain(&mut ka);
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}"
        );
        stop.store(true, Ordering::SeqCst);
    }

    fn small_receive_buffer(s: &std::net::TcpStream) {
        use std::os::fd::AsRawFd;
        let size: libc::c_int = 64 << 10;
        // SAFETY: setsockopt on a socket we own, with a c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUF: {}", io::Error::last_os_error());
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_by_the_write_or_request_timeout() {
        let body = vec![b'#'; 32 << 20];
        for (write_timeout, request_timeout) in [(300, 10_000), (10_000, 300)] {
            let limits = Limits {
                write_timeout: Duration::from_millis(write_timeout),
                request_timeout: Duration::from_millis(request_timeout),
                ..fast_limits()
            };
            let (addr, stop) = server(limits, WebConfig::default(), Some(body.clone()));
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            // A small receive buffer: loopback's can grow to 32 MiB and take it all.
            small_receive_buffer(&s);
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            // Read nothing while the exporter fills the socket buffers and stalls.
            std::thread::sleep(Duration::from_millis(1500));
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let (got, _) = drain(&mut s);
            assert!(
                got.len() < body.len(),
                "write {write_timeout} ms / request {request_timeout} ms: the whole body arrived"
            );
            stop.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_oversized_head_gets_431() {
        let (addr, stop) = server(fast_limits(), WebConfig::default(), None);
        let long = format!("X-Long: {}\r\n", "a".repeat(LIMITS.max_header_bytes));
        let answer = get(addr, "/healthz", &long);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        let many: String = (0..LIMITS.max_headers + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let answer = get(addr, "/healthz", &many);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn at_the_cap_idle_connections_make_room() {
        let limits = Limits {
            max_connections: Some(4),
            ..LIMITS
        };
        let (addr, stop) = server(limits, WebConfig::default(), None);
        let idle: Vec<_> = (0..20)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let t = Instant::now();
        let answer = get(addr, "/healthz", "");
        assert!(answer.starts_with("HTTP/1.0 503"), "{answer}"); // no scan yet
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        drop(idle);
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn basic_auth_guards_every_path() {
        use base64::Engine;
        // `scrape-secret`, cost 4.
        let web = parse(
            "basic_auth_users:\n  prometheus: $2b$04$xsja4UIp8fVnzRSPzVA8J.1ciY992JumQNhCKcHwqi8xaqvyvzAKu\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let (addr, stop) = server(LIMITS, web, None);
        let auth = |u: &str, p: &str| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        for path in ["/metrics", "/healthz", "/"] {
            let a = get(addr, path, "");
            assert!(a.starts_with("HTTP/1.0 401"), "{path}: {a}");
            assert!(a.contains("www-authenticate: Basic\r\n"), "{a}");
            let a = get(addr, path, &auth("prometheus", "wrong"));
            assert!(a.starts_with("HTTP/1.0 401"), "{path}: {a}");
        }
        for _ in 0..2 {
            // The second time from memory, not bcrypt.
            let a = get(addr, "/metrics", &auth("prometheus", "scrape-secret"));
            assert!(a.starts_with("HTTP/1.0 200"), "{a}");
            assert!(a.contains("x-frame-options: deny\r\n"), "{a}");
        }
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn a_stalled_write_times_out() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().await.unwrap();
            let mut w = WriteTimeout::new(s, Duration::from_millis(200));
            let buf = vec![0u8; 1 << 16];
            let t = Instant::now();
            let err = loop {
                let r = std::future::poll_fn(|cx| Pin::new(&mut w).poll_write(cx, &buf)).await;
                if let Err(e) = r {
                    break e;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "never stalled");
            };
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn negotiates_gzip() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("identity, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn eviction_spares_busy_connections_and_takes_the_oldest_idle() {
        let r = Registry::default();
        let (_, a) = r.insert();
        std::thread::sleep(Duration::from_millis(2));
        let (_, b) = r.insert();
        std::thread::sleep(Duration::from_millis(2));
        let (_, c) = r.insert();
        a.set_busy(true);
        assert!(r.evict_oldest_idle());
        assert_eq!(r.len(), 2);
        // b was the oldest idle one: it was told to close.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), b.kill.notified())
                .await
                .expect("b evicted");
        });
        c.set_busy(true);
        assert!(!r.evict_oldest_idle(), "only busy connections are left");
        c.set_busy(false);
        assert!(r.evict_oldest_idle());
        assert_eq!(r.len(), 1);
    }
}
