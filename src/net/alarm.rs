//! A resettable wake-up at an instant, with the operating system's timer precision.
//!
//! tokio's timer counts whole milliseconds: a `sleep_until` rounds its deadline up to the next
//! millisecond tick, and the runtime sleeps whole ticks counted from the tick in which it
//! parked, so a wake-up comes 0-2 ms late, later the longer the runtime stayed busy before it
//! parked. For a sender that is due to send a frame every millisecond, or to release paced
//! datagrams every few hundred microseconds, that lateness puts frames on the wire back to back
//! that were meant to leave apart, and the second waits behind the first at every stage.
//!
//! [`Alarm`] wakes within tens of microseconds of its deadline instead. On Linux it is a
//! `timerfd` (`CLOCK_MONOTONIC`, the clock behind [`std::time::Instant`]) registered with tokio's
//! reactor: the runtime's `epoll_wait` returns when it fires, at no cost while it is armed.
//! Moving the deadline earlier costs a `timerfd_settime`; moving it later costs nothing until
//! the earlier setting fires. Where `timerfd` is missing (other systems, or a process out of
//! file descriptors) it falls back to tokio's timer, and [`Alarm::precise`] says so.

use std::time::Instant;

use super::now;

/// A wake-up at an instant that can be moved. [`wait`](Self::wait) completes once
/// [`now`] has reached the instant last given to [`reset`](Self::reset).
///
/// Dropping a `wait` future (in a `select!`) loses nothing: the deadline lives in the alarm.
#[derive(Debug)]
pub struct Alarm {
    at: Instant,
    /// When the timerfd fires (never after `at`): a deadline moved later leaves it set, and
    /// `wait` sets it again once it has fired early; only one moved earlier costs a system call.
    armed: Instant,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    #[cfg(target_os = "linux")]
    Timerfd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    Tokio(std::pin::Pin<Box<tokio::time::Sleep>>),
}

impl Alarm {
    /// An alarm set for `at`, on the precise timer when the system has one. Must be called
    /// within a tokio runtime with I/O and time enabled.
    pub fn new(at: Instant) -> Self {
        #[cfg(target_os = "linux")]
        match timerfd::create() {
            Ok(fd) => {
                let mut alarm = Self {
                    at,
                    armed: at,
                    inner: Inner::Timerfd(fd),
                };
                alarm.arm();
                return alarm;
            }
            Err(e) => {
                tracing::debug!(%e, "no timerfd; waking on tokio's millisecond timer");
            }
        }
        Self::coarse(at)
    }

    /// An alarm on tokio's millisecond timer, whatever the system offers.
    pub fn coarse(at: Instant) -> Self {
        Self {
            at,
            armed: at,
            inner: tokio_sleep(at),
        }
    }

    /// Whether this alarm wakes with the system timer's precision rather than tokio's whole
    /// milliseconds.
    pub fn precise(&self) -> bool {
        !matches!(self.inner, Inner::Tokio(_))
    }

    /// The instant the alarm is set for.
    pub fn deadline(&self) -> Instant {
        self.at
    }

    /// Sets the alarm for `at` (earlier or later than before), unless it is set for `at` already.
    pub fn reset(&mut self, at: Instant) {
        if at == self.at {
            return;
        }
        self.at = at;
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Timerfd(_) if at >= self.armed => {}
            _ => self.arm(),
        }
    }

    fn arm(&mut self) {
        self.armed = self.at;
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Timerfd(fd) => {
                if let Err(e) = timerfd::set(fd, self.at.saturating_duration_since(now())) {
                    // Cannot happen for a timerfd we created with a valid duration; should it,
                    // the tokio timer still wakes us, only later.
                    tracing::debug!(%e, "timerfd_settime failed; falling back to tokio's timer");
                    self.inner = tokio_sleep(self.at);
                }
            }
            Inner::Tokio(sleep) => sleep.as_mut().reset(self.at.into()),
        }
    }

    /// Completes once the deadline has passed (at once if it has already).
    pub async fn wait(&mut self) {
        loop {
            let t = now();
            if t >= self.at {
                return;
            }
            #[cfg(target_os = "linux")]
            if matches!(self.inner, Inner::Timerfd(_)) && self.armed <= t {
                // Fired (or about to) for an earlier deadline: set it for this one.
                self.arm();
            }
            match &mut self.inner {
                #[cfg(target_os = "linux")]
                Inner::Timerfd(fd) => match fd.readable().await {
                    Ok(mut ready) => {
                        // Reading takes the expiry (an earlier setting's, perhaps); finding
                        // nothing clears the readiness so the next round waits for the next.
                        let _ = ready.try_io(|fd| timerfd::take(fd.get_ref()));
                    }
                    Err(e) => {
                        // The reactor refused (it is shutting down): tokio's timer still
                        // keeps the deadline.
                        tracing::debug!(%e, "timerfd not readable; falling back to tokio's timer");
                        self.inner = tokio_sleep(self.at);
                    }
                },
                Inner::Tokio(sleep) => sleep.as_mut().await,
            }
        }
    }
}

