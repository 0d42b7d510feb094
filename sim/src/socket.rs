//! The simulated network in process: two quinn sockets ([`AsyncUdpSocket`]) joined by a live
//! path each way, so a sender and a receiver in one process talk through the impairments with
//! no second process and no real network.
//!
//! The sockets report `may_fragment() == false`: quinn turns path-MTU discovery off on sockets
//! that may fragment, and rtq's fragments follow the discovered size.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::config::LinkConfig;
use crate::link::{Path, PathReport};
use crate::realtime::{LiveLink, Sink};

/// Datagrams a socket holds for its endpoint at most (like a kernel socket buffer; beyond it
/// arriving datagrams are dropped and counted).
pub const INBOX_CAPACITY: usize = 8192;

#[derive(Debug, Default)]
struct InboxState {
    queue: VecDeque<Vec<u8>>,
    waker: Option<Waker>,
    overflow: u64,
}

#[derive(Debug, Default)]
struct Inbox(Mutex<InboxState>);

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct InboxSink(Arc<Inbox>);

impl Sink for InboxSink {
    fn deliver(&mut self, _at: Instant, data: Vec<u8>) {
        let mut st = self.0.lock();
        if st.queue.len() >= INBOX_CAPACITY {
            st.overflow += 1;
            return;
        }
        st.queue.push_back(data);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

/// One end of the simulated network.
pub struct SimSocket {
    local: SocketAddr,
    peer: SocketAddr,
    out: Arc<LiveLink>,
    inbox: Arc<Inbox>,
}

impl fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSocket")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for SimSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if transmit.destination != self.peer {
            // Nothing else exists on this network: the datagram is lost, as to an absent host.
            return Ok(());
        }
        match transmit.segment_size {
            Some(size) if size > 0 => {
                for seg in transmit.contents.chunks(size) {
                    self.out.push(seg.to_vec());
                }
            }
            _ => self.out.push(transmit.contents.to_vec()),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.inbox.lock();
        if st.queue.is_empty() {
            st.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            let Some(data) = st.queue.pop_front() else {
                break;
            };
            let len = data.len().min(buf.len());
            buf[..len].copy_from_slice(&data[..len]);
            *m = RecvMeta {
                addr: self.peer,
                len,
                stride: len,
                ecn: None,
                dst_ip: None,
            };
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// Address of the simulated receiver.
pub const RECEIVER_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    4433,
);
/// Address of the simulated sender.
pub const SENDER_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    50_000,
);

/// Two sockets joined by a path each way.
#[derive(Debug)]
pub struct SimNet {
    /// The sender's socket (at [`SENDER_ADDR`]).
    pub sender: Arc<SimSocket>,
    /// The receiver's socket (at [`RECEIVER_ADDR`]).
    pub receiver: Arc<SimSocket>,
    forward: Arc<LiveLink>,
    reverse: Arc<LiveLink>,
    inboxes: [Arc<Inbox>; 2],
}

impl SimNet {
    /// Joins two sockets with `forward` (sender → receiver) and `reverse` paths, each with its
    /// schedule of parameter changes.
    pub fn new(
        forward: (Path, Vec<(Instant, LinkConfig)>),
        reverse: (Path, Vec<(Instant, LinkConfig)>),
    ) -> io::Result<Self> {
        let to_receiver = Arc::new(Inbox::default());
        let to_sender = Arc::new(Inbox::default());
        let fwd = Arc::new(LiveLink::spawn(
            forward.0,
            forward.1,
            InboxSink(Arc::clone(&to_receiver)),
            "forward",
        )?);
        let rev = Arc::new(LiveLink::spawn(
            reverse.0,
            reverse.1,
            InboxSink(Arc::clone(&to_sender)),
            "reverse",
        )?);
        let sender = Arc::new(SimSocket {
            local: SENDER_ADDR,
            peer: RECEIVER_ADDR,
            out: Arc::clone(&fwd),
            inbox: Arc::clone(&to_sender),
        });
        let receiver = Arc::new(SimSocket {
            local: RECEIVER_ADDR,
            peer: SENDER_ADDR,
            out: Arc::clone(&rev),
            inbox: Arc::clone(&to_receiver),
        });
        Ok(Self {
            sender,
            receiver,
            forward: fwd,
            reverse: rev,
            inboxes: [to_receiver, to_sender],
        })
    }

    /// Reports of both directions, and datagrams dropped at full socket inboxes (forward,
    /// reverse).
    pub fn reports(&self) -> (PathReport, PathReport, [u64; 2]) {
        let overflow = [
            self.inboxes[0].lock().overflow,
            self.inboxes[1].lock().overflow,
        ];
        (self.forward.report(), self.reverse.report(), overflow)
    }
}
