//! STOMP heart-beats: EOLs sent at the negotiated rate, and peers that fall silent closed.
//!
//! One thread per hub ticks every [`TICK`]: cheap next to the heart-beat periods the broker
//! negotiates (seconds), and no per-session timer or thread.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use sockeye::DataKind;
use tracing::info;

use super::Hub;
use crate::broker::SessionId;

/// How often the heart-beat thread looks at the sessions.
pub const TICK: Duration = Duration::from_millis(250);

/// Silence allowed beyond the negotiated period before a peer counts as gone: half a period,
/// at least a second (network jitter, a busy client).
pub fn tolerance(expect_every_ms: u64) -> u64 {
    (expect_every_ms / 2).max(1000)
}

/// Starts the heart-beat thread; it ends when the hub is dropped or stopped.
pub fn spawn(hub: &Arc<Hub>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let weak = Arc::downgrade(hub);
    std::thread::Builder::new()
        .name("stomp-heartbeat".into())
        .spawn(move || run(weak))
}

fn run(hub: Weak<Hub>) {
    let beat = Bytes::from_static(b"\n");
    // When each session is next due a heart-beat from us (ms since the hub started).
    let mut next_beat: HashMap<SessionId, u64> = HashMap::new();
    loop {
        std::thread::sleep(TICK);
        let Some(hub) = hub.upgrade() else { return };
        if hub.stopping.load(Ordering::SeqCst) {
            return;
        }
        hub.run_due();
        let now = hub.elapsed_ms();
        let Ok(peers) = hub.peers.read() else { return };
        hub.let_go_stuck(&peers);
        next_beat.retain(|id, _| peers.contains_key(id));
        for (id, peer) in peers.iter() {
            let send_every = peer.send_every.load(Ordering::Relaxed);
            if send_every > 0 {
                let due = next_beat.entry(*id).or_insert(now + send_every);
                if *due <= now {
                    *due = now + send_every;
                    let _ = peer
                        .handle
                        .send_parts(DataKind::Text, Bytes::new(), beat.clone());
                }
            }
            let expect = peer.expect_every.load(Ordering::Relaxed);
            let silent = now.saturating_sub(peer.last_in.load(Ordering::Relaxed));
            if expect > 0 && silent > expect + tolerance(expect) {
                info!(
                    session = id,
                    silent_ms = silent,
                    expect_ms = expect,
                    "STOMP heart-beat timeout: closing"
                );
                // Reset so the close is posted once while it takes effect.
                peer.expect_every.store(0, Ordering::Relaxed);
                let _ = peer.handle.close(1002, "STOMP heart-beat timeout");
            }
        }
    }
}
