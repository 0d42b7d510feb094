//! Frame input from a byte stream, and frame output to a byte stream.
//!
//! **Input** (`rtq-send --input PATH|-`): bytes are cut into frames as they arrive — each read
//! returns what the stream has (at most `chunk` bytes) and that becomes a frame, captured at the
//! time of the read. A pipe from a live encoder (`ffmpeg ... -f mpegts -`) therefore yields
//! frames as the encoder writes them. Reading stops while the sender's queue is full, so a file
//! read faster than the network goes is paced by it instead of dropped: reading pauses while
//! 256 KiB wait in the sender's queue.
//!
//! **Gateway mode** (as srt-live-transmit's): `rtq-send --input udp://ADDR` binds `ADDR` and
//! takes each UDP datagram that arrives as one frame, captured on arrival; `rtq-recv --output
//! udp://ADDR` sends each played frame to `ADDR` as one datagram. A live UDP input is never
//! paused (it cannot be: the sender would only lose datagrams in the socket, uncounted), so its
//! frames meet the sender's queue limits and deadlines, which count what they drop.
//!
//! **Output** (`rtq-recv --output PATH|-`): played frames are written in playout order, each in
//! full, and flushed when no more frames are waiting. The queue to the writer is bounded (1024
//! frames, 64 MiB); a consumer that falls behind loses frames at the output (counted as
//! `frames.output_dropped`) rather than stalling the network side. With several sessions, a path containing
//! `{id}` gives each session its own file; otherwise the first session to play a frame owns the
//! output until it ends, and other sessions' frames are discarded (with a warning).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::source::SourceFrame;

/// Where frames come from or go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    /// Standard input or output (`-`).
    Std,
    /// A file.
    Path(PathBuf),
    /// UDP datagrams (`udp://HOST:PORT`): received on that address (input), sent to it
    /// (output), a frame each.
    Udp(std::net::SocketAddr),
}

/// Largest UDP payload (IPv4: 65535 − 20 − 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

impl Stream {
    /// Whether frames arrive live, at the producer's pace (UDP), rather than as fast as the
    /// sender reads them (files, pipes).
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Udp(_))
    }
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("empty path: use a file path, or - for standard input/output".into()),
            "-" => Ok(Self::Std),
            _ => match s.strip_prefix("udp://") {
                Some(addr) => {
                    use std::net::ToSocketAddrs;
                    // `udp://:5000` is every interface's port 5000.
                    let full = if addr.starts_with(':') {
                        format!("0.0.0.0{addr}")
                    } else {
                        addr.to_string()
                    };
                    full.to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.next())
                        .map(Self::Udp)
                        .ok_or_else(|| {
                            format!("`{s}`: use udp://HOST:PORT, e.g. udp://127.0.0.1:5000 or udp://:5000")
                        })
                }
                None => Ok(Self::Path(PathBuf::from(s))),
            },
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Std => f.write_str("-"),
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

/// Frames read from an input stream, as they arrive.
pub struct Input {
    rx: mpsc::Receiver<std::io::Result<SourceFrame>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").finish_non_exhaustive()
    }
}

/// Frames read ahead of the sender at most.
const INPUT_AHEAD: usize = 16;

