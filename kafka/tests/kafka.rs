//! veltrix-kafka against a real broker (Apache Kafka in KRaft mode, one node on loopback).
//! `ci/kafka` starts it, exports `KAFKA_BOOTSTRAP` (and `KAFKA_BROKER_RESTART`, a script that
//! kills and restarts it) and runs the tests marked `#[ignore]`; a plain `cargo test` lists
//! them as ignored.
//!
//! Every test publishes events whose payload starts with `(id, publish time)`, records every
//! handler run by `(topic, partition, offset)`, and checks at the end that no event was lost
//! (each was handled or is in the dead-letter topic), how many ran twice, and that the group's
//! committed offsets agree.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use veltrix_engine::runtime::{Handler, HandlerContext, Outcome, RouteSpec};
use veltrix_engine::{ClassSpec, Config, OverloadPolicy};
use veltrix_kafka::{
    ClassPolicy, KafkaEvent, Node, NodeConfig, NodeError, NodeReport, PublishError, Publisher, ensure_topics,
};

const ROUTE: &str = "orders";
const PARTITIONS: i32 = 4;

/// The broker `ci/kafka` started.
fn bootstrap() -> String {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!("KAFKA_BOOTSTRAP is not set: run `ci/kafka`, which starts a broker and runs these tests"),
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

/// `(id, publish time)` and `pad` bytes more.
fn payload(id: u64, pad: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + pad);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&now_ns().to_le_bytes());
    b.resize(16 + pad, 0);
    b
}

fn decode(p: &[u8]) -> (u64, u64) {
    let id = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    let at = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
    (id, at)
}

type Coordinates = (String, i32, i64);

/// Counts handler runs per event and end-to-end latency (publish → handler start) per class.
#[derive(Clone, Default)]
struct Recorder {
    state: Arc<Mutex<Runs>>,
    service: Duration,
    /// Ids whose handler fails for good (dead-lettered `handler_failed`).
    fatal_every: Option<u64>,
}

#[derive(Default)]
struct Runs {
    per_event: HashMap<Coordinates, u32>,
    total: u64,
    latency_ns: HashMap<usize, Vec<u64>>,
}

impl Recorder {
    fn with_service(service: Duration) -> Recorder {
        Recorder { service, ..Recorder::default() }
    }

    fn distinct(&self) -> usize {
        self.state.lock().unwrap().per_event.len()
    }

    fn total(&self) -> u64 {
        self.state.lock().unwrap().total
    }

    fn duplicates(&self) -> u64 {
        self.state.lock().unwrap().per_event.values().map(|&n| u64::from(n) - 1).sum()
    }

    fn handled(&self, topic: &str) -> usize {
        self.state.lock().unwrap().per_event.keys().filter(|(t, ..)| t == topic).count()
    }

    fn latencies_ms(&self, class: usize) -> Vec<f64> {
        let st = self.state.lock().unwrap();
        let mut v: Vec<f64> =
            st.latency_ns.get(&class).map(|v| v.iter().map(|&ns| ns as f64 / 1e6).collect()).unwrap_or_default();
        v.sort_by(f64::total_cmp);
        v
    }

    fn p99_ms(&self, class: usize) -> f64 {
        let v = self.latencies_ms(class);
        assert!(!v.is_empty(), "class {class} never handled");
        v[(v.len() * 99).div_ceil(100) - 1]
    }
}

impl Handler<KafkaEvent> for Recorder {
    fn handle(&self, e: &KafkaEvent, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let (id, published) = decode(e.payload());
        let started = now_ns();
        let class = e.class().index();
        let at = (e.topic().to_string(), e.partition(), e.offset());
        let rec = self.clone();
        async move {
            if !rec.service.is_zero() {
                tokio::time::sleep(rec.service).await;
            }
            if rec.fatal_every.is_some_and(|n| id % n == n - 1) {
                return Outcome::Fatal;
            }
            let mut st = rec.state.lock().unwrap();
            *st.per_event.entry(at).or_default() += 1;
            st.total += 1;
            st.latency_ns.entry(class).or_default().push(started.saturating_sub(published));
            Outcome::Ok
        }
    }
}

