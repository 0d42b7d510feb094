//! Running a [`Path`] in real time: a dedicated thread per direction moves packets out when
//! they are due, with the precision of the operating system's timers rather than an async
//! runtime's millisecond wheel (the thread asks Linux for 1 µs timer slack).
//!
//! Packets enter with [`LiveLink::push`] (stamped with the wall clock); the thread hands each
//! one to a [`Sink`] at its exit instant: a real UDP socket in the proxy, a simulated socket's
//! inbox in process. Scheduled parameter changes are applied by the same thread at their time.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::LinkConfig;
use crate::link::{Path, PathReport};

/// Where a live link delivers packets.
pub trait Sink: Send + 'static {
    /// Takes a packet that left the link at `at` (now, give or take the timer's precision).
    fn deliver(&mut self, at: Instant, data: Vec<u8>);
}

/// The wall clock, for the real-time parts of the simulator.
#[expect(
    clippy::disallowed_methods,
    reason = "the real-time shell supplies `now`"
)]
pub fn now() -> Instant {
    Instant::now()
}

#[derive(Debug)]
struct State {
    path: Path,
    schedule: VecDeque<(Instant, LinkConfig)>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A path driven in real time by its own thread.
#[derive(Debug)]
pub struct LiveLink {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveLink {
    /// Starts driving `path`, delivering to `sink`; `schedule` lists parameter changes at
    /// instants (in order).
    pub fn spawn(
        path: Path,
        schedule: Vec<(Instant, LinkConfig)>,
        sink: impl Sink,
        name: &str,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                path,
                schedule: schedule.into(),
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("link-{name}"))
            .spawn(move || run(&s, sink))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// A packet enters the link now.
    pub fn push(&self, data: Vec<u8>) {
        let mut st = lock(&self.shared.state);
        st.path.push(now(), data);
        drop(st);
        self.shared.wake.notify_one();
    }

    /// The link's report so far.
    pub fn report(&self) -> PathReport {
        lock(&self.shared.state).path.report()
    }

    /// Stops the thread (packets still in flight are dropped) and returns the final report.
    pub fn stop(mut self) -> PathReport {
        self.halt();
        self.report()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LiveLink {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(shared: &Shared, mut sink: impl Sink) {
    precise_timers();
    let mut due: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut st = lock(&shared.state);
    while !shared.stop.load(Ordering::SeqCst) {
        let t = now();
        while st.schedule.front().is_some_and(|(at, _)| *at <= t) {
            if let Some((at, cfg)) = st.schedule.pop_front() {
                st.path.advance(at);
                cfg.apply(&mut st.path);
            }
        }
        while let Some(p) = st.path.poll(t) {
            due.push(p);
        }
        if !due.is_empty() {
            // Deliver without holding the lock: senders keep pushing meanwhile.
            drop(st);
            for (at, data) in due.drain(..) {
                sink.deliver(at, data);
            }
            st = lock(&shared.state);
            continue;
        }
        let next = [
            st.path.poll_timeout(),
            st.schedule.front().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min();
        st = match next {
            Some(at) if at > t => shared
                .wake
                .wait_timeout(st, at - t)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g),
            Some(_) => st,
            None => shared
                .wake
                .wait_timeout(st, Duration::from_secs(1))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g),
        };
    }
}

/// Asks Linux to wake this thread within 1 µs of its deadlines (the default slack is 50 µs).
fn precise_timers() {
    #[cfg(target_os = "linux")]
    #[allow(
        unsafe_code,
        reason = "prctl(PR_SET_TIMERSLACK) has no safe wrapper; it only sets a number"
    )]
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, LinkSpec, TraceCache};
    use std::sync::mpsc;

    struct ToChannel(mpsc::Sender<(Instant, Instant, Vec<u8>)>);

    impl Sink for ToChannel {
        fn deliver(&mut self, at: Instant, data: Vec<u8>) {
            let _ = self.0.send((at, now(), data));
        }
    }

    #[test]
    fn delivers_at_the_exit_instant_with_sub_millisecond_precision() {
        let spec = LinkSpec {
            delay: Some(Dur(Duration::from_millis(20))),
            ..Default::default()
        };
        let cfg = spec.resolve(&mut TraceCache::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        let link = LiveLink::spawn(cfg.build(1), Vec::new(), ToChannel(tx), "test").unwrap();
        let mut lateness = Vec::new();
        for i in 0..20u8 {
            let sent = now();
            link.push(vec![i]);
            let (at, delivered, data) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(data, vec![i]);
            assert!(at.duration_since(sent) >= Duration::from_millis(20));
            lateness.push(delivered.saturating_duration_since(at));
        }
        lateness.sort();
        // Typically tens of microseconds; the bound is loose so that a loaded machine passes.
        assert!(
            lateness[10] < Duration::from_millis(5),
            "median lateness {:?}",
            lateness[10]
        );
        let r = link.stop();
        assert_eq!((r.packets, r.delivered), (20, 20));
    }
}
