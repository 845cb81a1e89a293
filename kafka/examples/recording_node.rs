//! A node that writes one line per handled event (`<topic> <partition> <offset>`) to a file,
//! each line in one `write` so a crash (`kill -9`) loses no line of an event whose offset may
//! have been committed. The crash test of `tests/kafka.rs` runs it as the node it kills.
//!
//! ```text
//! cargo run -p veltrix-kafka --example recording_node -- BOOTSTRAP GROUP TOPIC_PREFIX OUT_FILE SERVICE_MS
//! ```
//!
//! It serves route `orders` with classes `c0`…`c3` (capacity 128, 4 workers), prints `ready`
//! once started, and shuts down gracefully when its standard input closes.

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use veltrix_engine::runtime::{Handler, HandlerContext, Outcome, RouteSpec};
use veltrix_engine::{ClassSpec, Config};
use veltrix_kafka::{KafkaEvent, Node, NodeConfig};

struct Record {
    out: Arc<Mutex<std::fs::File>>,
    service: Duration,
}

impl Handler<KafkaEvent> for Record {
    fn handle(&self, e: &KafkaEvent, _cx: HandlerContext) -> impl Future<Output = Outcome> + Send {
        let line = format!("{} {} {}\n", e.topic(), e.partition(), e.offset());
        let out = self.out.clone();
        let service = self.service;
        async move {
            tokio::time::sleep(service).await;
            // One write per line (the file is opened for append).
            match out.lock().expect("not poisoned").write_all(line.as_bytes()) {
                Ok(()) => Outcome::Ok,
                Err(_) => Outcome::Retry,
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, group, prefix, out, service_ms] = args.as_slice() else {
        return Err("usage: recording_node BOOTSTRAP GROUP TOPIC_PREFIX OUT_FILE SERVICE_MS".into());
    };
    let out = std::fs::OpenOptions::new().create(true).append(true).open(out)?;
    let service = Duration::from_millis(service_ms.parse()?);
    let config = NodeConfig::new(bootstrap, group).topic_prefix(prefix).session_timeout(Duration::from_secs(3));
    let classes =
        ["c0", "c1", "c2", "c3"].into_iter().fold(Config::builder(), |b, n| b.class(ClassSpec::new(n, 128))).build()?;
    let handler = Record { out: Arc::new(Mutex::new(out)), service };
    let node = Node::builder(config).route("orders", RouteSpec::new(classes).workers(4), handler).start().await?;
    println!("ready");
    // Runs until standard input closes (or the process is killed).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await??;
    let report = node.shutdown(Duration::from_secs(5)).await;
    eprintln!("handled {}", report.sum(|c| c.handled));
    Ok(())
}