fn tokio_sleep(at: Instant) -> Inner {
    Inner::Tokio(Box::pin(tokio::time::sleep_until(at.into())))
}

#[cfg(target_os = "linux")]
mod timerfd {
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::unix::AsyncFd;

    pub(super) fn create() -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        register(fd)
    }

    #[allow(
        unsafe_code,
        reason = "tokio's only non-deprecated way to watch a file descriptor"
    )]
    fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: `fd` is a valid descriptor that the `AsyncFd` owns from here on: nothing
        // else can close or replace it, and `OwnedFd::as_raw_fd` always returns the same
        // number. It is closed only when the `AsyncFd` drops it, after deregistering.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)
    }

    /// Arms the timer to fire once, `after` from now. A zero value would disarm it, so a
    /// deadline already passed fires after a nanosecond.
    pub(super) fn set(fd: &AsyncFd<OwnedFd>, after: Duration) -> std::io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX / 2),
            tv_nsec: after.subsec_nanos().into(),
        };
        timerfd_settime(
            fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        Ok(())
    }

    /// Reads the expiry count: `WouldBlock` when the timer has not fired since the last read.
    pub(super) fn take(fd: &OwnedFd) -> std::io::Result<()> {
        let mut count = [0u8; 8];
        rustix::io::read(fd, &mut count)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A bound on how long a test may wait: far beyond any deadline in these tests, so a
    /// timeout means the alarm never fired.
    const BOUND: Duration = Duration::from_secs(10);

    /// Waits on `alarm` (bounded) and checks it did not wake before its deadline.
    async fn wake(alarm: &mut Alarm) {
        let at = alarm.deadline();
        tokio::time::timeout(BOUND, alarm.wait())
            .await
            .expect("the alarm fired");
        assert!(now() >= at, "woke before the deadline");
    }

    async fn fires_at_deadline(mut alarm: Alarm) {
        for step_us in [0u64, 300, 1_500, 50, 2_000] {
            alarm.reset(now() + Duration::from_micros(step_us));
            wake(&mut alarm).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn precise_alarm_fires_no_earlier_than_its_deadline() {
        let alarm = Alarm::new(now());
        #[cfg(target_os = "linux")]
        assert!(alarm.precise(), "Linux has timerfd");
        fires_at_deadline(alarm).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn coarse_alarm_fires_no_earlier_than_its_deadline() {
        let alarm = Alarm::coarse(now());
        assert!(!alarm.precise());
        fires_at_deadline(alarm).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn moving_the_deadline_earlier_wakes_at_the_new_one() {
        for mut alarm in [Alarm::new(now()), Alarm::coarse(now())] {
            alarm.reset(now() + Duration::from_secs(3600));
            let at = now() + Duration::from_micros(500);
            alarm.reset(at);
            assert_eq!(alarm.deadline(), at);
            wake(&mut alarm).await;
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_stale_expiry_does_not_end_a_later_wait() {
        let mut alarm = Alarm::new(now() + Duration::from_micros(100));
        let Inner::Timerfd(fd) = &alarm.inner else {
            panic!("Linux has timerfd");
        };
        // Let it fire without reading the expiry: a one-shot timerfd that has fired reads as
        // disarmed.
        let give_up = now() + BOUND;
        while rustix::time::timerfd_gettime(fd.get_ref())
            .expect("gettime")
            .it_value
            != (rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            })
        {
            assert!(now() < give_up, "the timer never fired");
            std::hint::spin_loop();
        }
        alarm.reset(now() + Duration::from_millis(5));
        wake(&mut alarm).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_wait_keeps_the_deadline() {
        let mut alarm = Alarm::new(now() + Duration::from_millis(2));
        // A select! that another branch wins drops the wait future.
        tokio::select! {
            biased;
            () = std::future::ready(()) => {}
            () = alarm.wait() => panic!("the ready branch comes first"),
        }
        wake(&mut alarm).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deadline_moved_later_wakes_at_the_later_one() {
        for mut alarm in [Alarm::new(now()), Alarm::coarse(now())] {
            // Moved later, earlier, later again, and later while the first setting fires.
            for step_us in [500u64, 200, 3_000, 1_000] {
                alarm.reset(now() + Duration::from_micros(step_us));
            }
            alarm.reset(alarm.deadline() + Duration::from_millis(2));
            wake(&mut alarm).await;
        }
    }
}
