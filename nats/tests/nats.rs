//! veltrix-nats against a real nats-server (Debian's 2.9.10 in CI). `ci/nats` starts the server
//! on loopback, exports `NATS_URL` and runs the tests marked `#[ignore]` (a plain `cargo test`
//! lists them as ignored).
//! The restart test starts a server of its own (it has to kill it).
//!
//! Every test publishes events whose payload is `(id, publish time)`, counts every handler run
//! per id, and checks at the end that no id was lost, how many ran twice, and that the stream's
//! consumers and the nodes' ledgers agree.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use futures_util::future::join_all;
use veltrix_engine::runtime::{Handler, HandlerContext, Outcome, RouteSpec};
use veltrix_engine::{Adaptive, ClassSpec, Config, OverloadPolicy};
use veltrix_nats::{ClassPolicy, NatsEvent, Node, NodeConfig, NodeReport, Publisher, ShedAction, ensure_stream};

const ROUTE: &str = "orders";

/// The server `ci/nats` started. The tests that need one are `#[ignore]`d, so a plain
/// `cargo test` lists them as ignored rather than passing them; `ci/nats` runs them with
/// `--include-ignored`.
fn nats_url() -> String {
    match std::env::var("NATS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!("NATS_URL is not set: run `ci/nats`, which starts nats-server and runs these tests"),
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

fn payload(id: u64) -> Bytes {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&now_ns().to_le_bytes());
    b.into()
}

fn decode(p: &[u8]) -> (u64, u64) {
    let id = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    let at = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
    (id, at)
}

/// Counts handler runs per id and end-to-end latency (publish → handled) per class.
#[derive(Clone, Default)]
struct Recorder {
    state: Arc<Mutex<Runs>>,
    service: Duration,
}

#[derive(Default)]
struct Runs {
    per_id: HashMap<u64, u32>,
    total: u64,
    latency_ns: HashMap<usize, Vec<u64>>,
}

impl Recorder {
    fn with_service(service: Duration) -> Recorder {
        Recorder { service, ..Recorder::default() }
    }

    /// One handler run of `id`.
    fn record(&self, id: u64) {
        let mut st = self.state.lock().unwrap();
        *st.per_id.entry(id).or_default() += 1;
        st.total += 1;
    }

    fn distinct(&self) -> usize {
        self.state.lock().unwrap().per_id.len()
    }

    fn total(&self) -> u64 {
        self.state.lock().unwrap().total
    }

    fn duplicates(&self) -> u64 {
        self.state.lock().unwrap().per_id.values().map(|&n| u64::from(n) - 1).sum()
    }

    fn p99_ms(&self, class: usize) -> f64 {
        let st = self.state.lock().unwrap();
        let mut v = st.latency_ns.get(&class).cloned().unwrap_or_default();
        assert!(!v.is_empty(), "class {class} never handled");
        v.sort_unstable();
        v[(v.len() * 99).div_ceil(100) - 1] as f64 / 1e6
    }
}

impl Handler<NatsEvent> for Recorder {
    fn handle(&self, e: &NatsEvent, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let (id, published) = decode(e.payload());
        let class = e.class().index();
        let rec = self.clone();
        let service = self.service;
        async move {
            if !service.is_zero() {
                tokio::time::sleep(service).await;
            }
            rec.record(id);
            rec.state.lock().unwrap().latency_ns.entry(class).or_default().push(now_ns().saturating_sub(published));
            Outcome::Ok
        }
    }
}

/// A fresh stream (and subjects and durables) per test, so tests never see each other's events.
async fn fresh(url: &str, name: &str) -> (async_nats::Client, jetstream::Context, NodeConfig) {
    let client = connect(url).await;
    let js = jetstream::new(client.clone());
    let tag = format!("{name}-{}", std::process::id());
    let mut config = NodeConfig::new(tag.replace('-', "_"));
    config.subject_prefix = tag.clone();
    config.durable_prefix = tag;
    let _ = js.delete_stream(&config.stream).await;
    ensure_stream(&js, &config).await.expect("stream created");
    (client, js, config)
}

async fn connect(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .expect("nats-server reachable")
}

/// Publishes `ids` (class = the function's answer) concurrently, 512 in flight.
async fn publish_all(p: &Publisher, ids: impl Iterator<Item = u64>, class: impl Fn(u64) -> String) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(512) {
        let sends = chunk.iter().map(|&id| {
            let class = class(id);
            async move { p.publish(ROUTE, &class, &format!("ev-{id}"), payload(id)).await }
        });
        for r in join_all(sends).await {
            let published = r.expect("published");
            assert!(!published.duplicate, "each id is published once");
        }
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every consumer of the route has nothing pending and nothing unacked; returns
/// the stream's message count.
async fn stream_settled(js: &jetstream::Context, config: &NodeConfig, classes: &[&str]) -> u64 {
    let mut stream = js.get_stream(&config.stream).await.expect("stream");
    for class in classes {
        let mut consumer: PullConsumer = stream.get_consumer(&config.durable(ROUTE, class)).await.expect("consumer");
        let start = tokio::time::Instant::now();
        loop {
            let info = consumer.info().await.expect("consumer info");
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{class}: {} pending, {} unacked after 60 s",
                info.num_pending,
                info.num_ack_pending
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stream.info().await.expect("stream info").state.messages
}

/// Records the most delivered-but-unacked events the server reports for one consumer.
async fn watch_unacked(
    js: jetstream::Context,
    config: NodeConfig,
    class: &str,
    max: Arc<std::sync::atomic::AtomicU64>,
) {
    let stream = js.get_stream(&config.stream).await.expect("stream");
    let mut consumer: PullConsumer = stream.get_consumer(&config.durable(ROUTE, class)).await.expect("consumer");
    loop {
        if let Ok(info) = consumer.info().await {
            max.fetch_max(info.num_ack_pending as u64, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every fetched delivery is accounted for exactly once by the node's counters, and the
/// engine's ledger saw every submitted event to an end.
fn check_ledger(name: &str, r: &NodeReport) {
    let fetched = r.sum(|c| c.fetched);
    let ends = r.sum(|c| c.submitted + c.stale + c.duplicates + c.expired_on_arrival + c.refused);
    assert_eq!(fetched, ends, "{name}: every delivery fetched ends one way: {:#?}", r.classes);
    let t = r.engine.stats.total();
    assert_eq!(t.accepted, r.sum(|c| c.submitted), "{name}: engine accepted = submitted");
    assert!(t.conserved() && t.queued == 0 && t.in_flight() == 0, "{name}: engine ledger settled: {t:?}");
}

fn four_classes(capacity: usize) -> Config {
    ["c0", "c1", "c2", "c3"]
        .into_iter()
        .fold(Config::builder(), |b, n| b.class(ClassSpec::new(n, capacity)))
        .build()
        .expect("valid")
}

fn table(rows: &[(&str, &NodeReport)]) {
    println!("| node | fetched | redelivered | acked | nak | term | stale | dup | max held / credit |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            r.sum(|c| c.fetched),
            r.sum(|c| c.redelivered),
            r.sum(|c| c.acked),
            r.sum(|c| c.naked),
            r.sum(|c| c.termed),
            r.sum(|c| c.stale),
            r.sum(|c| c.duplicates),
            r.max_held,
            r.sum(|c| c.credit as u64),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn two_nodes_share_100k_events_over_four_classes_and_lose_none() {
    let url = nats_url();
    const N: u64 = 100_000;
    let (client, js, config) = fresh(&url, "share").await;
    let rec = Recorder::default();
    let spec = RouteSpec::new(four_classes(256)).workers(4);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let js = jetstream::new(connect(&url).await);
        let node =
            Node::builder(js, config.clone()).route(ROUTE, spec.clone(), rec.clone()).start().await.expect("node");
        nodes.push(node);
    }
    // Meanwhile, watch how many events the server counts as delivered and unacked: the nodes
    // hold at most their credit, so the rest of the backlog must still be in the stream.
    let max_unacked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = tokio::spawn(watch_unacked(js.clone(), config.clone(), "c3", max_unacked.clone()));
    let publisher = Publisher::new(js.clone(), &config);
    publish_all(&publisher, 0..N, |id| format!("c{}", id % 4)).await;
    wait_until("every event handled", Duration::from_secs(240), || rec.distinct() as u64 == N).await;
    watcher.abort();
    let max_pending = max_unacked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(max_pending > 0, "the watcher saw the run");
    let mut reports = Vec::new();
    for node in nodes {
        reports.push(node.shutdown(Duration::from_secs(5)).await);
    }
    let stored = stream_settled(&js, &config, &["c0", "c1", "c2", "c3"]).await;

    table(&[("a", &reports[0]), ("b", &reports[1])]);
    let (runs, dups) = (rec.total(), rec.duplicates());
    println!("events {N}, handler runs {runs}, duplicates {dups}, lost {}", N - rec.distinct() as u64);
    assert_eq!(stored, N, "the stream holds each event once (Nats-Msg-Id)");
    assert_eq!(rec.distinct() as u64, N, "lost events");
    for (name, r) in [("a", &reports[0]), ("b", &reports[1])] {
        check_ledger(name, r);
        assert!(r.sum(|c| c.acked) > 0, "node {name} took part: {:#?}", r.classes);
    }
    let handled: u64 = reports.iter().map(|r| r.engine.handled).sum();
    assert_eq!(handled, runs, "the engines' ledgers count every handler run");
    let acks: u64 = reports.iter().map(|r| r.sum(|c| c.acked)).sum();
    assert_eq!(acks, runs, "every handler run was acked once");
    let credit = reports[0].classes[0].credit as u64;
    println!("most unacked on one consumer during the run: {max_pending} (credit {credit} × 2 nodes)");
    assert!(max_pending <= 2 * credit, "the backlog stayed in the stream: {max_pending} unacked > 2 × {credit}");
    js.delete_stream(&config.stream).await.expect("cleanup");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn a_killed_node_loses_nothing_the_other_gets_its_redeliveries() {
    let url = nats_url();
    const N: u64 = 20_000;
    let (client, js, mut config) = fresh(&url, "kill").await;
    config = config.ack_wait(Duration::from_secs(2));
    let rec = Recorder::with_service(Duration::from_millis(1));
    let spec = RouteSpec::new(four_classes(128)).workers(4);
    let start = |config: NodeConfig, rec: Recorder, spec: RouteSpec| {
        let url = url.clone();
        async move {
            let js = jetstream::new(connect(&url).await);
            Node::builder(js, config).route(ROUTE, spec, rec).start().await.expect("node")
        }
    };
    let victim = start(config.clone(), rec.clone(), spec.clone()).await;
    let survivor = start(config.clone(), rec.clone(), spec.clone()).await;
    let publisher = Publisher::new(js.clone(), &config);
    publish_all(&publisher, 0..N, |id| format!("c{}", id % 4)).await;
    wait_until("a quarter handled", Duration::from_secs(60), || rec.distinct() as u64 >= N / 4).await;
    let (held_at_kill, _) = victim.held();
    let killed = victim.kill().await;
    wait_until("every event handled", Duration::from_secs(120), || rec.distinct() as u64 == N).await;
    let survived = survivor.shutdown(Duration::from_secs(5)).await;
    stream_settled(&js, &config, &["c0", "c1", "c2", "c3"]).await;

    table(&[("killed", &killed), ("survivor", &survived)]);
    println!(
        "events {N}, held by the victim at the kill {held_at_kill}, handler runs {}, duplicates {}, lost {}",
        rec.total(),
        rec.duplicates(),
        N - rec.distinct() as u64
    );
    assert_eq!(rec.distinct() as u64, N, "lost events");
    assert!(held_at_kill > 0, "the victim held events when it died");
    assert_eq!(killed.sum(|c| c.naked + c.termed), 0, "a crash settles nothing: {:#?}", killed.classes);
    // Events the victim was settling at the instant of the kill may have been acked, so the
    // count of redeliveries is not exact; that none was lost is.
    assert!(survived.sum(|c| c.redelivered) > 0, "the survivor received the victim's events again");
    check_ledger("survivor", &survived);
    js.delete_stream(&config.stream).await.expect("cleanup");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn overload_keeps_critical_within_its_deadline_and_sheds_the_rest_with_counters() {
    let url = nats_url();
    let (client, js, config) = fresh(&url, "overload").await;
    let deadline = Duration::from_millis(500);
    let sheddable = Duration::from_secs(1);
    let classes = Config::builder()
        .class(ClassSpec::new("critical", 32).with_deadline(deadline))
        .class(ClassSpec::new("c1", 32).with_weight(4).with_policy(OverloadPolicy::ShedOldest).with_deadline(sheddable))
        .class(ClassSpec::new("c2", 32).with_weight(2).with_policy(OverloadPolicy::ShedOldest).with_deadline(sheddable))
        .class(ClassSpec::new("c3", 32).with_policy(OverloadPolicy::ShedOldest).with_deadline(sheddable))
        .build()
        .expect("valid");
    // Two nodes, two workers each, 2 ms per event: about 1,600 events/s together.
    let service = Duration::from_millis(2);
    let rec = Recorder::with_service(service);
    let spec = RouteSpec::new(classes).workers(2);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let js = jetstream::new(connect(&url).await);
        let node = Node::builder(js, config.clone())
            .route(ROUTE, spec.clone(), rec.clone())
            .policy(ROUTE, "c1", ClassPolicy::on_shed(ShedAction::Nak(Duration::from_millis(250))))
            .policy(ROUTE, "c2", ClassPolicy::on_shed(ShedAction::Nak(Duration::from_millis(250))))
            .policy(ROUTE, "c3", ClassPolicy::on_shed(ShedAction::Term))
            .start()
            .await
            .expect("node");
        nodes.push(node);
    }
    // 3× that for 4 s: 48 events every 10 ms, one in ten critical.
    let class_of = |id: u64| match id % 10 {
        0 => "critical".to_string(),
        1..=3 => "c1".to_string(),
        4..=6 => "c2".to_string(),
        _ => "c3".to_string(),
    };
    let publisher = Publisher::new(js.clone(), &config);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut next = 0u64;
    for _ in 0..400 {
        tick.tick().await;
        publish_all(&publisher, next..next + 48, class_of).await;
        next += 48;
    }
    let n = next;
    let stored = stream_settled(&js, &config, &["critical", "c1", "c2", "c3"]).await;
    let mut reports = Vec::new();
    for node in nodes {
        reports.push(node.shutdown(Duration::from_secs(5)).await);
    }

    table(&[("a", &reports[0]), ("b", &reports[1])]);
    let lane = |name: &str, f: fn(&veltrix_nats::ClassReport) -> u64| -> u64 {
        reports.iter().flat_map(|r| &r.classes).filter(|c| c.class == name).map(f).sum()
    };
    let critical_p99 = rec.p99_ms(0);
    let termed: u64 = reports.iter().map(|r| r.sum(|c| c.termed)).sum();
    println!(
        "published {n}; critical p99 end-to-end {critical_p99:.1} ms (deadline {} ms); c1 nak {} c2 nak {} c3 term {}; \
         handled {} distinct, termed {termed}, exhausted {}",
        deadline.as_millis(),
        lane("c1", |c| c.naked),
        lane("c2", |c| c.naked),
        lane("c3", |c| c.termed),
        rec.distinct(),
        lane("c1", |c| c.exhausted) + lane("c2", |c| c.exhausted),
    );
    assert_eq!(stored, n);
    assert!(critical_p99 < deadline.as_secs_f64() * 1e3, "critical p99 {critical_p99:.1} ms past its deadline");
    assert_eq!(lane("critical", |c| c.naked + c.termed), 0, "no critical event was shed");
    assert!(lane("c1", |c| c.naked) + lane("c2", |c| c.naked) > 0, "nak'ed classes were shed");
    assert!(lane("c3", |c| c.termed) > 0, "the termed class was shed");
    for (name, r) in [("a", &reports[0]), ("b", &reports[1])] {
        check_ledger(name, r);
    }
    // Nothing vanished: every event was handled, or termed on purpose (and counted).
    assert_eq!(rec.distinct() as u64 + termed, n, "handled + termed = published");
    js.delete_stream(&config.stream).await.expect("cleanup");
    drop(client);
}

/// A nats-server of the test's own, which it can kill and start again on the same port and store.
struct OwnServer {
    port: u16,
    store: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl OwnServer {
    async fn start() -> OwnServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let store = std::env::temp_dir().join(format!("veltrix-nats-restart-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let mut s = OwnServer { port, store, child: None };
        s.spawn().await;
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = tokio::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server on PATH (ci/nats installs it)");
        self.child = Some(child);
        let start = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("killed");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn consumers_reconnect_and_finish_after_the_server_restarts() {
    const N: u64 = 20_000;
    let mut server = OwnServer::start().await;
    let url = server.url();
    let (_client, js, mut config) = fresh(&url, "restart").await;
    config = config.ack_wait(Duration::from_secs(3));
    let publisher = Publisher::new(js.clone(), &config);
    publish_all(&publisher, 0..N, |id| format!("c{}", id % 4)).await;

    let rec = Recorder::with_service(Duration::from_millis(1));
    let spec = RouteSpec::new(four_classes(128)).workers(4);
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let js = jetstream::new(connect(&url).await);
        nodes.push(
            Node::builder(js, config.clone()).route(ROUTE, spec.clone(), rec.clone()).start().await.expect("node"),
        );
    }
    wait_until("a quarter handled", Duration::from_secs(60), || rec.distinct() as u64 >= N / 4).await;
    server.kill().await;
    let at_kill = rec.distinct();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.spawn().await;
    wait_until("every event handled", Duration::from_secs(120), || rec.distinct() as u64 == N).await;
    let mut reports = Vec::new();
    for node in nodes {
        reports.push(node.shutdown(Duration::from_secs(5)).await);
    }
    let stored = stream_settled(&js, &config, &["c0", "c1", "c2", "c3"]).await;

    table(&[("a", &reports[0]), ("b", &reports[1])]);
    let errors: u64 = reports.iter().map(|r| r.sum(|c| c.fetch_errors + c.settle_failed)).sum();
    println!(
        "events {N}, handled before the restart {at_kill}, handler runs {}, duplicates {}, failed pulls/acks {errors}, lost {}",
        rec.total(),
        rec.duplicates(),
        N - rec.distinct() as u64
    );
    assert_eq!(stored, N, "file storage kept every event across the restart");
    assert!(at_kill < N as usize, "the restart happened mid-run");
    assert_eq!(rec.distinct() as u64, N, "lost events");
    for (name, r) in [("a", &reports[0]), ("b", &reports[1])] {
        check_ledger(name, r);
    }
}

/// S5 (docs/scenarios.md) against the real server: events wait locally longer than `ack_wait`, the server
/// redelivers them, and the copies queue behind the originals.
async fn naive_buffering(consumer: PullConsumer, rec: Recorder, run_for: Duration) -> (u64, bool) {
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let fetcher = {
        let queue = queue.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            loop {
                let Ok(mut batch) =
                    consumer.batch().max_messages(500).expires(Duration::from_millis(100)).messages().await
                else {
                    continue;
                };
                while let Some(Ok(m)) = batch.next().await {
                    queue.lock().unwrap().push_back(m);
                }
            }
        })
    };
    let start = tokio::time::Instant::now();
    let mut finished = false;
    let mut backlog_max = 0;
    while start.elapsed() < run_for {
        let next = {
            let mut q = queue.lock().unwrap();
            backlog_max = backlog_max.max(q.len());
            q.pop_front()
        };
        let Some(m) = next else {
            if rec.distinct() as u64 == STORM_EVENTS && queue.lock().unwrap().is_empty() {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let (id, _) = decode(&m.payload);
        tokio::time::sleep(STORM_SERVICE).await;
        rec.record(id);
        let _ = m.ack().await;
    }
    fetcher.abort();
    println!("naive: largest local backlog {backlog_max}");
    (start.elapsed().as_millis() as u64, finished)
}

const STORM_EVENTS: u64 = 3_000;
const STORM_SERVICE: Duration = Duration::from_millis(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn s5_redelivery_storm_naive_buffering_goes_metastable_credit_does_not() {
    let url = nats_url();
    let ack_wait = Duration::from_secs(2);
    let mut rows = Vec::new();
    for design in ["naive-buffer", "veltrix-credit"] {
        let (_client, js, mut config) = fresh(&url, &format!("storm-{design}")).await;
        config = config.ack_wait(ack_wait).max_deliver(-1).max_ack_pending(-1);
        let publisher = Publisher::new(js.clone(), &config);
        publish_all(&publisher, 0..STORM_EVENTS, |_| "bulk".to_string()).await;
        let rec = Recorder::with_service(STORM_SERVICE);
        let classes = Config::builder().class(ClassSpec::new("bulk", 4096)).build().expect("valid");
        let run_for = Duration::from_secs(20);
        let (elapsed_ms, finished) = if design == "naive-buffer" {
            let stream = js.get_stream(&config.stream).await.expect("stream");
            let durable = config.durable(ROUTE, "bulk");
            let consumer: PullConsumer = stream
                .get_or_create_consumer(
                    &durable,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: config.subject(ROUTE, "bulk"),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait,
                        max_ack_pending: -1,
                        ..Default::default()
                    },
                )
                .await
                .expect("consumer");
            naive_buffering(consumer, rec.clone(), run_for).await
        } else {
            // One worker at ~2 ms per event: about 400 events/s; credit 200 keeps the local wait
            // near 0.5 s, well inside ack_wait (the Little's-law bound would allow 400).
            config = config.service_rate(200.0);
            let node = Node::builder(js.clone(), config.clone())
                .route(ROUTE, RouteSpec::new(classes).workers(1), rec.clone())
                .policy(ROUTE, "bulk", ClassPolicy::default().with_credit(200))
                .start()
                .await
                .expect("node");
            let start = tokio::time::Instant::now();
            while start.elapsed() < run_for && (rec.distinct() as u64) < STORM_EVENTS {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let finished = rec.distinct() as u64 == STORM_EVENTS;
            let elapsed = start.elapsed().as_millis() as u64;
            let report = node.shutdown(Duration::from_secs(2)).await;
            check_ledger("credit", &report);
            println!("credit: stale copies dropped {}, held at most {}", report.sum(|c| c.stale), report.max_held);
            (elapsed, finished)
        };
        rows.push((design, rec.distinct(), rec.total(), rec.duplicates(), elapsed_ms, finished));
        js.delete_stream(&config.stream).await.expect("cleanup");
    }

    println!(
        "\n## S5 redelivery storm on nats-server (ack_wait {} s, {STORM_EVENTS} events, ~400/s)\n",
        ack_wait.as_secs()
    );
    println!("| design | handled distinct | handler runs | duplicates | time ms | finished |");
    println!("|---|---:|---:|---:|---:|---|");
    for (design, distinct, runs, dups, ms, fin) in &rows {
        println!("| {design} | {distinct} | {runs} | {dups} | {ms} | {fin} |");
    }
    let (naive, credit) = (&rows[0], &rows[1]);
    assert!(credit.5, "the credit-based source finished the backlog");
    assert_eq!(credit.3, 0, "no duplicates under credit");
    assert!(
        naive.3 >= STORM_EVENTS / 2,
        "naive local buffering piles duplicates up (got {} duplicates for {STORM_EVENTS} events)",
        naive.3
    );
}

/// A node under adaptive admission pulls only what its controller admits: with a 3,000-event
/// backlog in the stream and a class capacity (so credit) of 1,000, it holds about rate × target
/// events, where the same node with static admission holds its whole credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn an_adaptive_node_sizes_its_pulls_from_the_controller() {
    let url = nats_url();
    let target = Duration::from_millis(200);
    let mut rows = Vec::new();
    for design in ["static", "adaptive"] {
        let (_client, js, config) = fresh(&url, &format!("adaptive-{design}")).await;
        // ack_wait far above what either design can hold, so no redelivery muddles the numbers.
        let config = config.ack_wait(Duration::from_secs(30));
        let publisher = Publisher::new(js.clone(), &config);
        publish_all(&publisher, 0..STORM_EVENTS, |_| "bulk".to_string()).await;
        let rec = Recorder::with_service(STORM_SERVICE);
        let class = ClassSpec::new("bulk", 1_000);
        let classes = Config::builder().class(class);
        let classes = if design == "adaptive" { classes.adaptive(Adaptive::new(target)) } else { classes };
        let node = Node::builder(js.clone(), config.clone())
            .route(ROUTE, RouteSpec::new(classes.build().expect("valid")).workers(1), rec.clone())
            .start()
            .await
            .expect("node");
        wait_until("the backlog handled", Duration::from_secs(60), || rec.distinct() as u64 == STORM_EVENTS).await;
        let report = node.shutdown(Duration::from_secs(2)).await;
        check_ledger(design, &report);
        assert_eq!(rec.duplicates(), 0, "{design}: nothing ran twice");
        rows.push((design, report));
        js.delete_stream(&config.stream).await.expect("cleanup");
    }
    table(&rows.iter().map(|(d, r)| (*d, r)).collect::<Vec<_>>());
    let (fixed, adaptive) = (&rows[0].1, &rows[1].1);
    // One worker at 2 ms or more per event serves at most 500 a second: 500/s × 200 ms = 100.
    assert!(fixed.max_held >= 900, "static admission pulls its whole credit: held {}", fixed.max_held);
    assert!(adaptive.max_held <= 250, "adaptive holds about rate × target: held {}", adaptive.max_held);
}

/// Sleeps `slow` for even ids (longer than ack_wait) and fails odd ids for good.
#[derive(Clone)]
struct SlowOrFailing {
    slow: Duration,
    runs: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Handler<NatsEvent> for SlowOrFailing {
    fn handle(&self, e: &NatsEvent, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let (id, _) = decode(e.payload());
        *self.runs.lock().unwrap().entry(id).or_default() += 1;
        let slow = self.slow;
        async move {
            if id % 2 == 1 {
                return Outcome::Fatal;
            }
            tokio::time::sleep(slow).await;
            Outcome::Ok
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn long_handlers_send_progress_failures_end_exhausted_and_ids_deduplicate() {
    let url = nats_url();
    const N: u64 = 20;
    let (_client, js, mut config) = fresh(&url, "progress").await;
    config = config.ack_wait(Duration::from_secs(1)).max_deliver(2);
    let publisher = Publisher::new(js.clone(), &config);
    publish_all(&publisher, 0..N, |_| "c0".to_string()).await;
    let again = publisher.publish(ROUTE, "c0", "ev-0", payload(0)).await.expect("published");
    assert!(again.duplicate, "a second publish with the same Nats-Msg-Id is recognised");

    let runs = Arc::new(Mutex::new(HashMap::new()));
    let handler = SlowOrFailing { slow: Duration::from_millis(2500), runs: runs.clone() };
    let spec = RouteSpec::new(four_classes(32)).workers(N as usize).retry(veltrix_engine::runtime::RetryPolicy::none());
    let node = Node::builder(js.clone(), config.clone()).route(ROUTE, spec, handler).start().await.expect("node");
    let stored = stream_settled(&js, &config, &["c0"]).await;
    let report = node.shutdown(Duration::from_secs(5)).await;
    table(&[("node", &report)]);

    let c0 = report.classes.iter().find(|c| c.class == "c0").expect("lane");
    let runs = runs.lock().unwrap().clone();
    assert_eq!(stored, N, "the duplicate publish was not stored");
    assert!(c0.progress >= N / 2 * 2, "each 2.5 s handler sent progress at least twice within a 1 s ack_wait: {c0:?}");
    for id in (0..N).step_by(2) {
        assert_eq!(runs[&id], 1, "slow event {id} ran once: progress kept it from being redelivered");
    }
    for id in (1..N).step_by(2) {
        assert_eq!(runs[&id], 2, "failing event {id} was delivered max_deliver = 2 times");
    }
    assert_eq!(c0.redelivered, N / 2, "only the failing events came back: {c0:?}");
    assert_eq!(c0.stale, 0, "no slow event was redelivered while running: {c0:?}");
    assert_eq!(c0.exhausted, N / 2, "every failing event ended exhausted: {c0:?}");
    assert_eq!(c0.termed, N / 2);
    assert_eq!(c0.acked, N / 2);
    check_ledger("node", &report);
}

/// Settings are checked before anything is asked of the server (the client here never connects).
#[tokio::test]
async fn bad_settings_are_typed_errors() {
    let client =
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect("127.0.0.1:1").await.expect("lazy");
    let js = jetstream::new(client);
    let start = |config: NodeConfig, route: &str, policy: Option<(&str, ClassPolicy)>| {
        let mut b =
            Node::builder(js.clone(), config).route(route, RouteSpec::new(four_classes(64)), Recorder::default());
        if let Some((class, p)) = policy {
            b = b.policy(route, class, p);
        }
        b.start()
    };
    let err = start(NodeConfig::new("S"), "a.b", None).await.unwrap_err();
    assert!(matches!(err, veltrix_nats::NodeError::InvalidName { what: "route", .. }), "{err}");
    let err = start(NodeConfig::new("S"), "r", Some(("nope", ClassPolicy::default()))).await.unwrap_err();
    assert!(matches!(err, veltrix_nats::NodeError::UnknownClass { .. }), "{err}");
    let err = start(NodeConfig::new("S"), "r", Some(("c0", ClassPolicy::default().with_credit(0)))).await.unwrap_err();
    assert!(matches!(err, veltrix_nats::NodeError::InvalidSetting { setting: "credit", .. }), "{err}");
    // 4 classes × 64 credit = 256 > 100/s × 2 s / 2 = 100.
    let config = NodeConfig::new("S").ack_wait(Duration::from_secs(2)).service_rate(100.0);
    let err = start(config, "r", None).await.unwrap_err();
    assert!(matches!(err, veltrix_nats::NodeError::CreditExceedsAckWait { credit: 256, bound: 100 }), "{err}");
    let mut config = NodeConfig::new("S");
    config.progress_every = Duration::from_secs(20);
    let err = start(config, "r", None).await.unwrap_err();
    assert!(matches!(err, veltrix_nats::NodeError::InvalidSetting { setting: "progress_every", .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn redelivered_copies_of_held_events_are_recognised_not_run_twice() {
    let url = nats_url();
    const N: u64 = 60;
    let (_client, js, mut config) = fresh(&url, "stale").await;
    // One worker at 50 ms per event holds 3 s of work: without a service_rate the node accepts
    // this credit, and the events at the back wait past the 1 s ack_wait.
    config = config.ack_wait(Duration::from_secs(1));
    let publisher = Publisher::new(js.clone(), &config);
    publish_all(&publisher, 0..N, |_| "c0".to_string()).await;
    let rec = Recorder::with_service(Duration::from_millis(50));
    let spec = RouteSpec::new(four_classes(N as usize)).workers(1);
    let node = Node::builder(js.clone(), config.clone()).route(ROUTE, spec, rec.clone()).start().await.expect("node");
    wait_until("every event handled", Duration::from_secs(60), || rec.distinct() as u64 == N).await;
    let stored = stream_settled(&js, &config, &["c0"]).await;
    let report = node.shutdown(Duration::from_secs(5)).await;
    table(&[("node", &report)]);
    let c0 = &report.classes[0];
    assert_eq!(stored, N);
    assert!(c0.stale > 0, "the server redelivered events still queued here: {c0:?}");
    assert_eq!(rec.total(), N, "and none ran twice: {c0:?}");
    assert_eq!(c0.acked, N);
    check_ledger("node", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: run ci/nats"]
async fn shutdown_hands_the_backlog_back_at_once_and_consumers_keep_their_settings() {
    let url = nats_url();
    const N: u64 = 400;
    let (_client, js, config) = fresh(&url, "handback").await;
    // ack_wait 30 s: if shutdown left events to it, the second node would wait that long.
    let publisher = Publisher::new(js.clone(), &config);
    publish_all(&publisher, 0..N, |id| format!("c{}", id % 4)).await;
    let rec = Recorder::with_service(Duration::from_millis(5));
    let spec = RouteSpec::new(four_classes(64)).workers(1);
    let first =
        Node::builder(js.clone(), config.clone()).route(ROUTE, spec.clone(), rec.clone()).start().await.expect("node");
    wait_until("some handled", Duration::from_secs(30), || rec.distinct() >= 20).await;
    let stopped = first.shutdown(Duration::ZERO).await;
    let handed_back = stopped.sum(|c| c.naked);

    let mismatched = config.clone().ack_wait(Duration::from_secs(5));
    let err = Node::builder(js.clone(), mismatched).route(ROUTE, spec.clone(), rec.clone()).start().await.unwrap_err();
    assert!(
        matches!(&err, veltrix_nats::NodeError::ConsumerMismatch { setting: "ack_wait", .. }),
        "an existing durable is not silently reused with other settings: {err}"
    );

    let t = tokio::time::Instant::now();
    let second = Node::builder(js.clone(), config.clone()).route(ROUTE, spec, rec.clone()).start().await.expect("node");
    wait_until("every event handled", Duration::from_secs(20), || rec.distinct() as u64 == N).await;
    let took = t.elapsed();
    let finished = second.shutdown(Duration::from_secs(5)).await;
    stream_settled(&js, &config, &["c0", "c1", "c2", "c3"]).await;
    table(&[("stopped", &stopped), ("second", &finished)]);
    println!("handed back {handed_back}; the second node finished the rest in {took:?}");
    assert!(handed_back > 0, "the first node held events at shutdown and nak'ed them: {:#?}", stopped.classes);
    assert!(took < config.ack_wait, "nothing waited for ack_wait ({took:?})");
    assert_eq!(rec.distinct() as u64, N, "lost events");
    check_ledger("stopped", &stopped);
    check_ledger("second", &finished);
}
