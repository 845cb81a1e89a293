//! The channels under comparison behind one blocking interface, and the workloads that drive
//! them. Every peer gets the same message type (`u64`), the same capacity and the same threads:
//! producers and consumers are OS threads using each channel's blocking API (or, for an
//! async-only channel, its async API under `pollster::block_on`).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod estimates;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use veltrix_engine::{ClassId, ClassSpec, Config, SchedulerMode};

/// A bounded channel with blocking send and receive.
pub trait Chan {
    /// The name in reports.
    const NAME: &'static str;
    /// Sending half.
    type Tx: Clone + Send + 'static;
    /// Receiving half.
    type Rx: Send + 'static;
    /// A channel of `capacity` messages (in total, spread over classes where there are some).
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx);
    /// Sends, waiting for room.
    fn send(tx: &Self::Tx, v: u64);
    /// Receives, waiting; `None` once every sender is gone and it is drained.
    fn recv(rx: &Self::Rx) -> Option<u64>;
    /// Receives up to `limit` into `buf` (at least one, waiting); 0 when closed and drained.
    fn recv_batch(rx: &Self::Rx, buf: &mut Vec<u64>, limit: usize) -> usize {
        match Self::recv(rx) {
            Some(v) => {
                let _ = limit;
                buf.push(v);
                1
            }
            None => 0,
        }
    }
}

/// A channel whose receiver can be shared by several consumers.
pub trait MultiConsumer: Chan {
    /// Another receiver of the same channel.
    fn clone_rx(rx: &Self::Rx) -> Self::Rx;
}

fn veltrix_config(classes: usize, capacity: usize) -> Config {
    let per = (capacity / classes).max(1);
    (0..classes)
        .fold(Config::builder(), |b, k| {
            b.class(ClassSpec::new(format!("c{k}"), per).with_weight(1 << (classes - 1 - k)))
        })
        .scheduler(if classes == 1 { SchedulerMode::Drr } else { SchedulerMode::default() })
        .build()
        .expect("valid bench config")
}

/// Veltrix with one class.
#[derive(Debug)]
pub struct Veltrix1;
impl Chan for Veltrix1 {
    const NAME: &'static str = "veltrix";
    type Tx = veltrix_engine::Sender<u64>;
    type Rx = veltrix_engine::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        veltrix_engine::channel(&veltrix_config(1, capacity))
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send_blocking(v, ClassId::new(0)).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv_blocking().map(|d| d.event)
    }
    fn recv_batch(rx: &Self::Rx, buf: &mut Vec<u64>, limit: usize) -> usize {
        veltrix_recv_batch(rx, buf, limit)
    }
}
impl MultiConsumer for Veltrix1 {
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
}

fn veltrix_recv_batch(rx: &veltrix_engine::Receiver<u64>, buf: &mut Vec<u64>, limit: usize) -> usize {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<veltrix_engine::Delivery<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        let n = pollster::block_on(rx.recv_many(&mut s, limit));
        buf.extend(s.drain(..).map(|d| d.event));
        n
    })
}

/// Veltrix with the four default classes; message `v` goes to class `v % 4`.
#[derive(Debug)]
pub struct Veltrix4;
impl Chan for Veltrix4 {
    const NAME: &'static str = "veltrix-4-classes";
    type Tx = veltrix_engine::Sender<u64>;
    type Rx = veltrix_engine::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        veltrix_engine::channel(&veltrix_config(4, capacity))
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send_blocking(v, ClassId::new((v % 4) as usize)).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv_blocking().map(|d| d.event)
    }
    fn recv_batch(rx: &Self::Rx, buf: &mut Vec<u64>, limit: usize) -> usize {
        veltrix_recv_batch(rx, buf, limit)
    }
}

/// `tokio::sync::mpsc` (bounded), blocking API.
#[derive(Debug)]
pub struct TokioMpsc;
impl Chan for TokioMpsc {
    const NAME: &'static str = "tokio-mpsc";
    type Tx = tokio::sync::mpsc::Sender<u64>;
    type Rx = std::sync::Mutex<tokio::sync::mpsc::Receiver<u64>>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (tx, std::sync::Mutex::new(rx))
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.blocking_send(v).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.lock().expect("one consumer").blocking_recv()
    }
    fn recv_batch(rx: &Self::Rx, buf: &mut Vec<u64>, limit: usize) -> usize {
        pollster::block_on(rx.lock().expect("one consumer").recv_many(buf, limit))
    }
}