impl Input {
    /// Opens `stream` and starts reading frames of at most `chunk` bytes.
    pub async fn open(
        stream: &Stream,
        chunk: usize,
        socket_buffer: usize,
    ) -> std::io::Result<Self> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = match stream {
            Stream::Udp(addr) => return Self::udp(*addr, socket_buffer).await,
            Stream::Std => Box::new(tokio::io::stdin()),
            Stream::Path(p) => Box::new(tokio::fs::File::open(p).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open input {}: {e}", p.display()))
            })?),
        };
        Ok(Self::from_reader(reader, chunk))
    }

    /// Binds `addr` and takes each datagram that arrives as a frame (of any size up to
    /// [`MAX_UDP_PAYLOAD`]; `--frame-size` does not apply). The input never ends by itself.
    /// The socket asks for `socket_buffer` bytes of kernel buffer (`--socket-buffer`): a burst
    /// from the source must not be dropped while this task waits for a core.
    pub async fn udp(addr: std::net::SocketAddr, socket_buffer: usize) -> std::io::Result<Self> {
        let socket = super::transport::tokio_udp(addr, socket_buffer)
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot receive on udp://{addr}: {e} (is the port free, and the address this host's?)"),
                )
            })?;
        let (tx, rx) = mpsc::channel(INPUT_AHEAD);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_UDP_PAYLOAD + 1];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((0, _)) => {}
                    Ok((n, _)) => {
                        let frame = SourceFrame {
                            capture: super::now(),
                            keyframe: false,
                            data: Bytes::copy_from_slice(&buf[..n]),
                        };
                        if tx.send(Ok(frame)).await.is_err() {
                            break;
                        }
                    }
                    // An ICMP error from an earlier send, or a signal: not the input's end.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::Interrupted
                                | std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
        });
        Ok(Self { rx, task })
    }

    /// Reads frames from any reader (tests use in-memory ones).
    pub fn from_reader(mut reader: Box<dyn AsyncRead + Send + Unpin>, chunk: usize) -> Self {
        let chunk = chunk.max(1);
        let (tx, rx) = mpsc::channel(INPUT_AHEAD);
        let task = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(chunk);
            loop {
                buf.reserve(chunk);
                // Never read more than one frame's worth.
                let mut limited = (&mut reader).take(chunk as u64);
                match limited.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {
                        let frame = SourceFrame {
                            capture: super::now(),
                            keyframe: false,
                            data: buf.split().freeze(),
                        };
                        if tx.send(Ok(frame)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
        });
        Self { rx, task }
    }

    /// The next frame; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<std::io::Result<SourceFrame>> {
        self.rx.recv().await
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sending side of a writer's queue, bounded in frames and in bytes.
#[derive(Debug, Clone)]
pub struct FrameTx {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// Why a frame was not queued for output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The consumer is behind: the queue is full (frames or bytes).
    Full,
    /// The writer stopped (its error is reported when it is closed).
    Closed,
}

impl FrameTx {
    /// Queues a frame if the queue has room, without waiting.
    pub fn try_send(&self, frame: Bytes) -> Result<(), Refused> {
        let len = frame.len();
        if self.queued.load(Ordering::Relaxed) + len > OUTPUT_BYTES
            && self.queued.load(Ordering::Relaxed) > 0
        {
            return Err(Refused::Full);
        }
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.queued.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Closed),
        }
    }

    /// Queues a frame, waiting at most `wait` for room (used at shutdown, when every frame
    /// still held goes out at once).
    pub async fn send_within(
        &self,
        frame: Bytes,
        wait: std::time::Duration,
    ) -> Result<(), Refused> {
        let len = frame.len();
        match tokio::time::timeout(wait, self.tx.send(frame)).await {
            Ok(Ok(())) => {
                self.queued.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => Err(Refused::Closed),
            Err(_) => Err(Refused::Full),
        }
    }
}

/// Where a writer's frames go.
enum Sink {
    /// A byte stream: frames back to back, flushed whenever the queue is empty.
    Bytes(Box<dyn AsyncWrite + Send + Unpin>),
    /// A datagram per frame, to this address.
    Udp(tokio::net::UdpSocket, std::net::SocketAddr),
}

impl Sink {
    /// Writes one frame (`more`: others wait behind it); returns the bytes written. Only a
    /// byte stream's errors end the writer.
    async fn put(&mut self, frame: &[u8], more: bool) -> std::io::Result<u64> {
        match self {
            Self::Bytes(out) => {
                out.write_all(frame).await?;
                if !more {
                    out.flush().await?;
                }
                Ok(frame.len() as u64)
            }
            Self::Udp(_, _) if frame.len() > MAX_UDP_PAYLOAD => {
                tracing::warn!(
                    len = frame.len(),
                    "frame too large for a UDP datagram; skipped"
                );
                Ok(0)
            }
            Self::Udp(socket, to) => match socket.send_to(frame, *to).await {
                Ok(n) => Ok(n as u64),
                Err(e) => {
                    tracing::debug!(%e, "UDP output send failed");
                    Ok(0)
                }
            },
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Bytes(out) => out.flush().await,
            Self::Udp(..) => Ok(()),
        }
    }
}

