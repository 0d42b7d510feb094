//! Frame input from a byte stream, and frame output to a byte stream.
//!
//! **Input** (`rtq-send --input PATH|-`): bytes are cut into frames as they arrive — each read
//! returns what the stream has (at most `chunk` bytes) and that becomes a frame, captured at the
//! time of the read. A pipe from a live encoder (`ffmpeg ... -f mpegts -`) therefore yields
//! frames as the encoder writes them. Reading stops while the sender's queue is full, so a file
//! read faster than the network goes is paced by it instead of dropped.
//!
//! **Output** (`rtq-recv --output PATH|-`): played frames are written in playout order, each in
//! full, and flushed when no more frames are waiting. With several sessions, a path containing
//! `{id}` gives each session its own file; otherwise the first session to play a frame owns the
//! output until it ends, and other sessions' frames are discarded (with a warning).

use std::path::PathBuf;
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
}

impl std::str::FromStr for Stream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("empty path: use a file path, or - for standard input/output".into()),
            "-" => Ok(Self::Std),
            _ => Ok(Self::Path(PathBuf::from(s))),
        }
    }
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Std => f.write_str("-"),
            Self::Path(p) => write!(f, "{}", p.display()),
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
    pub async fn open(stream: &Stream, chunk: usize) -> std::io::Result<Self> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = match stream {
            Stream::Std => Box::new(tokio::io::stdin()),
            Stream::Path(p) => Box::new(tokio::fs::File::open(p).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot open input {}: {e}", p.display()))
            })?),
        };
        Ok(Self::from_reader(reader, chunk))
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

/// A running writer of frames to one stream.
#[derive(Debug)]
pub struct Writer {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<std::io::Result<u64>>,
}

/// Frames queued for the writer at most; a slower consumer slows playout down rather than lose
/// frames.
const OUTPUT_QUEUE: usize = 1024;

impl Writer {
    /// Opens `stream` for writing (creating or truncating a file).
    pub async fn open(stream: &Stream) -> std::io::Result<Self> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match stream {
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

    /// Writes to any writer.
    pub fn from_writer(mut out: Box<dyn AsyncWrite + Send + Unpin>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(OUTPUT_QUEUE);
        let task = tokio::spawn(async move {
            let mut written = 0u64;
            while let Some(frame) = rx.recv().await {
                out.write_all(&frame).await?;
                written += frame.len() as u64;
                if rx.is_empty() {
                    out.flush().await?;
                }
            }
            out.flush().await?;
            Ok(written)
        });
        Self { tx, task }
    }

    /// A handle to send frames to the writer.
    pub fn sender(&self) -> mpsc::Sender<Bytes> {
        self.tx.clone()
    }

    /// Waits until every frame sent so far is written and flushed; returns the bytes written.
    /// Handles from [`sender`](Self::sender) must be dropped first.
    pub async fn close(self) -> std::io::Result<u64> {
        drop(self.tx);
        self.task.await.map_err(std::io::Error::other)?
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
    Shared(mpsc::Sender<Bytes>, Arc<Output>, u64),
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
    /// Writes one frame (waits if the writer is behind).
    pub async fn write(&mut self, frame: Bytes) -> std::io::Result<()> {
        let tx = match self {
            Self::Discard => return Ok(()),
            Self::Shared(tx, ..) => tx,
            Self::Own(w) => &w.tx,
        };
        tx.send(frame).await.map_err(|_| {
            std::io::Error::other("output writer stopped (write error reported at exit)")
        })
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
            tx.send(Bytes::from(vec![i; 100])).await.unwrap();
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
        a.write(Bytes::from_static(b"seven")).await.unwrap();
        a.close().await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("s7.bin")).unwrap(), b"seven");
    }

    #[test]
    fn streams_parse() {
        assert_eq!("-".parse::<Stream>(), Ok(Stream::Std));
        assert_eq!("a.ts".parse::<Stream>(), Ok(Stream::Path("a.ts".into())));
        assert!("".parse::<Stream>().is_err());
    }
}