/// `crossbeam-channel` (bounded).
#[derive(Debug)]
pub struct Crossbeam;
impl Chan for Crossbeam {
    const NAME: &'static str = "crossbeam-channel";
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send(v).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn recv_batch(rx: &Self::Rx, buf: &mut Vec<u64>, limit: usize) -> usize {
        drain_into(rx.recv().ok(), rx.try_iter(), buf, limit)
    }
}
impl MultiConsumer for Crossbeam {
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
}

/// A batch the way `crossbeam`/`flume` users drain: one blocking receive, then whatever is
/// already there, up to `limit`.
fn drain_into(first: Option<u64>, rest: impl Iterator<Item = u64>, buf: &mut Vec<u64>, limit: usize) -> usize {
    let Some(first) = first else { return 0 };
    let before = buf.len();
    buf.push(first);
    buf.extend(rest.take(limit - 1));
    buf.len() - before
}

/// `flume` (bounded).
#[derive(Debug)]
pub struct Flume;
impl Chan for Flume {
    const NAME: &'static str = "flume";
    type Tx = flume::Sender<u64>;
    type Rx = flume::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        flume::bounded(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send(v).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
    fn recv_batch(rx: &Self::Rx, buf: &mut Vec<u64>, limit: usize) -> usize {
        drain_into(rx.recv().ok(), rx.try_iter(), buf, limit)
    }
}
impl MultiConsumer for Flume {
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
}

/// `async-channel` (bounded), blocking API.
#[derive(Debug)]
pub struct AsyncChannel;
impl Chan for AsyncChannel {
    const NAME: &'static str = "async-channel";
    type Tx = async_channel::Sender<u64>;
    type Rx = async_channel::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        async_channel::bounded(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send_blocking(v).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv_blocking().ok()
    }
}
impl MultiConsumer for AsyncChannel {
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
}

/// `thingbuf::mpsc::blocking` (bounded, preallocated slots).
#[derive(Debug)]
pub struct Thingbuf;
impl Chan for Thingbuf {
    const NAME: &'static str = "thingbuf";
    type Tx = thingbuf::mpsc::blocking::Sender<u64>;
    type Rx = thingbuf::mpsc::blocking::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        thingbuf::mpsc::blocking::channel(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send(v).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv()
    }
}

/// `kanal` (bounded), sync API.
#[derive(Debug)]
pub struct Kanal;
impl Chan for Kanal {
    const NAME: &'static str = "kanal";
    type Tx = kanal::Sender<u64>;
    type Rx = kanal::Receiver<u64>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        kanal::bounded(capacity)
    }
    fn send(tx: &Self::Tx, v: u64) {
        tx.send(v).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        rx.recv().ok()
    }
}
impl MultiConsumer for Kanal {
    fn clone_rx(rx: &Self::Rx) -> Self::Rx {
        rx.clone()
    }
}

/// `async-priority-channel` with four priorities (`v % 4`, 0 most urgent), async API blocked on.
#[derive(Debug)]
pub struct AsyncPriority;
impl Chan for AsyncPriority {
    const NAME: &'static str = "async-priority-channel";
    type Tx = async_priority_channel::Sender<u64, std::cmp::Reverse<u8>>;
    type Rx = async_priority_channel::Receiver<u64, std::cmp::Reverse<u8>>;
    fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
        async_priority_channel::bounded(capacity as u64)
    }
    fn send(tx: &Self::Tx, v: u64) {
        pollster::block_on(tx.send(v, std::cmp::Reverse((v % 4) as u8))).expect("open");
    }
    fn recv(rx: &Self::Rx) -> Option<u64> {
        pollster::block_on(rx.recv()).ok().map(|(v, _)| v)
    }
}

/// Sends `per_producer` messages from each of `producers` threads into a channel of
/// `capacity`, received by `consumers` threads (batches of `batch` if > 1); returns the time
/// from the first send to the last receive. Checks every message arrived exactly once.
pub fn throughput<C: Chan>(
    producers: u64,
    consumers: usize,
    per_producer: u64,
    capacity: usize,
    batch: usize,
) -> Duration {
    assert!(consumers == 1, "use throughput_mc for several consumers");
    let (tx, rx) = C::channel(capacity);
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..per_producer {
                    C::send(&tx, p * per_producer + i);
                }
            })
        })
        .collect();
    drop(tx);
    let (count, sum) = consume::<C>(&rx, batch);
    let elapsed = start.elapsed();
    handles.into_iter().for_each(|h| h.join().expect("producer"));
    check(count, sum, producers * per_producer);
    elapsed
}