/// A running writer of frames to one stream.
#[derive(Debug)]
pub struct Writer {
    tx: FrameTx,
    task: JoinHandle<std::io::Result<u64>>,
}

/// Frames queued for the writer at most.
const OUTPUT_QUEUE: usize = 1024;
/// Bytes queued for the writer at most (a frame larger than this still goes alone).
const OUTPUT_BYTES: usize = 64 << 20;
/// How long closing waits for the consumer to take what is queued.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Writer {
    /// Opens `stream` for writing (creating or truncating a file).
    pub async fn open(stream: &Stream) -> std::io::Result<Self> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match stream {
            Stream::Udp(addr) => return Self::udp(*addr).await,
            Stream::Std => Box::new(tokio::io::stdout()),
            Stream::Path(p) => Box::new(tokio::fs::File::create(p).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot create output {}: {e}", p.display()),
                )
            })?),
        };
        Ok(Self::from_writer(out))
    }

    /// Sends each frame to `addr` as one datagram, from an ephemeral port. A frame too large
    /// for a datagram, or one the network refuses, is skipped (logged), not fatal: UDP's
    /// consumer may come and go.
    pub async fn udp(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let bind: std::net::SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open a socket for udp://{addr}: {e}"),
            )
        })?;
        Ok(Self::spawn(Sink::Udp(socket, addr)))
    }

    /// Writes to any writer.
    pub fn from_writer(out: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        Self::spawn(Sink::Bytes(out))
    }

    /// Starts the task that takes frames from the queue to `sink`.
    fn spawn(mut sink: Sink) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let written_back = Arc::clone(&queued);
        let task = tokio::spawn(async move {
            let mut written = 0u64;
            while let Some(frame) = rx.recv().await {
                written += sink.put(&frame, !rx.is_empty()).await?;
                written_back.fetch_sub(frame.len(), Ordering::Relaxed);
            }
            sink.flush().await?;
            Ok(written)
        });
        Self {
            tx: FrameTx { tx, queued },
            task,
        }
    }

    /// A handle to send frames to the writer.
    pub fn sender(&self) -> FrameTx {
        self.tx.clone()
    }

    /// Waits (at most a few seconds: the consumer may be stuck) until every frame sent so far is
    /// written and flushed; returns the bytes written. Handles from [`sender`](Self::sender)
    /// must be dropped first.
    pub async fn close(self) -> std::io::Result<u64> {
        drop(self.tx);
        let mut task = self.task;
        match tokio::time::timeout(CLOSE_WAIT, &mut task).await {
            Ok(r) => r.map_err(std::io::Error::other)?,
            Err(_) => {
                task.abort();
                Err(std::io::Error::other(
                    "the output consumer stopped taking data; closed without flushing",
                ))
            }
        }
    }
}

/// Where the receiver's sessions write their frames.
#[derive(Debug)]
pub enum Output {
    /// Frames are discarded.
    Discard,
    /// One stream; one session at a time owns it.
    Shared {
        /// The writer.
        writer: Mutex<Option<Writer>>,
        /// The session that owns it.
        owner: Mutex<Option<u64>>,
    },
    /// A file per session: `{id}` in the path is replaced by the session number.
    PerSession(String),
}

/// A session's handle on the output.
#[derive(Debug)]
pub enum SessionOutput {
    /// Discard frames.
    Discard,
    /// Send frames to a shared writer owned by this session.
    Shared(FrameTx, Arc<Output>, u64),
    /// This session's own file.
    Own(Writer),
}

