//! The connection cap both listeners (HTTP, HAProxy's agent-check) keep: at most `max`
//! connections open, so no client can take the file descriptors the agent needs to read
//! cgroups and /proc and to save its state. At the cap, a new connection evicts the oldest
//! one that has waited more than `GRACE` without sending its request, or is closed at once
//! if none has. Real clients (Prometheus, the kubelet, HAProxy) send their request as soon
//! as they connect, so idle connections held open on purpose are the ones that go. A
//! kept-alive HTTP connection waits again after each answer (`Slot::idle`), and may be
//! evicted again from then on.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// How long a new connection has to send its request before a newer one may evict it:
/// ample for a client on the same network, and it keeps a burst of connections from
/// evicting one that has not yet been read.
pub const GRACE: Duration = Duration::from_millis(250);

pub struct Slots {
    max: usize,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct Shared {
    /// The connections still waiting for their request, oldest first; dropping a sender
    /// closes that connection.
    waiting: Mutex<VecDeque<Waiting>>,
    open: AtomicUsize,
}

struct Waiting {
    id: u64,
    since: Instant,
    _evict: oneshot::Sender<()>,
}

/// One open connection, counted until dropped. `evicted` resolves when a newer connection
/// took its place before its request came in: the connection is to be closed then.
pub struct Slot {
    shared: Arc<Shared>,
    id: u64,
    pub evicted: oneshot::Receiver<()>,
}

impl Slots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            shared: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// The next connection `listener` accepts and a slot admits, with its peer. Accept
    /// errors (out of descriptors, say) are logged and retried after a pause; a connection
    /// no slot admits is closed. `what` names the listener in the log.
    pub async fn accept(
        &self,
        listener: &TcpListener,
        what: &str,
    ) -> (TcpStream, SocketAddr, Slot) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a {what} connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Answers go out whole at once: without this, a TLS answer written after the
            // session ticket waits on the client's delayed ACK (40 ms per new connection).
            let _ = stream.set_nodelay(true);
            match self.admit() {
                Some(slot) => return (stream, peer, slot),
                // Every slot is busy or just opened: closing this one costs nobody a request.
                None => tracing::debug!(%peer, "{what} connection closed: {} open", self.max),
            }
        }
    }

    /// A slot for a connection just accepted, or None: close it, every slot is busy or
    /// just opened.
    fn admit(&self) -> Option<Slot> {
        if self.shared.open.load(Ordering::Relaxed) >= self.max && !self.evict_oldest() {
            return None;
        }
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            shared: self.shared.clone(),
            id,
            evicted: self.shared.wait(id),
        })
    }

    /// Closes the oldest connection that has waited past GRACE for its request; false if
    /// there is none.
    fn evict_oldest(&self) -> bool {
        let mut waiting = self.shared.lock();
        let stale = waiting.front().is_some_and(|w| w.since.elapsed() > GRACE);
        stale && waiting.pop_front().is_some()
    }
}

impl Shared {
    /// Queues connection `id` as waiting for a request, from now.
    fn wait(&self, id: u64) -> oneshot::Receiver<()> {
        let (evict, evicted) = oneshot::channel();
        self.lock().push_back(Waiting {
            id,
            since: Instant::now(),
            _evict: evict,
        });
        evicted
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        crate::sync::lock(&self.waiting)
    }
}

impl Slot {
    /// The request is in: this connection can no longer be evicted.
    pub fn got_request(&self) {
        let id = self.id;
        self.shared.lock().retain(|w| w.id != id);
    }

    /// The answer is out and the connection waits for its next request: evictable again
    /// once idle past the grace. `evicted` is armed anew.
    pub fn idle(&mut self) {
        self.got_request();
        self.evicted = self.shared.wait(self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.got_request();
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_only_a_connection_idle_past_the_grace_is_evicted() {
        let slots = Slots::new(2);
        let mut first = slots.admit().expect("room");
        let second = slots.admit().expect("room");
        assert!(
            slots.admit().is_none(),
            "full, and nobody idle past the grace"
        );
        second.got_request();
        std::thread::sleep(GRACE + Duration::from_millis(20));
        let third = slots.admit().expect("the idle first one makes room");
        assert!(
            matches!(
                first.evicted.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "the first is told to close"
        );
        drop(first); // as its task does on the eviction
        assert!(slots.admit().is_none(), "second is serving, third is new");
        drop(second);
        assert!(
            slots.admit().is_some(),
            "a closed connection frees its slot"
        );
        drop(third);
    }

    #[test]
    fn a_kept_alive_connection_is_evictable_again_once_idle() {
        let slots = Slots::new(1);
        let mut only = slots.admit().expect("room");
        only.got_request();
        std::thread::sleep(GRACE + Duration::from_millis(20));
        assert!(slots.admit().is_none(), "serving: not evictable");
        only.idle();
        assert!(slots.admit().is_none(), "idle, but within the grace");
        std::thread::sleep(GRACE + Duration::from_millis(20));
        let next = slots.admit().expect("idle past the grace: evicted");
        assert!(matches!(
            only.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        drop((only, next));
    }
}