/// As [`throughput`] with several consumers sharing the receiver.
pub fn throughput_mc<C: MultiConsumer>(
    producers: u64,
    consumers: usize,
    per_producer: u64,
    capacity: usize,
) -> Duration {
    let (tx, rx) = C::channel(capacity);
    let start = Instant::now();
    let producers_h: Vec<_> = (0..producers)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..per_producer {
                    C::send(&tx, p * per_producer + i);
                }
            })
        })
        .collect();
    drop(tx);
    let consumers_h: Vec<_> = (0..consumers)
        .map(|_| {
            let rx = C::clone_rx(&rx);
            thread::spawn(move || consume::<C>(&rx, 1))
        })
        .collect();
    drop(rx);
    let (mut count, mut sum) = (0, 0);
    for h in consumers_h {
        let (c, s) = h.join().expect("consumer");
        count += c;
        sum += s;
    }
    let elapsed = start.elapsed();
    producers_h.into_iter().for_each(|h| h.join().expect("producer"));
    check(count, sum, producers * per_producer);
    elapsed
}

fn consume<C: Chan>(rx: &C::Rx, batch: usize) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    if batch <= 1 {
        while let Some(v) = C::recv(rx) {
            count += 1;
            sum = sum.wrapping_add(v);
        }
    } else {
        let mut buf = Vec::with_capacity(batch);
        loop {
            buf.clear();
            if C::recv_batch(rx, &mut buf, batch) == 0 {
                break;
            }
            count += buf.len() as u64;
            sum = buf.iter().fold(sum, |s, v| s.wrapping_add(*v));
        }
    }
    (count, sum)
}

fn check(count: u64, sum: u64, n: u64) {
    assert_eq!(count, n, "every message exactly once");
    assert_eq!(sum, n * (n - 1) / 2, "every message exactly once");
}

/// `round_trips` request/response exchanges between two threads over two channels of
/// capacity 1; returns the total time.
pub fn ping_pong<C: Chan>(round_trips: u64) -> Duration {
    let (ping_tx, ping_rx) = C::channel(1);
    let (pong_tx, pong_rx) = C::channel(1);
    let echo = thread::spawn(move || {
        while let Some(v) = C::recv(&ping_rx) {
            C::send(&pong_tx, v);
        }
    });
    let start = Instant::now();
    for i in 0..round_trips {
        C::send(&ping_tx, i);
        assert_eq!(C::recv(&pong_rx), Some(i));
    }
    let elapsed = start.elapsed();
    drop(ping_tx);
    echo.join().expect("echo");
    elapsed
}

/// What a priority flood measured.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// The urgent messages' p99 latency (send → receive).
    pub urgent_p99: Duration,
    /// The longest time the flooded (least urgent) class went without a delivery.
    pub starvation: Duration,
}

/// A priority flood: one producer floods the least urgent class at twice the rate the consumer
/// can serve, another sends urgent messages every `gap`; measures over `urgent` of them. The
/// consumer spends `work` per message.
pub fn priority_flood<C: Chan>(urgent: u64, gap: Duration, work: Duration) -> Flood {
    // Messages carry (send time in ns since `epoch`) << 2 | class, with class 0 urgent.
    let (tx, rx) = C::channel(256);
    let epoch = Instant::now();
    let stop = Arc::new(AtomicU64::new(0));
    let flood = {
        let (tx, stop) = (tx.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while stop.load(Ordering::Relaxed) == 0 {
                // Least urgent class (3), paced at 2× the consumer's service rate.
                C::send(&tx, ((epoch.elapsed().as_nanos() as u64) << 2) | 3);
                n += 1;
                spin_for(work / 2);
            }
            n
        })
    };
    let trickle = {
        let tx = tx.clone();
        thread::spawn(move || {
            for _ in 0..urgent {
                C::send(&tx, (epoch.elapsed().as_nanos() as u64) << 2);
                thread::sleep(gap);
            }
        })
    };
    drop(tx);
    let mut latencies = Vec::with_capacity(urgent as usize);
    let (mut last_flooded, mut starvation) = (Instant::now(), Duration::ZERO);
    while (latencies.len() as u64) < urgent {
        let Some(v) = C::recv(&rx) else { break };
        spin_for(work);
        if v & 3 == 0 {
            latencies.push(epoch.elapsed().as_nanos() as u64 - (v >> 2));
        } else {
            starvation = starvation.max(last_flooded.elapsed());
            last_flooded = Instant::now();
        }
    }
    stop.store(1, Ordering::Relaxed);
    trickle.join().expect("trickle");
    // Let the flooder finish its last send.
    while C::recv(&rx).is_some() {}
    flood.join().expect("flood");
    latencies.sort_unstable();
    let urgent_p99 = Duration::from_nanos(latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]);
    Flood { urgent_p99, starvation }
}

