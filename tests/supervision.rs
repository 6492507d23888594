//! The supervision tree over HTTP (docs/ADMIN.md): crashes are restarted with OTP semantics,
//! a crashed order comes back intact from its journal, crash loops escalate, and the tree the
//! admin API shows is the tree that runs. Faults are injected with `POST /admin/faults`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often `/admin/events` is tried again while the front-end restarts (within a deadline).
const RECONNECT_INTERVAL: Duration = Duration::from_millis(50);

async fn start() -> Kassa {
    Kassa::start(KassaOptions::new().env("KASSA_ADMIN_FAULTS_ENABLED", "true")).await
}

async fn admin_get(kassa: &Kassa, path: &str) -> Value {
    let response = kassa
        .admin()
        .send("GET", path, None)
        .await
        .expect("admin GET");
    expect_status(&response, 200, path)
}

async fn inject(kassa: &Kassa, path: &str) {
    let body = json!({"kind": "panic", "path": path})
        .to_string()
        .into_bytes();
    let response = kassa
        .admin()
        .send("POST", "/admin/faults", Some(body))
        .await
        .expect("fault");
    expect_status(&response, 202, &format!("panic at {path}"));
}

/// Follows `/admin/events` over plain TCP, reconnecting when the front-end restarts, and
/// keeps the (path, kind) of events since the last `mark` (replays are deduplicated).
struct Events {
    authority: String,
    token: String,
    lines: Option<tokio::io::Lines<BufReader<TcpStream>>>,
    since_ms: i64,
    keys: HashSet<(String, String, i64)>,
    seen: Vec<(String, String)>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Events {
    async fn open(kassa: &Kassa) -> Events {
        let mut events = Events {
            authority: kassa.base_url().trim_start_matches("http://").to_owned(),
            token: kassa.admin_token().to_owned(),
            lines: None,
            since_ms: 0,
            keys: HashSet::new(),
            seen: Vec::new(),
        };
        events.connect(Instant::now() + EVENT_TIMEOUT).await;
        events
    }

    /// Opens the stream once the whole tree has started, counting only events from then on.
    async fn open_started(kassa: &Kassa) -> Events {
        let mut events = Events::open(kassa).await;
        events
            .until("the tree to start", |seen| {
                has(seen, "root/http", "started")
            })
            .await;
        events.mark();
        events
    }

    /// Forget what was seen; from now on only newer events count.
    fn mark(&mut self) {
        self.since_ms = unix_ms();
        self.seen.clear();
    }

    async fn connect(&mut self, deadline: Instant) {
        loop {
            if let Ok(mut stream) = TcpStream::connect(&self.authority).await {
                let request = format!(
                    "GET /admin/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
                    self.authority, self.token
                );
                if stream.write_all(request.as_bytes()).await.is_ok() {
                    let mut lines = BufReader::new(stream).lines();
                    if let Ok(Some(status)) = lines.next_line().await
                        && status.contains(" 200 ")
                    {
                        self.lines = Some(lines);
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "could not (re)connect to /admin/events"
            );
            // The front-end is restarting: try again shortly.
            tokio::time::sleep(RECONNECT_INTERVAL).await;
        }
    }

    /// Reads events until `done` holds for what was seen (or the timeout panics).
    async fn until(&mut self, what: &str, done: impl Fn(&[(String, String)]) -> bool) {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while !done(&self.seen) {
            let Some(lines) = self.lines.as_mut() else {
                self.connect(deadline).await;
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:?}", self.seen));
            let Ok(Some(line)) = line else {
                self.lines = None; // the stream ended (front-end restart): reconnect
                continue;
            };
            // Chunked encoding frames the SSE lines; only `data:` lines matter here.
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(event) = serde_json::from_str::<Value>(data)
            {
                let path = event["path"].as_str().unwrap_or_default().to_owned();
                let kind = event["kind"].as_str().unwrap_or_default().to_owned();
                let at = event["at"].as_i64().unwrap_or_default();
                if at >= self.since_ms && self.keys.insert((path.clone(), kind.clone(), at)) {
                    self.seen.push((path, kind));
                }
            }
        }
    }

    fn kinds_of(&self, path: &str) -> Vec<&str> {
        self.seen
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, k)| k.as_str())
            .collect()
    }

    fn restarted(&self) -> HashSet<&str> {
        self.seen
            .iter()
            .filter(|(_, k)| k == "restarted")
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

fn has(seen: &[(String, String)], path: &str, kind: &str) -> bool {
    seen.iter().any(|(p, k)| p == path && k == kind)
}

/// The tree path of a live order (searching the shards).
async fn order_path(kassa: &Kassa, id: &str) -> String {
    let tree = admin_get(kassa, "/admin/supervision").await;
    let shards = tree["root"]["children"]
        .as_array()
        .and_then(|c| c.iter().find(|n| n["name"] == "orders"))
        .map(|orders| orders["child_count"].as_u64().unwrap_or(0))
        .expect("an orders node");
    for shard in 0..shards {
        let expanded = admin_get(
            kassa,
            &format!("/admin/supervision?expand=shard-{shard}&limit=1000"),
        )
        .await;
        let text = expanded.to_string();
        let path = format!("root/orders/shard-{shard}/{id}");
        if text.contains(&format!("\"path\":\"{path}\"")) {
            return path;
        }
    }
    panic!("order {id} is not live in any shard");
}

#[tokio::test]
async fn the_tree_json_matches_what_runs() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Tree Ltd").await;
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let tree = admin_get(&kassa, "/admin/supervision").await;
    let root = &tree["root"];
    assert_eq!(root["path"], "root");
    assert_eq!(root["strategy"], "rest_for_one");
    let names: Vec<&str> = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "store-writer",
            "channels",
            "orders",
            "notifier",
            "janitor",
            "http"
        ]
    );
    let node = |name: &str| {
        root["children"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(node("notifier")["strategy"], "one_for_all");
    let channels: Vec<_> = node("channels")["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        channels,
        ["app_wallet", "bank_transfer", "card", "qr_wallet"],
        "one worker per enabled channel"
    );
    for child in root["children"].as_array().unwrap() {
        assert_eq!(child["status"], "running", "{child}");
        assert_eq!(child["restarts_total"], 0, "{child}");
    }
    let shards = node("orders")["children"].as_array().unwrap().clone();
    assert!(!shards.is_empty());
    let live: u64 = shards
        .iter()
        .map(|s| s["child_count"].as_u64().unwrap())
        .sum();
    assert_eq!(live, 1, "one order actor is live: {shards:?}");
    for shard in &shards {
        assert_eq!(shard["strategy"], "simple_one_for_one");
        assert!(
            shard["children"].as_array().unwrap().is_empty(),
            "orders are listed only when expanded"
        );
    }
    // Expanded, the order is there, transient, running; its detail carries its state.
    let path = order_path(&kassa, &id_of(&payment)).await;
    let detail = admin_get(&kassa, &format!("/admin/actors/{path}")).await;
    assert_eq!(detail["restart"], "transient", "{detail}");
    assert_eq!(detail["order"]["status"], "succeeded", "{detail}");
    assert_eq!(
        detail["order"]["last_events"].as_array().unwrap().len(),
        2,
        "{detail}"
    );
    assert!(
        !detail.to_string().contains(CARD_SUCCEEDS),
        "no card data in the admin view"
    );
    // Merchants are refused on the admin API.
    let refused = merchant
        .get("/admin/supervision")
        .await
        .expect("merchant on admin");
    assert_error_in(
        &refused,
        401,
        &["invalid_admin_token", "missing_credentials"],
    );
}

#[tokio::test]
async fn a_panicking_order_is_restarted_and_the_order_is_intact() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Crashy Ltd").await;
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    let id = id_of(&payment);
    let path = order_path(&kassa, &id).await;
    let mut events = Events::open(&kassa).await;
    events.mark();
    inject(&kassa, &path).await;
    events
        .until("the order to crash and restart", |seen| {
            has(seen, &path, "restarted")
        })
        .await;
    assert_eq!(events.kinds_of(&path), ["crashed", "restarted"]);
    let detail = admin_get(&kassa, &format!("/admin/actors/{path}")).await;
    assert_eq!(detail["restarts_total"], 1, "{detail}");
    assert!(
        detail["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "{detail}"
    );
    // Its state came back from the journal: refunds work and are bounded as before.
    let refund = post_refund(
        &merchant,
        &json!({"payment_id": id, "amount": "4.00"}),
        None,
    )
    .await;
    expect_status(&refund, 201, "refund after the crash");
    let read = get_payment(&merchant, &id).await;
    assert_eq!(read["amount_refunded"], "4.00", "{read}");
    assert_eq!(read["status"], "succeeded", "{read}");
}

#[tokio::test]
async fn one_for_all_and_rest_for_one_restart_exactly_the_right_siblings() {
    let kassa = start().await;
    let mut events = Events::open_started(&kassa).await;

    // notifier is one_for_all: the outbox's crash restarts the dispatcher too, nothing else.
    inject(&kassa, "root/notifier/outbox").await;
    events
        .until("both notifier workers to restart", |seen| {
            has(seen, "root/notifier/outbox", "restarted")
                && has(seen, "root/notifier/dispatcher", "restarted")
        })
        .await;
    assert_eq!(
        events.restarted(),
        HashSet::from(["root/notifier/outbox", "root/notifier/dispatcher"])
    );
    events.mark();

    // root is rest_for_one: the janitor's crash restarts it and http (after it), not those before.
    inject(&kassa, "root/janitor").await;
    events
        .until("janitor and http to restart", |seen| {
            has(seen, "root/janitor", "restarted") && has(seen, "root/http", "restarted")
        })
        .await;
    assert_eq!(
        events.restarted(),
        HashSet::from(["root/janitor", "root/http"])
    );
    assert!(
        events.kinds_of("root/http").contains(&"stopped"),
        "{:?}",
        events.seen
    );
    let tree = admin_get(&kassa, "/admin/supervision").await;
    assert_eq!(tree["root"]["restarts_total"], 1, "one restart by root");
}

#[tokio::test]
async fn a_crash_loop_escalates_and_the_service_carries_on() {
    let kassa = start().await;
    let merchant = kassa.new_merchant("Loop Ltd").await;
    let mut events = Events::open_started(&kassa).await;
    // channels allows 3 restarts in 5 s: the fourth crash makes it give up and escalate; root
    // (rest_for_one) restarts channels and everything started after it, not the store writer.
    let count = |seen: &[(String, String)], kind: &str| {
        seen.iter()
            .filter(|(p, k)| p == "root/channels/card" && k == kind)
            .count()
    };
    for crash in 1..=4 {
        inject(&kassa, "root/channels/card").await;
        if crash < 4 {
            // The next fault must reach the restarted worker, not the one that just died.
            events
                .until("the card worker to restart", |seen| {
                    count(seen, "restarted") >= crash
                })
                .await;
        }
    }
    events
        .until(
            "channels to escalate and root to restart what follows it",
            |seen| has(seen, "root/channels", "gave_up") && has(seen, "root/http", "restarted"),
        )
        .await;
    for path in [
        "root/channels",
        "root/orders",
        "root/notifier",
        "root/janitor",
        "root/http",
    ] {
        assert!(
            has(&events.seen, path, "restarted"),
            "{path} restarted: {:?}",
            events.seen
        );
    }
    assert!(
        !has(&events.seen, "root/store-writer", "restarted"),
        "{:?}",
        events.seen
    );
    // The service still takes payments.
    let payment = charge_succeeded(&merchant, &usd_charge(CARD_SUCCEEDS)).await;
    assert_eq!(payment["status"], "succeeded");
    let ready = kassa
        .admin()
        .send("GET", "/readyz", None)
        .await
        .expect("readyz");
    expect_status(&ready, 200, "readyz after recovery");
}

#[tokio::test]
async fn beyond_the_roots_intensity_the_process_exits_non_zero() {
    let mut kassa = start().await;
    // root allows 5 restarts in 60 s; http is its last child, so each crash restarts only it.
    for _ in 0..5 {
        let mut events = Events::open(&kassa).await;
        events.mark();
        inject(&kassa, "root/http").await;
        events
            .until("http to restart", |seen| {
                has(seen, "root/http", "restarted")
            })
            .await;
    }
    // The sixth crash is one too many. A fault sent while the new worker is still
    // registering finds no worker (202, nothing crashes), so it is sent again until the
    // process is gone.
    let status = poll_until("the process to exit", Duration::from_secs(20), || {
        let status = kassa.exited();
        let admin = kassa.admin();
        async move {
            if let Some(status) = status {
                return Ok(status);
            }
            let body = json!({"kind": "panic", "path": "root/http"}).to_string();
            // The process may be going down under this very request: no answer is fine.
            let _ = admin
                .send("POST", "/admin/faults", Some(body.into_bytes()))
                .await;
            Err("still running".to_string())
        }
    })
    .await;
    assert_eq!(status.code(), Some(70), "exit status {status}");
    assert!(
        kassa
            .log_contents()
            .contains("the supervision tree gave up"),
        "{}",
        kassa.log_tail()
    );
}
