//! The HAProxy agent-check listener (`[verdict] agent_check_listen`): one line in (the
//! `agent-send` string, or nothing), one line out (verdict/agent_check.rs), then close.
//! Hostile input is bounded like the HTTP server's: at most `MAX_CONNECTIONS` open, with
//! the same eviction of connections idle past a grace (slots.rs; a connection refused
//! at the cap goes unanswered, which HAProxy takes as no news), a request of at most 256
//! bytes, and `WAIT` for it before the node's verdict is answered (HAProxy without
//! agent-send sends nothing).
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::slots::{Slot, Slots};
use crate::{snapshot::Published, verdict::agent_check};

pub const MAX_CONNECTIONS: usize = 64;
/// How long a request line may take. HAProxy sends it as soon as it connects; its own
/// timeout is `agent-inter` (2 s by default), so the answer comes well before.
const WAIT: Duration = Duration::from_millis(500);
/// A client that does not read its answer is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves forever; accept errors are logged and retried.
pub async fn serve(listener: TcpListener, snapshot: Published) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let (stream, peer, slot) = slots.accept(&listener, "agent-check").await;
        let snapshot = snapshot.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &snapshot, slot).await {
                tracing::debug!(%peer, error = %e, "agent-check connection failed");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    snapshot: &Published,
    mut slot: Slot,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64);
    let read = tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 128];
        while !agent_check::complete(&buf) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    tokio::select! {
        _ = read => {}
        _ = &mut slot.evicted => return Err(std::io::Error::other("closed for a newer connection")),
    }
    slot.got_request();
    let line = agent_check::answer(agent_check::parse(&buf), &snapshot.read().verdicts);
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(line.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