/// [`priority_flood`]'s urgent p99.
pub fn flood_urgent_p99<C: Chan>(urgent: u64, gap: Duration, work: Duration) -> Duration {
    priority_flood::<C>(urgent, gap, work).urgent_p99
}

/// [`priority_flood`]'s starvation of the flooded class.
pub fn flood_starvation<C: Chan>(urgent: u64, gap: Duration, work: Duration) -> Duration {
    priority_flood::<C>(urgent, gap, work).starvation
}

fn spin_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// The engine's submit → worker → handler path for `n` events (one route, one worker, a
/// handler that only counts), against the same thing hand-built from `tokio::sync::mpsc` and a
/// worker task. Both on the same two-thread tokio runtime; returns the time until the last
/// event was handled.
pub mod engine_path {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use veltrix_engine::runtime::{Engine, Handler, HandlerContext, Outcome, RouteSpec, Submission};
    use veltrix_engine::{ClassId, Config};

    struct Count(Arc<AtomicU64>);

    impl Handler<u64> for Count {
        fn handle(&self, e: &u64, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
            self.0.fetch_add(std::hint::black_box(*e) & 1, Ordering::Relaxed);
            std::future::ready(Outcome::Ok)
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    }

    /// Veltrix: `submit` from one task (route resolved once), one worker.
    pub fn veltrix(n: u64, capacity: usize) -> Duration {
        let rt = runtime();
        rt.block_on(async {
            let done = Arc::new(AtomicU64::new(0));
            let config = veltrix_engine::ClassSpec::new("only", capacity);
            let config = Config::builder().class(config).build().expect("config");
            let engine =
                Engine::builder().route("r", RouteSpec::new(config), Count(done.clone())).build().expect("engine");
            let route = engine.route_id("r").expect("registered");
            let start = Instant::now();
            for i in 0..n {
                engine.submit(Submission::to(route, ClassId::new(0), i)).await.expect("open");
            }
            let report = engine.shutdown(Duration::from_secs(60)).await;
            assert_eq!(report.handled, n);
            start.elapsed()
        })
    }

    /// Hand-built: a bounded `tokio::sync::mpsc` and one worker task running the same handler.
    pub fn tokio_mpsc(n: u64, capacity: usize) -> Duration {
        let rt = runtime();
        rt.block_on(async {
            let done = Arc::new(AtomicU64::new(0));
            let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(capacity);
            let start = Instant::now();
            let worker = tokio::spawn(async move {
                let mut handled = 0;
                while let Some(e) = rx.recv().await {
                    // The same work as the engine's handler, without its context and outcome.
                    done.fetch_add(std::hint::black_box(e) & 1, Ordering::Relaxed);
                    handled += 1;
                }
                handled
            });
            for i in 0..n {
                tx.send(i).await.expect("open");
            }
            drop(tx);
            assert_eq!(worker.await.expect("worker"), n);
            start.elapsed()
        })
    }
}

/// The workloads as a user of an async runtime writes them: a multi-thread tokio runtime with
/// two workers, producers and the consumer as separate tasks, each channel's async API.
pub mod tasks {
    use std::future::Future;
    use std::time::{Duration, Instant};

    use veltrix_engine::ClassId;

    /// A bounded channel with async send and receive.
    pub trait AsyncChan {
        /// The name in reports.
        const NAME: &'static str;
        /// Sending half.
        type Tx: Clone + Send + Sync + 'static;
        /// Receiving half.
        type Rx: Send + 'static;
        /// A channel of `capacity` messages (in total, spread over classes where there are some).
        fn channel(capacity: usize) -> (Self::Tx, Self::Rx);
        /// Sends, waiting for room.
        fn send(tx: &Self::Tx, v: u64) -> impl Future<Output = ()> + Send;
        /// Receives, waiting; `None` once every sender is gone and it is drained.
        fn recv(rx: &mut Self::Rx) -> impl Future<Output = Option<u64>> + Send;
    }

    /// Veltrix, one class.
    #[derive(Debug)]
    pub struct Veltrix1;
    impl AsyncChan for Veltrix1 {
        const NAME: &'static str = "veltrix";
        type Tx = veltrix_engine::Sender<u64>;
        type Rx = veltrix_engine::Receiver<u64>;
        fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
            veltrix_engine::channel(&super::veltrix_config(1, capacity))
        }
        async fn send(tx: &Self::Tx, v: u64) {
            tx.send(v, ClassId::new(0)).await.expect("open");
        }
        async fn recv(rx: &mut Self::Rx) -> Option<u64> {
            rx.recv().await.map(|d| d.event)
        }
    }

