//! One HTTP connection's time limits, beside hyper: which phase it is in (waiting for a
//! request, reading its head, answering it) and the deadline of that phase. hyper's own
//! header timeout also runs while a kept-alive connection idles, which would close
//! Prometheus' connection between scrapes; here the idle wait has a limit of its own.
//! The phase also tells the connection's slot (slots.rs) when it may be evicted: while it
//! waits or reads a head, never while it is answered.
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

use super::slots::Slot;

/// A new connection's first request head, and any head once its first byte is in, must
/// arrive within this: a slow client (slowloris) is closed, not waited for.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer (encoding and writing it) must be out within this.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept-alive connection may idle this long between requests: above Prometheus' usual
/// scrape intervals (up to a minute), so its connection is reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No byte of the next request yet; `first`: none answered on this connection.
    Waiting {
        first: bool,
    },
    Head,
    Answering,
}

#[derive(Debug, Clone, Copy)]
struct State {
    kind: Kind,
    since: Instant,
    /// Bumped on every change, so the driver sees a change it slept through.
    seq: u64,
}

/// The phase, shared by the driver, the IO wrapper, the service and the answer's body.
pub struct Phase {
    state: Mutex<State>,
    changed: Notify,
}

impl Phase {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                kind: Kind::Waiting { first: true },
                since: Instant::now(),
                seq: 0,
            }),
            changed: Notify::new(),
        })
    }

    fn get(&self) -> State {
        *crate::sync::lock(&self.state)
    }

    fn set(&self, kind: Kind) {
        let mut s = crate::sync::lock(&self.state);
        *s = State {
            kind,
            since: Instant::now(),
            seq: s.seq + 1,
        };
        drop(s);
        self.changed.notify_one();
    }

    /// Bytes came in: a head has begun, if none was under way.
    fn bytes_in(&self) {
        if matches!(self.get().kind, Kind::Waiting { .. }) {
            self.set(Kind::Head);
        }
    }

    /// A request head is in (hyper called the service).
    pub fn answering(&self) {
        self.set(Kind::Answering);
    }

    /// The answer is out (its body dropped): wait for the next request.
    fn answered(&self) {
        self.set(Kind::Waiting { first: false });
    }
}

impl State {
    fn deadline(&self) -> Instant {
        self.since
            + match self.kind {
                Kind::Waiting { first: true } | Kind::Head => HEAD_TIMEOUT,
                Kind::Waiting { first: false } => IDLE_TIMEOUT,
                Kind::Answering => ANSWER_TIMEOUT,
            }
    }
}

/// Why a connection ended other than by the client or an HTTP error.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("closed for a newer connection")]
    Evicted,
    #[error("timed out {0:?}")]
    TimedOut(&'static str),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Runs the connection `conn` (hyper's future) until it ends, its phase's deadline passes
/// or its slot is evicted while it waits.
pub async fn drive(
    conn: impl Future<Output = hyper::Result<()>>,
    phase: &Phase,
    mut slot: Slot,
) -> Result<(), Ended> {
    tokio::pin!(conn);
    let mut seen = phase.get().seq;
    loop {
        let state = phase.get();
        if state.seq != seen {
            seen = state.seq;
            match state.kind {
                Kind::Answering => slot.got_request(),
                Kind::Waiting { .. } => slot.idle(),
                Kind::Head => {}
            }
        }
        let evictable = state.kind != Kind::Answering;
        tokio::select! {
            biased;
            done = &mut conn => return done.map_err(Ended::from),
            _ = &mut slot.evicted, if evictable => return Err(Ended::Evicted),
            _ = phase.changed.notified() => {}
            _ = tokio::time::sleep_until(state.deadline()) => {
                if phase.get().seq == state.seq {
                    return Err(Ended::TimedOut(match state.kind {
                        Kind::Waiting { first: true } | Kind::Head => "reading a request head",
                        Kind::Waiting { first: false } => "idle between requests",
                        Kind::Answering => "writing an answer",
                    }));
                }
            }
        }
    }
}

/// The connection's IO, telling the phase when bytes come in.
pub struct Watched<I> {
    io: I,
    phase: Arc<Phase>,
}

impl<I> Watched<I> {
    pub fn new(io: I, phase: Arc<Phase>) -> Self {
        Self { io, phase }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_in();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An answer's body, whole in memory; dropping it (hyper does once it is written, or not
/// to be written: HEAD) ends the answering phase.
pub struct Reply {
    data: Option<Bytes>,
    phase: Option<Arc<Phase>>,
}

impl Reply {
    pub fn new(data: Bytes, phase: Arc<Phase>) -> Self {
        Self {
            data: Some(data),
            phase: Some(phase),
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(phase) = self.phase.take() {
            phase.answered();
        }
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