impl Output {
    /// Prepares the output for `stream` (or discarding for `None`).
    pub async fn open(stream: Option<&Stream>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(match stream {
            None => Self::Discard,
            Some(Stream::Path(p)) if p.to_string_lossy().contains("{id}") => {
                Self::PerSession(p.to_string_lossy().into_owned())
            }
            Some(s) => Self::Shared {
                writer: Mutex::new(Some(Writer::open(s).await?)),
                owner: Mutex::new(None),
            },
        }))
    }

    /// The output for session `id`.
    pub async fn for_session(self: &Arc<Self>, id: u64) -> std::io::Result<SessionOutput> {
        match &**self {
            Self::Discard => Ok(SessionOutput::Discard),
            Self::PerSession(template) => {
                let path = PathBuf::from(template.replace("{id}", &id.to_string()));
                Ok(SessionOutput::Own(Writer::open(&Stream::Path(path)).await?))
            }
            Self::Shared { writer, owner } => {
                let mut owner = owner.lock().unwrap_or_else(|e| e.into_inner());
                let writer = writer.lock().unwrap_or_else(|e| e.into_inner());
                match (&*owner, writer.as_ref()) {
                    (None, Some(w)) => {
                        *owner = Some(id);
                        Ok(SessionOutput::Shared(w.sender(), Arc::clone(self), id))
                    }
                    _ => {
                        tracing::warn!(
                            session = id,
                            "output is in use by another session: this session's frames are discarded (put {{id}} in the --output path for a file per session)"
                        );
                        Ok(SessionOutput::Discard)
                    }
                }
            }
        }
    }

    /// Flushes and closes a shared output (after every session has ended).
    pub async fn close(&self) -> std::io::Result<()> {
        if let Self::Shared { writer, .. } = self {
            let w = writer.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = w {
                w.close().await?;
            }
        }
        Ok(())
    }
}

impl SessionOutput {
    fn tx(&self) -> Option<&FrameTx> {
        match self {
            Self::Discard => None,
            Self::Shared(tx, ..) => Some(tx),
            Self::Own(w) => Some(&w.tx),
        }
    }

    /// Queues one frame without waiting: a consumer that falls behind must not stall the
    /// session (its frames would then be lost in the network buffers instead, uncounted).
    pub fn try_write(&mut self, frame: Bytes) -> Result<(), Refused> {
        self.tx().map_or(Ok(()), |tx| tx.try_send(frame))
    }

    /// Queues one frame, waiting at most `wait` for room.
    pub async fn write_within(
        &mut self,
        frame: Bytes,
        wait: std::time::Duration,
    ) -> Result<(), Refused> {
        match self.tx() {
            None => Ok(()),
            Some(tx) => tx.send_within(frame, wait).await,
        }
    }

    /// Releases the output: a session's own file is flushed and closed; a shared one is handed
    /// back for the next session.
    pub async fn close(self) -> std::io::Result<()> {
        match self {
            Self::Discard => Ok(()),
            Self::Own(w) => w.close().await.map(|_| ()),
            Self::Shared(tx, out, id) => {
                drop(tx);
                if let Output::Shared { owner, .. } = &*out {
                    let mut owner = owner.lock().unwrap_or_else(|e| e.into_inner());
                    if *owner == Some(id) {
                        *owner = None;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_cuts_frames_of_at_most_chunk_bytes() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut input = Input::from_reader(Box::new(std::io::Cursor::new(data.clone())), 1316);
        let mut got = Vec::new();
        while let Some(f) = input.next().await {
            let f = f.unwrap();
            assert!(!f.data.is_empty() && f.data.len() <= 1316);
            got.extend_from_slice(&f.data);
        }
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn writer_writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let w = Writer::open(&Stream::Path(path.clone())).await.unwrap();
        let tx = w.sender();
        for i in 0..100u8 {
            tx.send_within(Bytes::from(vec![i; 100]), std::time::Duration::from_secs(5))
                .await
                .unwrap();
        }
        drop(tx);
        assert_eq!(w.close().await.unwrap(), 10_000);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 10_000);
        assert!(
            back.chunks(100)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == i as u8))
        );
    }

    #[tokio::test]
    async fn a_stalled_consumer_gets_frames_refused_not_a_stalled_session() {
        let (writer_end, _never_read) = tokio::io::duplex(1024);
        let w = Writer::from_writer(Box::new(writer_end));
        let tx = w.sender();
        let mut refused = 0;
        for _ in 0..(OUTPUT_QUEUE + 100) {
            if tx.try_send(Bytes::from(vec![0u8; 100])) == Err(Refused::Full) {
                refused += 1;
            }
        }
        assert!(refused >= 100, "the queue is bounded: {refused}");
        drop(tx);
        assert!(
            w.close().await.is_err(),
            "closing gives up on a consumer that never reads"
        );
    }

    #[tokio::test]
    async fn one_session_owns_a_shared_output_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let stream = Stream::Path(dir.path().join("o.bin"));
        let out = Output::open(Some(&stream)).await.unwrap();
        let a = out.for_session(1).await.unwrap();
        let b = out.for_session(2).await.unwrap();
        assert!(matches!(a, SessionOutput::Shared(..)));
        assert!(matches!(b, SessionOutput::Discard));
        a.close().await.unwrap();
        assert!(matches!(
            out.for_session(3).await.unwrap(),
            SessionOutput::Shared(..)
        ));
    }