    /// Veltrix, the four default classes; message `v` goes to class `v % 4`.
    #[derive(Debug)]
    pub struct Veltrix4;
    impl AsyncChan for Veltrix4 {
        const NAME: &'static str = "veltrix-4-classes";
        type Tx = veltrix_engine::Sender<u64>;
        type Rx = veltrix_engine::Receiver<u64>;
        fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
            veltrix_engine::channel(&super::veltrix_config(4, capacity))
        }
        async fn send(tx: &Self::Tx, v: u64) {
            tx.send(v, ClassId::new((v % 4) as usize)).await.expect("open");
        }
        async fn recv(rx: &mut Self::Rx) -> Option<u64> {
            rx.recv().await.map(|d| d.event)
        }
    }

    /// `tokio::sync::mpsc` (bounded).
    #[derive(Debug)]
    pub struct TokioMpsc;
    impl AsyncChan for TokioMpsc {
        const NAME: &'static str = "tokio-mpsc";
        type Tx = tokio::sync::mpsc::Sender<u64>;
        type Rx = tokio::sync::mpsc::Receiver<u64>;
        fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
            tokio::sync::mpsc::channel(capacity)
        }
        async fn send(tx: &Self::Tx, v: u64) {
            tx.send(v).await.expect("open");
        }
        async fn recv(rx: &mut Self::Rx) -> Option<u64> {
            rx.recv().await
        }
    }

    /// `async-priority-channel` with four priorities (`v % 4`, 0 most urgent).
    #[derive(Debug)]
    pub struct AsyncPriority;
    impl AsyncChan for AsyncPriority {
        const NAME: &'static str = "async-priority-channel";
        type Tx = async_priority_channel::Sender<u64, std::cmp::Reverse<u8>>;
        type Rx = async_priority_channel::Receiver<u64, std::cmp::Reverse<u8>>;
        fn channel(capacity: usize) -> (Self::Tx, Self::Rx) {
            async_priority_channel::bounded(capacity as u64)
        }
        async fn send(tx: &Self::Tx, v: u64) {
            tx.send(v, std::cmp::Reverse((v % 4) as u8)).await.expect("open");
        }
        async fn recv(rx: &mut Self::Rx) -> Option<u64> {
            rx.recv().await.ok().map(|(v, _)| v)
        }
    }

    /// The runtime every async workload runs on: multi-thread, two workers.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    }

    /// `producers` tasks send `per_producer` messages each into a channel of `capacity`; one
    /// consumer task receives them all. Returns the time from the first send to the last
    /// receive; checks every message arrived exactly once.
    pub fn throughput<C: AsyncChan>(
        rt: &tokio::runtime::Runtime,
        producers: u64,
        per_producer: u64,
        capacity: usize,
    ) -> Duration {
        rt.block_on(async {
            let (tx, mut rx) = C::channel(capacity);
            let start = Instant::now();
            let consumer = tokio::spawn(async move {
                let (mut count, mut sum) = (0u64, 0u64);
                while let Some(v) = C::recv(&mut rx).await {
                    count += 1;
                    sum = sum.wrapping_add(v);
                }
                (count, sum)
            });
            for p in 0..producers {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..per_producer {
                        C::send(&tx, p * per_producer + i).await;
                    }
                });
            }
            drop(tx);
            let (count, sum) = consumer.await.expect("consumer");
            let elapsed = start.elapsed();
            super::check(count, sum, producers * per_producer);
            elapsed
        })
    }
}

/// Draining a full queue in batches: `rounds` times, fill a channel of `capacity` from this
/// thread, then time how long `recv_batch` (limit 256) takes to empty it.
pub fn drain_full<C: Chan>(capacity: usize, rounds: u64) -> Duration {
    let (tx, rx) = C::channel(capacity);
    let mut buf = Vec::with_capacity(256);
    let mut total = Duration::ZERO;
    let mut v = 0;
    for _ in 0..rounds {
        for _ in 0..capacity {
            C::send(&tx, v);
            v += 1;
        }
        let start = Instant::now();
        let mut left = capacity;
        while left > 0 {
            buf.clear();
            left -= C::recv_batch(&rx, &mut buf, 256.min(left));
        }
        total += start.elapsed();
        std::hint::black_box(&buf);
    }
    total
}