/// Counts events and adds up their ids (the throughput benchmark's handler).
#[derive(Clone, Default)]
struct Counting(Arc<Counts>);

#[derive(Default)]
struct Counts {
    count: AtomicU64,
    sum: AtomicU64,
}

impl Handler<KafkaEvent> for Counting {
    fn handle(&self, e: &KafkaEvent, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        self.0.sum.fetch_add(decode(e.payload()).0, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Outcome::Ok)
    }
}

/// Fresh topics (and a fresh group) per test, so tests never see each other's events.
async fn fresh(name: &str, classes: &[&str]) -> NodeConfig {
    let tag = format!("{name}-{}-{}", std::process::id(), now_ns() % 1_000_000_000);
    let config = NodeConfig::new(bootstrap(), format!("{tag}-group"))
        .topic_prefix(tag)
        .session_timeout(Duration::from_secs(3))
        .commit_every(Duration::from_millis(100));
    let topics: Vec<(&str, &str)> = classes.iter().map(|c| (ROUTE, *c)).collect();
    ensure_topics(&config, &topics, PARTITIONS, 1).await.expect("topics created");
    config
}

fn classes(names: &[&str], capacity: usize) -> Config {
    names.iter().fold(Config::builder(), |b, n| b.class(ClassSpec::new(*n, capacity))).build().expect("valid")
}

/// Publishes `ids` (class = the function's answer), 2,000 in flight.
async fn publish_all(p: &Publisher, ids: impl Iterator<Item = u64>, class: impl Fn(u64) -> &'static str, pad: usize) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(2_000) {
        let sends = chunk.iter().map(|&id| {
            let class = class(id);
            async move { p.publish(ROUTE, class, Some(&id.to_le_bytes()), &payload(id, pad)).await }
        });
        for r in join_all(sends).await {
            r.expect("published");
        }
    }
}

/// Waits until the group has given `node` every partition of its `topics` topics.
async fn wait_assigned(node: &Node, topics: usize) {
    let all = topics * PARTITIONS as usize;
    wait_until("partitions assigned", Duration::from_secs(30), || node.assigned() == all).await;
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn plain_consumer(group: &str) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap()).set("enable.auto.commit", "false").set("group.id", group);
    c.create().expect("consumer")
}

/// Per partition of each class topic: (end offset, committed offset of the node's group).
fn offsets(config: &NodeConfig, classes: &[&str]) -> BTreeMap<(String, i32), (i64, i64)> {
    let c = plain_consumer(config.group());
    let mut tpl = TopicPartitionList::new();
    for class in classes {
        for p in 0..PARTITIONS {
            tpl.add_partition(&config.topic(ROUTE, class), p);
        }
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    let mut out = BTreeMap::new();
    for e in committed.elements() {
        let (_, end) = c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10)).expect("watermarks");
        let done = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        out.insert((e.topic().to_string(), e.partition()), (end, done));
    }
    out
}

/// One record of the dead-letter topic.
#[derive(Debug)]
struct Dead {
    reason: String,
    class: String,
    at: Coordinates,
}

/// Reads the whole dead-letter topic (until `expect` records came and nothing more for 1 s).
fn read_dlq(config: &NodeConfig, expect: usize) -> Vec<Dead> {
    // Assigned, not subscribed: the group only names the reader, nothing is committed.
    let c = plain_consumer(&format!("{}-dlq-reader", config.group()));
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&config.dlq_topic(), p, Offset::Beginning).expect("offset");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && (out.len() < expect || quiet_since.elapsed() < Duration::from_secs(1)) {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let h = m.headers().expect("dead letters carry headers");
                let get = |k: &str| {
                    let v = h.iter().find(|x| x.key == k).and_then(|x| x.value).unwrap_or_else(|| panic!("header {k}"));
                    String::from_utf8(v.to_vec()).expect("utf-8")
                };
                out.push(Dead {
                    reason: get("veltrix-reason"),
                    class: get("veltrix-class"),
                    at: (
                        get("veltrix-topic"),
                        get("veltrix-partition").parse().unwrap(),
                        get("veltrix-offset").parse().unwrap(),
                    ),
                });
            }
            Some(Err(e)) => panic!("reading the dead-letter topic: {e}"),
            None => {}
        }
    }
    out
}

