//! Limits on client connections, so that slow or idle clients cannot hold the server: a request
//! head must arrive within a deadline (counted from the connection's start or the end of its
//! previous response, so it also ends idle keep-alive connections; kept by [`CoarseTimer`]), and
//! past a cap on concurrent connections a new one is answered 503 and closed at once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the server treats client connections.
#[derive(Clone, Debug)]
pub struct ConnectionOptions {
    /// Time for a complete request head, from the connection's start or the end of the previous
    /// response on it (the keep-alive idle limit). Past it the connection is closed.
    pub header_timeout: Duration,
    /// Time for a request body to arrive whole, once its head has; past it the answer is 408
    /// and the connection is closed.
    pub body_timeout: Duration,
    /// Connections served at once; past it a new connection gets a 503 and is closed.
    pub max_connections: usize,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

/// Descriptors kept for everything but client connections: the database, the audit journal,
/// function workers' pipes, TLS files.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft limit on open files to the hard limit, and returns the number of connections
/// that fits under it (at most `wanted`).
pub fn fit_connections(wanted: usize) -> usize {
    let open_files = raise_open_file_limit();
    match open_files {
        Some(n) => {
            let fits = usize::try_from(n.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
            if fits < wanted {
                tracing::warn!(
                    open_files = n,
                    max_connections = fits,
                    "the open-file limit allows fewer connections than configured; raise it (ulimit -n, LimitNOFILE=) to serve more"
                );
            }
            wanted.min(fits)
        }
        None => wanted,
    }
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the resulting soft limit.
#[allow(unsafe_code)]
fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write a live, initialised struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// What a connection past the cap reads before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: application/json\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 113\r\n\r\n\
    {\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server has too many open connections; try again shortly\"}}";

/// Admits a connection only while fewer than the cap are open; the permit travels with the
/// stream and is given back when the connection closes.
#[derive(Clone)]
pub struct CapAcceptor<A> {
    inner: A,
    open: Arc<Semaphore>,
    /// Whether a refused connection may be told why in plain HTTP (not on a TLS listener).
    plain: bool,
}

impl<A> CapAcceptor<A> {
    pub fn new(inner: A, max_connections: usize, plain: bool) -> Self {
        CapAcceptor { inner, open: Arc::new(Semaphore::new(max_connections.max(1))), plain }
    }
}

impl<A, S> Accept<TcpStream, S> for CapAcceptor<A>
where
    A: Accept<Counted, S> + Clone + Send + 'static,
    A::Future: Send,
    A::Stream: Send,
    A::Service: Send,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        match self.open.clone().try_acquire_owned() {
            Ok(permit) => {
                // Answers are written whole; Nagle's algorithm would only delay them.
                let _ = stream.set_nodelay(true);
                let inner = self.inner.clone();
                Box::pin(async move { inner.accept(Counted { stream, _permit: permit }, service).await })
            }
            Err(_) => {
                // Never wait on a client that does not read: one non-blocking write, then close.
                if self.plain {
                    let _ = stream.try_write(OVER_CAPACITY);
                }
                Box::pin(std::future::ready(Err(io::Error::other("connection refused: too many open connections"))))
            }
        }
    }
}

/// A client connection that holds one of the open-connection permits.
pub struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How often [`CoarseTimer`]'s deadlines are checked: a deadline passes up to this much late.
pub const DEADLINE_TICK: Duration = Duration::from_millis(100);

/// Where the sleeps of every [`CoarseTimer`] wait, in shards (chosen by a slot's address, so
/// that requests on other cores rarely meet on one lock).
const DEADLINE_SHARDS: usize = 16;

static DEADLINES: [Mutex<Vec<Arc<Slot>>>; DEADLINE_SHARDS] = [const { Mutex::new(Vec::new()) }; DEADLINE_SHARDS];

/// Whether the thread that checks [`DEADLINES`] started (once per process).
static SWEEPER: OnceLock<Result<(), String>> = OnceLock::new();

/// One waiting sleep.
struct Slot {
    deadline: Instant,
    fired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sweeping thread: a panic in one sweep (a waker's) does not end it.
fn sweep_forever() {
    loop {
        std::thread::sleep(DEADLINE_TICK);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sweep(&DEADLINES, Instant::now())));
    }
}

/// Fires the sleeps whose deadline has passed and forgets those dropped.
fn sweep(shards: &[Mutex<Vec<Arc<Slot>>>], now: Instant) {
    let mut due = Vec::new();
    for shard in shards {
        lock(shard).retain(|slot| {
            if Arc::strong_count(slot) == 1 {
                // Its sleep is gone: the request head arrived in time.
                return false;
            }
            if slot.deadline <= now {
                due.push(slot.clone());
                return false;
            }
            true
        });
    }
    for slot in due {
        slot.fired.store(true, Ordering::Release);
        if let Some(waker) = lock(&slot.waker).take() {
            waker.wake();
        }
    }
}

/// hyper's timer for the request-head deadline ([`ConnectionOptions::header_timeout`]), made
/// for a deadline that is set for every request and almost never reached. A sleep costs a slot
/// in a shard's list when it first waits, and nothing when it is dropped; one thread checks the
/// lists every [`DEADLINE_TICK`], firing what is due and forgetting what was dropped. (tokio's
/// timer, precise to the millisecond, enters and leaves its wheel under a lock for every
/// request instead.)
#[derive(Clone, Copy, Debug)]
pub struct CoarseTimer(());

impl CoarseTimer {
    /// The timer, once the thread that checks its deadlines runs (started at the first call).
    /// An error means it could not start: the caller must use another timer, or no deadline
    /// would ever pass.
    pub fn start() -> io::Result<CoarseTimer> {
        let started = SWEEPER.get_or_init(|| {
            std::thread::Builder::new()
                .name("agentvault-deadlines".into())
                .spawn(sweep_forever)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        match started {
            Ok(()) => Ok(CoarseTimer(())),
            Err(e) => Err(io::Error::other(format!("the thread that keeps connection deadlines did not start: {e}"))),
        }
    }
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let now = Instant::now();
        // A duration past what an instant holds is as good as never.
        let never = Duration::from_secs(100 * 365 * 86_400);
        self.sleep_until(now.checked_add(duration).or_else(|| now.checked_add(never)).unwrap_or(now))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep { deadline, slot: None })
    }
}

/// A sleep of [`CoarseTimer`].
struct CoarseSleep {
    deadline: Instant,
    /// Its entry in the lists, once it has waited.
    slot: Option<Arc<Slot>>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match &this.slot {
            None => {
                let slot = Arc::new(Slot {
                    deadline: this.deadline,
                    fired: AtomicBool::new(false),
                    waker: Mutex::new(Some(cx.waker().clone())),
                });
                let shard = (Arc::as_ptr(&slot) as usize / 64) % DEADLINE_SHARDS;
                lock(&DEADLINES[shard]).push(slot.clone());
                this.slot = Some(slot);
                Poll::Pending
            }
            Some(slot) => {
                if slot.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                {
                    let mut waker = lock(&slot.waker);
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                }
                // Fired while the waker was being replaced: the sweep took the old one.
                if slot.fired.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
            }
        }
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn slot(deadline: Instant, waker: &Arc<Counter>) -> Arc<Slot> {
        let waker = Waker::from(waker.clone());
        Arc::new(Slot { deadline, fired: AtomicBool::new(false), waker: Mutex::new(Some(waker)) })
    }

    #[test]
    fn a_sweep_fires_what_is_due_keeps_what_is_not_and_forgets_what_was_dropped() {
        let now = Instant::now();
        let woken = Arc::new(Counter(AtomicUsize::new(0)));
        let (due, later) = (slot(now - Duration::from_millis(1), &woken), slot(now + Duration::from_secs(1), &woken));
        let dropped = slot(now - Duration::from_secs(1), &woken);
        let shards = [Mutex::new(vec![due.clone(), dropped.clone()]), Mutex::new(vec![later.clone()])];
        drop(dropped);
        sweep(&shards, now);
        assert!(due.fired.load(Ordering::SeqCst));
        assert!(!later.fired.load(Ordering::SeqCst));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "only the due sleep is woken");
        assert!(lock(&shards[0]).is_empty(), "the fired and the dropped sleep are forgotten");
        assert_eq!(lock(&shards[1]).len(), 1);
        drop(later);
        sweep(&shards, now);
        assert!(lock(&shards[1]).is_empty());
    }

    #[tokio::test]
    async fn a_sleep_ends_after_its_deadline() {
        use hyper::rt::Timer;
        let started = Instant::now();
        let timer = CoarseTimer::start().expect("the sweeping thread starts");
        timer.sleep(Duration::from_millis(150)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "ended early: {took:?}");
        // Woken by the sweeping thread (generous bound: a loaded machine may delay it).
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn the_over_capacity_answer_has_the_right_length() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let parsed: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(parsed["error"]["code"], "too_many_connections");
    }
}
