//! # rtq-sim — the network simulator of rtq
//!
//! Injects latency, jitter, loss, duplication, reordering, corruption, rate limits with queues
//! and AQM, measured cellular capacity traces, outages and MTU limits between an rtq sender and
//! receiver (or any two UDP programs), and reports what the frames went through.
//!
//! Every impairment is a sans-IO node ([`link`]); nodes chain into a path per direction; all
//! randomness comes from one seeded RNG per path, so the same parameters and seed do the same
//! thing, packet for packet.
//!
//! Runs go in virtual time by default ([`vtime`]: quinn-proto, the rtq sessions and the paths
//! in one discrete-event loop, byte-for-byte repeatable), or in real time ([`run::realtime`]:
//! quinn over simulated sockets, [`socket`]). [`proxy`] puts the paths between any two UDP
//! programs. [`check`] is the regression gate over a committed baseline.

pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod link;
pub mod plot;
pub mod proxy;
pub mod realtime;
pub mod run;
pub mod scenario;
pub mod socket;
pub mod vtime;