/// Every partition's events are each handled or dead-lettered (none lost), and the group's
/// committed offset stands at the partition's end: committed = handled + dead-lettered.
/// Returns (events, lost).
fn check_nothing_lost(config: &NodeConfig, classes: &[&str], rec: &Recorder, dead: &[Dead]) -> (u64, u64) {
    let st = rec.state.lock().unwrap();
    let dead_at: std::collections::HashSet<&Coordinates> = dead.iter().map(|d| &d.at).collect();
    let mut events = 0;
    let mut lost = 0;
    let mut committed = 0;
    for ((topic, p), (end, done)) in offsets(config, classes) {
        events += end as u64;
        committed += done as u64;
        for o in 0..end {
            let at = (topic.clone(), p, o);
            if !st.per_event.contains_key(&at) && !dead_at.contains(&at) {
                lost += 1;
            }
        }
        assert_eq!(done, end, "{topic}/{p}: committed offset {done} short of the end {end}");
    }
    let handled_or_dead = st.per_event.len() as u64 + dead.len() as u64;
    let overlap = dead.iter().filter(|d| st.per_event.contains_key(&d.at)).count();
    assert_eq!(overlap, 0, "an event both handled and dead-lettered");
    assert_eq!(committed, handled_or_dead, "committed offsets = handled + dead-lettered");
    (events, lost)
}

fn check_ledger(name: &str, r: &NodeReport) {
    // `late` and `handed_back` events end as handled or left too: not counted again.
    let ends = r.sum(|c| c.handled + c.dead_lettered + c.left);
    assert_eq!(r.sum(|c| c.taken), ends, "{name}: every event taken ends once: {:#?}", r.classes);
    assert_eq!(r.sum(|c| c.gaps), 0, "{name}: a plain topic has no offset gaps");
    let t = r.engine.stats.total();
    assert!(t.conserved() && t.queued == 0 && t.in_flight() == 0, "{name}: engine ledger settled: {t:?}");
}

fn table(rows: &[(&str, &NodeReport)]) {
    println!("| node | taken | handled | dead-lettered | held back | handed back | left | late | max held / credit |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            r.sum(|c| c.taken),
            r.sum(|c| c.handled),
            r.sum(|c| c.dead_lettered),
            r.sum(|c| c.held_back),
            r.sum(|c| c.handed_back),
            r.sum(|c| c.left),
            r.sum(|c| c.late),
            r.max_held,
            r.sum(|c| c.credit as u64),
        );
    }
}

const FOUR: [&str; 4] = ["c0", "c1", "c2", "c3"];