    #[tokio::test]
    async fn id_template_gives_each_session_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("s{id}.bin");
        let out = Output::open(Some(&Stream::Path(template))).await.unwrap();
        let mut a = out.for_session(7).await.unwrap();
        a.try_write(Bytes::from_static(b"seven")).unwrap();
        a.close().await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("s7.bin")).unwrap(), b"seven");
    }

    #[test]
    fn streams_parse() {
        assert_eq!("-".parse::<Stream>(), Ok(Stream::Std));
        assert_eq!("a.ts".parse::<Stream>(), Ok(Stream::Path("a.ts".into())));
        assert!("".parse::<Stream>().is_err());
        assert_eq!(
            "udp://127.0.0.1:5000".parse::<Stream>(),
            Ok(Stream::Udp("127.0.0.1:5000".parse().unwrap()))
        );
        assert_eq!(
            "udp://:5000".parse::<Stream>(),
            Ok(Stream::Udp("0.0.0.0:5000".parse().unwrap()))
        );
        assert_eq!(
            "udp://[::1]:7".parse::<Stream>(),
            Ok(Stream::Udp("[::1]:7".parse().unwrap()))
        );
        for bad in ["udp://", "udp://nohost", "udp://1.2.3.4:99999"] {
            let e = bad.parse::<Stream>().unwrap_err();
            assert!(e.contains("udp://HOST:PORT"), "{bad}: {e}");
        }
        assert!("udp://:5000".parse::<Stream>().unwrap().is_live());
        assert!(!"-".parse::<Stream>().unwrap().is_live());
    }

    #[tokio::test]
    async fn udp_input_and_output_carry_a_datagram_per_frame() {
        let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let w = Writer::udp(sink.local_addr().unwrap()).await.unwrap();
        let tx = w.sender();
        // A port free a moment ago, for the input to bind.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut input = Input::udp(addr, super::super::transport::SOCKET_BUFFER)
            .await
            .unwrap();
        for len in [1usize, 1316, 9000] {
            tx.try_send(Bytes::from(vec![len as u8; len])).unwrap();
            let mut buf = vec![0u8; 65_536];
            let (n, _) = sink.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &vec![len as u8; len][..]);
            // And back in through the input: one frame per datagram, whole.
            sink.send_to(&buf[..n], addr).await.unwrap();
            let f = input.next().await.unwrap().unwrap();
            assert_eq!(f.data.len(), len);
        }
        // Too large for a datagram: skipped, and the output goes on.
        tx.try_send(Bytes::from(vec![0u8; MAX_UDP_PAYLOAD + 1]))
            .unwrap();
        tx.try_send(Bytes::from_static(b"after")).unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, _) = sink.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"after");
        drop(tx);
        assert_eq!(w.close().await.unwrap(), 1 + 1316 + 9000 + 5);
    }
}
