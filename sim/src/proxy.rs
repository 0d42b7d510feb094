//! `rtq-sim proxy`: a UDP relay that impairs the traffic between any two programs or hosts.
//!
//! Datagrams from a client to `--listen` go through the forward path to `--to`; the replies
//! from `--to` go through the reverse path back to the client (the source address of the most
//! recent forward datagram). Each socket has a receiving thread; each path its own timing
//! thread ([`crate::realtime`]), so impairments are applied with the operating system's timer
//! precision, not an event loop's.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::LinkConfig;
use crate::link::PathReport;
use crate::realtime::{LiveLink, Sink};

/// Largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    listen: SocketAddr,
    forward: Arc<LiveLink>,
    reverse: Arc<LiveLink>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// What the proxy did, per direction.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyReport {
    /// Client → `--to`.
    pub forward: PathReport,
    /// `--to` → client.
    pub reverse: PathReport,
}

struct SendTo {
    socket: Arc<UdpSocket>,
    to: Arc<Mutex<Option<SocketAddr>>>,
}

impl Sink for SendTo {
    fn deliver(&mut self, _at: Instant, data: Vec<u8>) {
        let to = *self.to.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(to) = to {
            // A send error (no route, buffer full) is a loss on a real network too.
            let _ = self.socket.send_to(&data, to);
        }
    }
}

impl Proxy {
    /// Binds `listen`, and starts relaying to `to` through paths built from `forward` and
    /// `reverse` (seeded with `seeds`), each with its schedule of changes.
    pub fn start(
        listen: SocketAddr,
        to: SocketAddr,
        forward: (LinkConfig, Vec<(Duration, LinkConfig)>),
        reverse: (LinkConfig, Vec<(Duration, LinkConfig)>),
        seeds: (u64, u64),
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        // Large kernel buffers, as rtq's tools ask for: a burst the relay threads are slow to
        // read is impairment the proxy did not choose, for whichever transport it carries.
        let bind = |addr: SocketAddr| -> std::io::Result<UdpSocket> {
            Ok(rtq::net::transport::bind_udp(addr, rtq::net::transport::SOCKET_BUFFER)?.0)
        };
        let front =
            Arc::new(bind(listen).with_context(|| {
                format!("cannot listen on {listen} (in use? pick another port)")
            })?);
        let back_bind: SocketAddr = if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse()?;
        let back = Arc::new(bind(back_bind).context("cannot open the upstream socket")?);
        let listen = front.local_addr()?;
        let start = crate::realtime::now();
        let steps =
            |v: Vec<(Duration, LinkConfig)>| v.into_iter().map(|(d, c)| (start + d, c)).collect();
        let client = Arc::new(Mutex::new(None));
        let upstream = Arc::new(Mutex::new(Some(to)));
        let fwd = Arc::new(LiveLink::spawn(
            forward.0.build(seeds.0),
            steps(forward.1),
            SendTo {
                socket: Arc::clone(&back),
                to: Arc::clone(&upstream),
            },
            "forward",
        )?);
        let rev = Arc::new(LiveLink::spawn(
            reverse.0.build(seeds.1),
            steps(reverse.1),
            SendTo {
                socket: Arc::clone(&front),
                to: Arc::clone(&client),
            },
            "reverse",
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        {
            let (sock, link, stop, client, errors) = (
                Arc::clone(&front),
                Arc::clone(&fwd),
                Arc::clone(&stop),
                Arc::clone(&client),
                Arc::clone(&errors),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("proxy-front".into())
                    .spawn(move || {
                        receive(&sock, &stop, &errors, |from, data| {
                            *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                            link.push(data);
                        });
                    })?,
            );
        }
        {
            let (sock, link, stop, errors) = (
                Arc::clone(&back),
                Arc::clone(&rev),
                Arc::clone(&stop),
                Arc::clone(&errors),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("proxy-back".into())
                    .spawn(move || {
                        receive(&sock, &stop, &errors, |from, data| {
                            if from == to {
                                link.push(data);
                            }
                        });
                    })?,
            );
        }
        Ok(Self {
            listen,
            forward: fwd,
            reverse: rev,
            stop,
            threads,
            client,
            errors,
        })
    }

    /// The address clients send to.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The client seen last.
    pub fn client(&self) -> Option<SocketAddr> {
        *self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports so far.
    pub fn report(&self) -> ProxyReport {
        ProxyReport {
            forward: self.forward.report(),
            reverse: self.reverse.report(),
        }
    }

    /// Receive errors seen (other than the periodic timeouts).
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops relaying; returns the final report.
    pub fn stop(mut self) -> ProxyReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.report()
    }
}

/// Receives until `stop`, handing each datagram to `f`.
fn receive(
    sock: &UdpSocket,
    stop: &AtomicBool,
    errors: &Mutex<Vec<String>>,
    mut f: impl FnMut(SocketAddr, Vec<u8>),
) {
    // Wake up now and then to notice `stop`.
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::SeqCst) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => f(from, buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable from a peer that is not up yet: keep going.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
                if errs.len() < 16 {
                    errs.push(e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dur, LinkSpec, TraceCache};

    fn cfg(spec: LinkSpec) -> LinkConfig {
        spec.resolve(&mut TraceCache::default()).unwrap()
    }

    #[test]
    fn relays_both_ways_through_the_paths() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        let delay = LinkSpec {
            delay: Some(Dur(Duration::from_millis(10))),
            ..Default::default()
        };
        let proxy = Proxy::start(
            "127.0.0.1:0".parse().unwrap(),
            to,
            (cfg(delay.clone()), Vec::new()),
            (cfg(LinkSpec::default()), Vec::new()),
            (1, 2),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let sent = crate::realtime::now();
        client.send_to(b"ping", proxy.listen_addr()).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert!(
            sent.elapsed() >= Duration::from_millis(10),
            "the forward delay applies"
        );
        assert_eq!(&buf[..n], b"ping");
        server.send_to(b"pong", from).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"pong");
        let r = proxy.stop();
        assert_eq!(
            (r.forward.packets, r.forward.delivered, r.reverse.delivered),
            (1, 1, 1)
        );
        assert!(r.forward.delay_us.p50 >= 10_000);
    }
}
