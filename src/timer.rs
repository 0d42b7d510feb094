//! Session timers: an enum and a small array of deadlines (after quinn-proto's
//! `connection/timer.rs`). `next()` is their minimum; a spurious wake-up finds nothing expired.

use std::time::Instant;

/// A timer a session can arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Send the next clock-sync ping.
    Ping = 0,
    /// Send the next receiver report.
    Report = 1,
    /// Give up waiting for the peer's goodbye or for the last frames.
    Close = 2,
    /// No control traffic from the peer for too long.
    Idle = 3,
    /// Look for fragments worth asking for again.
    Nack = 4,
}

const COUNT: usize = 5;
const ALL: [Timer; COUNT] = [
    Timer::Ping,
    Timer::Report,
    Timer::Close,
    Timer::Idle,
    Timer::Nack,
];

/// The deadlines of every [`Timer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
    at: [Option<Instant>; COUNT],
}

impl Timers {
    /// Arms `timer` for `at`, replacing any earlier setting.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer as usize]
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer due at `now`, if any.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let t = ALL
            .into_iter()
            .find(|&t| self.at[t as usize].is_some_and(|at| at <= now))?;
        self.stop(t);
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_only_once() {
        let t0 = crate::test_instant();
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Report, t0 + Duration::from_millis(20));
        t.set(Timer::Ping, t0 + Duration::from_millis(10));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.take_expired(t0), None, "a spurious wake-up does nothing");
        assert_eq!(
            t.take_expired(t0 + Duration::from_millis(15)),
            Some(Timer::Ping)
        );
        assert_eq!(t.take_expired(t0 + Duration::from_millis(15)), None);
        assert_eq!(
            t.take_expired(t0 + Duration::from_millis(25)),
            Some(Timer::Report)
        );
        assert_eq!(t.next(), None);
    }
}
