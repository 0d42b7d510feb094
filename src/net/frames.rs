//! Frame streams for `--transport stream` (`docs/PROTOCOL.md` §2.1): the reliable baseline
//! rtq's datagrams are compared against. The sender writes each frame on a unidirectional
//! stream of its own and resets the stream if the frame's deadline passes before the receiver
//! has acknowledged all of it; the receiver reads the streams' records into its session.
//!
//! Both sides are bounded: at most [`MAX_FRAME_STREAMS`] frames are in flight (the receiver
//! grants no more concurrent streams, and the sender keeps further frames in its session's
//! queue, where the deadline applies), and a stream reader holds at most one record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use crate::session::Outgoing;
use crate::wire::stream::{FrameCollector, MAX_RECORD, RECORD_PREFIX, RecordDecoder};

/// Frame streams in flight at most (sender: not yet acknowledged in full; receiver: the
/// concurrent unidirectional streams it grants).
pub const MAX_FRAME_STREAMS: u32 = 256;

/// Records waiting between the stream readers and the receiver's session.
const RECORD_QUEUE: usize = 1024;

/// The priority of a frame's stream: older frames first (QUIC would otherwise share the path
/// among all frames in flight, delaying each), and all below the control stream's 0.
pub fn frame_priority(seq: u64) -> i32 {
    // Wraps after 2^30 frames (a year at 30 fps): one frame then briefly outranks its elders.
    -1 - i32::try_from(seq % (1 << 30)).unwrap_or(0)
}

/// The sender's side: collects each frame's fragments and writes the frame on its own stream.
pub(crate) struct FrameWriter {
    conn: quinn::Connection,
    tasks: JoinSet<()>,
    frame: FrameCollector,
    resets: Arc<AtomicU64>,
}

impl FrameWriter {
    pub(crate) fn new(conn: quinn::Connection) -> Self {
        Self {
            conn,
            tasks: JoinSet::new(),
            frame: FrameCollector::new(),
            resets: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether another frame may start (fewer than [`MAX_FRAME_STREAMS`] in flight).
    pub(crate) fn has_room(&mut self) -> bool {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.len() < MAX_FRAME_STREAMS as usize
    }

    /// Whether the next fragment may be taken: one of the frame being collected, or the first
    /// of a frame there is room for.
    pub(crate) fn can_take(&mut self) -> bool {
        self.frame.is_collecting() || self.has_room()
    }

    /// Takes one fragment; the frame's last one sends the frame. Returns false for a datagram
    /// that belongs to no frame (the session makes none in stream mode).
    pub(crate) fn push(&mut self, out: &Outgoing) -> bool {
        let Some(seq) = out.frame else {
            return false;
        };
        if let Some(stream) = self.frame.push(seq, &out.data, out.last_of_frame) {
            self.spawn(seq, stream, out.deadline);
        }
        true
    }

    /// Frames reset at their deadline since the last call.
    pub(crate) fn take_resets(&self) -> u64 {
        self.resets.swap(0, Ordering::Relaxed)
    }

    fn spawn(&mut self, seq: u64, data: Bytes, deadline: Instant) {
        let conn = self.conn.clone();
        let resets = Arc::clone(&self.resets);
        self.tasks.spawn(async move {
            let deadline = tokio::time::Instant::from_std(deadline);
            let Ok(Ok(mut stream)) = tokio::time::timeout_at(deadline, conn.open_uni()).await
            else {
                // No stream before the deadline (or the connection is gone): the frame is lost.
                resets.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = stream.set_priority(frame_priority(seq));
            let delivered = tokio::time::timeout_at(deadline, async {
                stream.write_all(&data).await.ok()?;
                stream.finish().ok()?;
                // Resolves once the receiver has acknowledged every byte (or stopped it).
                stream.stopped().await.ok()
            })
            .await;
            if delivered.is_err() {
                debug!(seq, "frame stream reset at its deadline");
                let _ = stream.reset(0u32.into());
                resets.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// What a stream reader hands the receiver's session.
#[derive(Debug)]
pub(crate) enum StreamItem {
    /// One record: a fragment.
    Record(Bytes),
    /// A stream was given up for invalid framing.
    Bad,
}

/// The receiver's side: accepts frame streams and reads their records, in tasks of their own.
pub(crate) struct FrameReader {
    rx: mpsc::Receiver<StreamItem>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl FrameReader {
    pub(crate) fn spawn(conn: quinn::Connection) -> Self {
        let (tx, rx) = mpsc::channel(RECORD_QUEUE);
        let acceptor = tokio::spawn(async move {
            let mut readers = JoinSet::new();
            loop {
                tokio::select! {
                    s = conn.accept_uni() => match s {
                        Ok(recv) => {
                            readers.spawn(read_stream(recv, tx.clone()));
                        }
                        Err(_) => break,
                    },
                    Some(_) = readers.join_next(), if !readers.is_empty() => {}
                }
            }
            // Dropping the set stops the readers.
        });
        Self { rx, acceptor }
    }

    /// The next record (or failed stream); pending forever once the connection is gone.
    pub(crate) async fn recv(&mut self) -> StreamItem {
        match self.rx.recv().await {
            Some(item) => item,
            None => std::future::pending().await,
        }
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn read_stream(mut recv: quinn::RecvStream, tx: mpsc::Sender<StreamItem>) {
    let mut dec = RecordDecoder::new();
    loop {
        match recv.read_chunk(MAX_RECORD + RECORD_PREFIX, true).await {
            Ok(Some(chunk)) => match dec.push(&chunk.bytes) {
                Ok(records) => {
                    for r in records {
                        if tx.send(StreamItem::Record(r)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    debug!(%e, "frame stream given up");
                    let _ = recv.stop(0u32.into());
                    let _ = tx.send(StreamItem::Bad).await;
                    return;
                }
            },
            Ok(None) => {
                if dec.finish().is_err() {
                    let _ = tx.send(StreamItem::Bad).await;
                }
                return;
            }
            // Reset by the sender at the frame's deadline, or the connection ended: what
            // arrived of the frame is already with the session.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_frames_have_higher_priority_and_all_rank_below_control() {
        assert_eq!(frame_priority(0), -1);
        assert!(frame_priority(1) < frame_priority(0));
        assert!(frame_priority(1000) < frame_priority(999));
        assert!(frame_priority(u64::MAX) < 0);
        // The oldest-first order holds until the wrap, which starts again just below control.
        assert_eq!(frame_priority((1 << 30) - 1), -(1 << 30));
        assert_eq!(frame_priority(1 << 30), -1);
    }
}