fn class_of(id: u64) -> &'static str {
    FOUR[(id % 4) as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn two_nodes_share_100k_events_over_four_classes_and_lose_none() {
    const N: u64 = 100_000;
    let config = fresh("share", &FOUR).await;
    // Every 1000th event fails for good: dead-lettered `handler_failed`, then committed.
    let rec = Recorder { fatal_every: Some(1000), ..Recorder::with_service(Duration::from_millis(1)) };
    let spec = RouteSpec::new(classes(&FOUR, 256)).workers(8);
    let start = || Node::builder(config.clone()).route(ROUTE, spec.clone(), rec.clone()).start();
    let a = start().await.expect("node a");
    let publisher = Publisher::new(&config).expect("publisher");
    publish_all(&publisher, 0..N / 2, class_of, 0).await;
    // The second node joins mid-run: the group moves partitions from a to b while a holds
    // events of them (revocation waits for them, then commits).
    wait_until("a tenth handled", Duration::from_secs(60), || rec.distinct() as u64 >= N / 10).await;
    let b = start().await.expect("node b");
    wait_until("b assigned", Duration::from_secs(30), || b.assigned() > 0).await;
    publish_all(&publisher, N / 2..N, class_of, 0).await;
    let failing = N / 1000;
    wait_until("every event handled", Duration::from_secs(240), || rec.distinct() as u64 == N - failing).await;
    // Dead letters are written before their offsets are committed: give the last a moment.
    wait_until("dead letters written", Duration::from_secs(30), || {
        a.report().iter().chain(b.report().iter()).map(|c| c.dead_lettered).sum::<u64>() == failing
    })
    .await;
    let reports = [a.shutdown(Duration::from_secs(5)).await, b.shutdown(Duration::from_secs(5)).await];
    let dead = read_dlq(&config, failing as usize);

    table(&[("a", &reports[0]), ("b", &reports[1])]);
    let (events, lost) = check_nothing_lost(&config, &FOUR, &rec, &dead);
    println!(
        "events {events}, handler runs {}, duplicates {}, dead-lettered {}, lost {lost}",
        rec.total(),
        rec.duplicates(),
        dead.len()
    );
    assert_eq!((events, lost), (N, 0));
    assert!(dead.iter().all(|d| d.reason == "handler_failed"), "{dead:?}");
    for (name, r) in [("a", &reports[0]), ("b", &reports[1])] {
        check_ledger(name, r);
        assert!(r.sum(|c| c.handled) > 0, "node {name} took part: {:#?}", r.classes);
        assert!(r.max_held as u64 <= r.sum(|c| c.credit as u64), "{name} held more than its credit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn a_killed_node_process_loses_nothing_the_survivor_takes_its_partitions() {
    const N: u64 = 20_000;
    let config = fresh("kill", &FOUR).await;
    let prefix = config.prefix().to_string();
    // The victim is a process of its own (examples/recording_node.rs), killed with SIGKILL:
    // no shutdown, no last commit, no leaving the group. It writes a line per handled event.
    let lines = std::env::temp_dir().join(format!("{prefix}.handled"));
    let example = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("examples/recording_node");
    assert!(example.exists(), "{} missing: cargo test builds the examples", example.display());
    let mut victim = tokio::process::Command::new(&example)
        .args([bootstrap(), config.group().to_string(), prefix.clone(), lines.display().to_string(), "1".into()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("victim started");
    let mut ready = String::new();
    let stdout = victim.stdout.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(stdout);
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut ready).await.unwrap();
    assert_eq!(ready.trim(), "ready");

    let rec = Recorder::with_service(Duration::from_millis(1));
    let spec = RouteSpec::new(classes(&FOUR, 128)).workers(4);
    let survivor = Node::builder(config.clone()).route(ROUTE, spec, rec.clone()).start().await.expect("survivor");
    let publisher = Publisher::new(&config).expect("publisher");
    publish_all(&publisher, 0..N, class_of, 0).await;
    let victim_handled = || std::fs::read_to_string(&lines).map_or(0, |s| s.lines().count());
    wait_until("the victim handled 2,000", Duration::from_secs(60), || victim_handled() >= 2_000).await;
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.expect("reaped");
    // The victim's lines join the survivor's runs.
    let at_kill = std::fs::read_to_string(&lines).unwrap();
    {
        let mut st = rec.state.lock().unwrap();
        for line in at_kill.lines() {
            let mut f = line.split(' ');
            let at =
                (f.next().unwrap().to_string(), f.next().unwrap().parse().unwrap(), f.next().unwrap().parse().unwrap());
            *st.per_event.entry(at).or_default() += 1;
            st.total += 1;
        }
    }
    wait_until("every event handled", Duration::from_secs(120), || rec.distinct() as u64 == N).await;
    let survived = survivor.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_file(&lines);

    table(&[("survivor", &survived)]);
    let (events, lost) = check_nothing_lost(&config, &FOUR, &rec, &[]);
    println!(
        "events {events}, handled by the victim before the kill {}, handler runs {}, duplicates {}, lost {lost}",
        at_kill.lines().count(),
        rec.total(),
        rec.duplicates(),
    );
    assert_eq!((events, lost), (N, 0));
    check_ledger("survivor", &survived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn nodes_reconnect_after_the_broker_restarts_and_lose_nothing() {
    const N: u64 = 20_000;
    let restart = std::env::var("KAFKA_BROKER_RESTART").expect("KAFKA_BROKER_RESTART: run ci/kafka");
    let config = fresh("restart", &FOUR).await;
    let rec = Recorder::with_service(Duration::from_millis(1));
    let spec = RouteSpec::new(classes(&FOUR, 128)).workers(4);
    let node = Node::builder(config.clone()).route(ROUTE, spec, rec.clone()).start().await.expect("node");
    let publisher = Publisher::new(&config).expect("publisher");
    publish_all(&publisher, 0..N / 2, class_of, 0).await;
    wait_until("a quarter handled", Duration::from_secs(60), || rec.distinct() as u64 >= N / 4).await;
    let status = tokio::process::Command::new(&restart).status().await.expect("restart script ran");
    assert!(status.success(), "broker restarted");
    publish_all(&publisher, N / 2..N, class_of, 0).await;
    wait_until("every event handled", Duration::from_secs(180), || rec.distinct() as u64 == N).await;
    // Commits that failed while the broker was down are sent again: let the last one land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = node.shutdown(Duration::from_secs(5)).await;

    table(&[("node", &report)]);
    let (events, lost) = check_nothing_lost(&config, &FOUR, &rec, &[]);
    println!("events {events}, handler runs {}, duplicates {}, lost {lost}", rec.total(), rec.duplicates());
    assert_eq!((events, lost), (N, 0));
    check_ledger("node", &report);
}

/// The process's resident memory, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// Publishes `per_tick` events of `class` every 10 ms until `stop`; returns how many.
fn steady(
    p: &Publisher,
    class: &'static str,
    per_tick: u64,
    first_id: u64,
    stop: Instant,
) -> tokio::task::JoinHandle<u64> {
    let p = p.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut id = first_id;
        let mut sends = tokio::task::JoinSet::new();
        while Instant::now() < stop {
            tick.tick().await;
            for _ in 0..per_tick {
                let p = p.clone();
                sends.spawn(async move { p.publish(ROUTE, class, Some(&id.to_le_bytes()), &payload(id, 64)).await });
                id += 1;
            }
        }
        while let Some(r) = sends.join_next().await {
            r.expect("task").expect("published");
        }
        id - first_id
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn critical_meets_its_deadline_over_a_million_event_bulk_backlog_in_bounded_memory() {
    const BULK: u64 = 1_000_000;
    let config = fresh("backlog", &["CRITICAL", "BULK"]).await;
    let publisher = Publisher::new(&config).expect("publisher");
    let t = Instant::now();
    publish_all(&publisher, 0..BULK, |_| "BULK", 84).await;
    println!("published {BULK} bulk events of 100 bytes in {:.1} s", t.elapsed().as_secs_f64());
    let deadline = Duration::from_millis(500);
    let spec = RouteSpec::new(
        Config::builder()
            .class(ClassSpec::new("CRITICAL", 64).with_deadline(deadline))
            .class(ClassSpec::new("BULK", 512))
            .build()
            .unwrap(),
    )
    .workers(4);
    let rec = Recorder::with_service(Duration::from_millis(1));
    let rss_before = rss_mib();
    let node = Node::builder(config.clone()).route(ROUTE, spec, rec.clone()).start().await.expect("node");
    wait_assigned(&node, 2).await;
    let bulk_topic = config.topic(ROUTE, "BULK");
    wait_until("bulk draining", Duration::from_secs(30), || rec.handled(&bulk_topic) > 1_000).await;
    // Critical events at 100/s for 15 s while the bulk backlog drains.
    let critical = steady(&publisher, "CRITICAL", 1, BULK, Instant::now() + Duration::from_secs(15));
    let mut rss_max = rss_before;
    while !critical.is_finished() {
        rss_max = rss_max.max(rss_mib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = critical.await.unwrap();
    let crit_topic = config.topic(ROUTE, "CRITICAL");
    wait_until("every critical event handled", Duration::from_secs(30), || rec.handled(&crit_topic) as u64 >= sent)
        .await;
    let (_, max_held) = node.held();
    let credit = node.credit();
    let report = node.shutdown(Duration::from_secs(2)).await;

    table(&[("node", &report)]);
    let p99 = rec.p99_ms(0);
    let on_time = rec.latencies_ms(0).iter().filter(|&&ms| ms <= deadline.as_secs_f64() * 1e3).count();
    let bulk_done = rec.handled(&bulk_topic);
    println!(
        "critical: {sent} sent, {on_time} on time, p99 {p99:.1} ms (deadline {} ms); bulk handled meanwhile {bulk_done} of {BULK}",
        deadline.as_millis()
    );
    println!(
        "memory: RSS {rss_before:.0} MiB before the node, at most {rss_max:.0} MiB during; held at most {max_held} of credit {credit}"
    );
    assert!(p99 <= deadline.as_secs_f64() * 1e3, "critical p99 {p99:.1} ms over its deadline");
    assert!(on_time as f64 >= 0.99 * sent as f64, "critical goodput {on_time}/{sent}");
    assert!((bulk_done as u64) < BULK / 2, "the backlog was still draining while critical ran");
    assert!(max_held <= credit, "held {max_held} > credit {credit}");
    // 1,000,000 × 100 bytes is about 95 MiB of payload alone: the node kept it in Kafka.
    assert!(rss_max - rss_before < 64.0, "RSS grew by {:.0} MiB", rss_max - rss_before);
    let bulk = report.classes.iter().find(|c| c.class == "BULK").unwrap();
    assert!(bulk.taken <= bulk.handled + bulk.credit as u64, "bulk took only what it handled: {bulk:?}");
    let t = report.engine.stats.total();
    assert!(t.conserved(), "engine ledger: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn three_x_overload_keeps_critical_and_dead_letters_bulk_with_reasons() {
    let config = fresh("overload", &["CRITICAL", "BULK"]).await;
    let crit_deadline = Duration::from_secs(1);
    let spec = RouteSpec::new(
        Config::builder()
            .class(ClassSpec::new("CRITICAL", 64).with_deadline(crit_deadline))
            .class(
                ClassSpec::new("BULK", 128)
                    .with_policy(OverloadPolicy::Reject)
                    .with_deadline(Duration::from_millis(300)),
            )
            .build()
            .unwrap(),
    )
    .workers(2);
    // Two workers at 2 ms (a tokio sleep of 2 ms takes about 3): about 650 events/s.
    // Offered: 200 critical and 1,600 bulk events/s, about 3×.
    let rec = Recorder::with_service(Duration::from_millis(2));
    let node = Node::builder(config.clone())
        .route(ROUTE, spec, rec.clone())
        .policy(ROUTE, "BULK", ClassPolicy::credit(128))
        .start()
        .await
        .expect("node");
    wait_assigned(&node, 2).await;
    let publisher = Publisher::new(&config).expect("publisher");
    // Warm-up: a node's first fetch of a newly assigned partition comes up to a second after
    // the assignment (offsets looked up, fetch sessions opened); measure from when it reads.
    const WARM: u64 = 32;
    publish_all(&publisher, (1 << 40)..(1 << 40) + WARM, |id| if id % 2 == 0 { "CRITICAL" } else { "BULK" }, 64).await;
    // (A bulk one may expire on the way: dead-lettered.)
    wait_until("the warm-up handled", Duration::from_secs(30), || {
        node.report().iter().map(|c| c.handled + c.dead_lettered).sum::<u64>() == WARM
    })
    .await;
    rec.state.lock().unwrap().latency_ns.clear();
    let stop = Instant::now() + Duration::from_secs(8);
    let critical = steady(&publisher, "CRITICAL", 2, 0, stop);
    let bulk = steady(&publisher, "BULK", 16, 1 << 32, stop);
    let (crit_sent, bulk_sent) = (critical.await.unwrap(), bulk.await.unwrap());
    let sent = crit_sent + bulk_sent + WARM;
    wait_until("every event handled or dead-lettered", Duration::from_secs(120), || {
        let r = node.report();
        r.iter().map(|c| c.handled + c.dead_lettered).sum::<u64>() >= sent
    })
    .await;
    let report = node.shutdown(Duration::from_secs(5)).await;
    let dead = read_dlq(&config, report.sum(|c| c.dead_lettered) as usize);

    table(&[("node", &report)]);
    let on_time = rec.latencies_ms(0).iter().filter(|&&ms| ms <= crit_deadline.as_secs_f64() * 1e3).count();
    let mut reasons: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for d in &dead {
        *reasons.entry((d.class.as_str(), d.reason.as_str())).or_default() += 1;
    }
    let (events, lost) = check_nothing_lost(&config, &["CRITICAL", "BULK"], &rec, &dead);
    println!(
        "offered {sent} in 8 s ({crit_sent} critical): critical on time {on_time} ({:.2} %), p99 {:.1} ms; bulk handled {}; dead letters {reasons:?}; lost {lost}",
        100.0 * on_time as f64 / crit_sent as f64,
        rec.p99_ms(0),
        rec.handled(&config.topic(ROUTE, "BULK")),
    );
    assert_eq!((events, lost), (sent, 0));
    assert!(on_time as f64 >= 0.99 * crit_sent as f64, "critical goodput {on_time}/{crit_sent}");
    assert!(dead.iter().all(|d| d.class == "BULK"), "only bulk is dead-lettered: {reasons:?}");
    assert!(dead.len() as u64 > bulk_sent / 2, "most bulk dead-lettered under 3× overload: {reasons:?}");
    assert!(
        dead.iter().all(|d| ["expired", "refused", "shed"].contains(&d.reason.as_str())),
        "dead letters carry an overload reason: {reasons:?}"
    );
    check_ledger("node", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn node_throughput_against_a_plain_consumer_loop() {
    const N: u64 = 200_000;
    let config = fresh("throughput", &["c0"]).await;
    let publisher = Publisher::new(&config).expect("publisher");
    publish_all(&publisher, 0..N, |_| "c0", 48).await;
    let topic = config.topic(ROUTE, "c0");

    // The plain loop: one consumer of the same client library, poll and count, offsets
    // committed every 100 ms like the node's.
    let plain_group = format!("{topic}-plain");
    let plain_topic = topic.clone();
    let plain = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", &plain_group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "100")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        c.subscribe(&[&plain_topic]).expect("subscribe");
        let mut n = 0u64;
        let mut first = None;
        let mut sum = 0u64;
        while n < N {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m.expect("message");
                first.get_or_insert_with(Instant::now);
                sum = sum.wrapping_add(decode(m.payload().unwrap()).0);
                n += 1;
            }
        }
        assert_eq!(sum, (0..N).sum::<u64>(), "every event once");
        first.unwrap().elapsed()
    })
    .await
    .unwrap();

    // The same work per event as the plain loop: count it and add up its id.
    let counted = Counting::default();
    let spec = RouteSpec::new(classes(&["c0"], 1024)).workers(2);
    let node = Node::builder(config.clone()).route(ROUTE, spec, counted.clone()).start().await.expect("node");
    wait_until("first event", Duration::from_secs(30), || counted.0.count.load(Ordering::Relaxed) > 0).await;
    let t = Instant::now();
    wait_until("every event handled", Duration::from_secs(120), || counted.0.count.load(Ordering::Relaxed) == N).await;
    let veltrix = t.elapsed();
    let report = node.shutdown(Duration::from_secs(5)).await;
    assert_eq!(counted.0.sum.load(Ordering::Relaxed), (0..N).sum::<u64>(), "every event once");
    check_ledger("node", &report);

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    let ratio = rate(veltrix) / rate(plain);
    let table = format!(
        "| consumer | events/s |\n|---|---:|\n| plain rdkafka poll loop | {:.0} |\n| veltrix-kafka node (2 workers) | {:.0} |\n\nratio node / plain: {ratio:.2}\n",
        rate(plain),
        rate(veltrix)
    );
    println!("{table}");
    if std::env::var_os("VELTRIX_KAFKA_RESULTS").is_some() {
        let results = format!(
            "# veltrix-kafka throughput\n\nWritten by `VELTRIX_KAFKA_RESULTS=1 ci/kafka node_throughput` (release, one broker on \
             loopback, 2 cores): {N} events of 64 bytes in one topic of {PARTITIONS} partitions, read by a plain \
             `rdkafka` poll loop and by a node, each in its own consumer group, timed from the first event to \
             the last. Both do the same work per event (count it, add up its id); the node also copies it out \
             of the client, tracks its offset, queues it in the engine and calls the handler on a worker.\n\n{table}"
        );
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"), results).expect("RESULTS.md written");
    }
    // The node does strictly more per event (a copy out of the client, the commit tracker,
    // the engine's queue and a handler call): a floor that catches a stall (a partition
    // paused and resumed per credit cycle ran at 0.01), not a target.
    assert!(ratio >= 0.1, "node throughput {ratio:.2} of the plain loop");
}

#[tokio::test]
async fn bad_settings_are_typed_errors() {
    let spec = RouteSpec::new(classes(&["c0"], 8));
    let start = |config: NodeConfig, route: &str, policy: Option<(&str, ClassPolicy)>| {
        let mut b = Node::builder(config).route(route, spec.clone(), Recorder::default());
        if let Some((class, p)) = policy {
            b = b.policy(route, class, p);
        }
        b.start()
    };
    let ok = || NodeConfig::new("127.0.0.1:1", "g");
    let e = start(ok(), "a.b", None).await.unwrap_err();
    assert!(matches!(e, NodeError::InvalidName { kind: "route", .. }), "{e}");
    let e = start(ok(), ROUTE, Some(("nope", ClassPolicy::credit(1)))).await.unwrap_err();
    assert!(matches!(e, NodeError::UnknownClass { .. }), "{e}");
    let e = start(ok(), ROUTE, Some(("c0", ClassPolicy::credit(0)))).await.unwrap_err();
    assert!(matches!(e, NodeError::InvalidSetting { setting: "credit", .. }), "{e}");
    let e = start(ok().session_timeout(Duration::ZERO), ROUTE, None).await.unwrap_err();
    assert!(matches!(e, NodeError::InvalidSetting { setting: "session_timeout", .. }), "{e}");
    // A backpressure class may not be given more credit than it has room.
    let bp = RouteSpec::new(
        Config::builder().class(ClassSpec::new("c0", 8).with_policy(OverloadPolicy::Backpressure)).build().unwrap(),
    );
    let e = Node::builder(ok())
        .route(ROUTE, bp, Recorder::default())
        .policy(ROUTE, "c0", ClassPolicy::credit(9))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::InvalidSetting { setting: "credit", .. }), "{e}");
    let p = Publisher::new(&ok()).expect("a publisher connects lazily");
    let e = p.publish(ROUTE, "a b", None, b"x").await.unwrap_err();
    assert!(matches!(e, PublishError::InvalidName(NodeError::InvalidName { kind: "class", .. })), "{e}");
    let e = ensure_topics(&ok(), &[(ROUTE, "c0")], 0, 1).await.unwrap_err();
    assert!(matches!(e, NodeError::InvalidSetting { setting: "partitions", .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn compressed_topics_are_read_with_every_codec() {
    const PER_CODEC: u64 = 1_000;
    let config = fresh("codecs", &FOUR).await;
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    for (i, codec) in codecs.into_iter().enumerate() {
        let publisher = Publisher::new(&config.clone().client_setting("compression.type", codec)).expect("publisher");
        let first = i as u64 * PER_CODEC;
        publish_all(&publisher, first..first + PER_CODEC, class_of, 200).await;
    }
    let rec = Recorder::default();
    let spec = RouteSpec::new(classes(&FOUR, 128)).workers(2);
    let node = Node::builder(config.clone()).route(ROUTE, spec, rec.clone()).start().await.expect("node");
    let n = PER_CODEC * codecs.len() as u64;
    wait_until("every event handled", Duration::from_secs(60), || rec.distinct() as u64 == n).await;
    let report = node.shutdown(Duration::from_secs(5)).await;
    let (events, lost) = check_nothing_lost(&config, &FOUR, &rec, &[]);
    assert_eq!((events, lost), (n, 0));
    assert_eq!(report.sum(|c| c.fetch_errors), 0, "{:#?}", report.classes);
    check_ledger("node", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: run ci/kafka"]
async fn a_missing_topic_is_a_typed_error() {
    let config = NodeConfig::new(bootstrap(), "missing").topic_prefix(format!("missing-{}", now_ns()));
    let e = Node::builder(config.clone())
        .route(ROUTE, RouteSpec::new(classes(&["c0"], 8)), Recorder::default())
        .start()
        .await
        .unwrap_err();
    match e {
        NodeError::MissingTopic { topic } => assert_eq!(topic, config.topic(ROUTE, "c0")),
        other => panic!("{other}"),
    }
}
