//! The proxy between a real rtq sender and receiver over loopback: the delay it adds is what
//! the receiver measures.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use rtq::net::Shutdown;
use rtq::net::receiver::{ClockChoice, Receiver, RecvOptions};
use rtq::net::sender::{SendOptions, SourceSpec};
use rtq::net::tls::{Identity, Trust};
use rtq::net::transport::TransportOptions;
use rtq::session::{ReceiverConfig, SenderConfig};
use rtq::source::SourceKind;
use rtq_sim::config::{Dur, LinkSpec, TraceCache};
use rtq_sim::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_ms_through_the_proxy_is_thirty_ms_at_the_receiver() {
    let identity = Identity::self_signed(&["localhost".into()])
        .unwrap()
        .identity;
    let ropts = RecvOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        transport: TransportOptions::default(),
        session: ReceiverConfig::default(),
        clock: ClockChoice::Auto,
        output: None,
        once: true,
        max_sessions: 1,
        status: false,
        summaries: false,
    };
    let rx = Receiver::bind(ropts, identity).unwrap();
    let rx_addr = rx.local_addr().unwrap();
    let fp = rx.fingerprint().unwrap();
    let (_keep, shutdown) = Shutdown::new();
    let server = tokio::spawn(rx.run(shutdown.clone()));

    let delay = LinkSpec {
        delay: Some(Dur(Duration::from_millis(30))),
        ..Default::default()
    };
    let forward = delay.resolve(&mut TraceCache::default()).unwrap();
    let reverse = LinkSpec::default()
        .resolve(&mut TraceCache::default())
        .unwrap();
    let proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        rx_addr,
        (forward, Vec::new()),
        (reverse, Vec::new()),
        (1, 2),
    )
    .unwrap();

    let opts = SendOptions {
        connect: proxy.listen_addr().to_string(),
        server_name: Some("localhost".into()),
        trust: Trust::Pin(fp),
        transport: TransportOptions::default(),
        session: SenderConfig::default(),
        // Small frames: no serialization or congestion window in the way of the delay.
        source: SourceSpec::Synthetic(SourceKind::Audio, 1),
        duration: Some(Duration::from_secs(3)),
        connect_timeout: Duration::from_secs(10),
        reconnect: Default::default(),
        status: false,
    };
    let sent = rtq::net::sender::run(opts, shutdown).await.unwrap();
    let rx = server.await.unwrap().unwrap().pop().unwrap();
    let link = proxy.stop();

    assert_eq!(sent.report.end, "complete");
    assert!(rx.report.frames.played >= 140, "{:?}", rx.report.frames);
    let p50 = rx.report.latency_us.network.p50;
    assert!(
        (30_000..=32_000).contains(&p50),
        "network delay p50 {p50} µs, want 30-32 ms"
    );
    assert!(
        link.forward.delay_us.p50 >= 30_000 && link.forward.delay_us.p50 < 30_100,
        "{:?}",
        link.forward.delay_us
    );
    assert_eq!(link.forward.dropped, 0);
    assert!(link.reverse.delivered > 0, "acknowledgements flow back");
}
