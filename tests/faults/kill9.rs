//! kill -9 during a create, update and delete load, five times on each
//! database: every acknowledged write is there after the restart, nothing
//! is written twice, and a retry with the request id of a call whose answer
//! was lost returns the first answer (or creates it once).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookplane::proto::{DeleteSubscriptionRequest, ListSubscriptionsRequest, Subscription};
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;
use crate::writes;

const KILLS: usize = 5;
const WORKERS: usize = 8;

/// The real server binary, killed with SIGKILL when dropped.
struct Process {
    child: Child,
    grpc_addr: SocketAddr,
}

impl Process {
    fn start(backend: &Backend) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookplane"))
            .args(backend.serve_args())
            .env("HOOKPLANE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the hookplane binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (found, addr) = std::sync::mpsc::channel();
        // Reads the log until the listening line, then drains it so the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(tx) = &found
                    && line.contains("hookplane listening")
                    && let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("grpc_addr="))
                {
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("grpc_addr"));
                    found = None;
                }
            }
        });
        let grpc_addr = addr
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs its address within 60 s");
        Process { child, grpc_addr }
    }

    fn admin(&self) -> Clients {
        let channel = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("endpoint URI")
            .connect_lazy();
        Clients::on(channel, &Cred::admin())
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown code runs.
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap the killed server");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the load was told.
#[derive(Default, Clone)]
struct Ledger {
    /// Acknowledged and not deleted since: id -> name last acknowledged.
    live: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
    /// Creates with a request id whose answer never came: request id -> name.
    unanswered: BTreeMap<String, String>,
    /// Renames (Some) and deletes (None) whose answer never came, by id:
    /// either outcome is right.
    in_flight: BTreeMap<String, Option<String>>,
    acknowledged: usize,
}

/// Writes until the process dies under it.
async fn write_load(admin: Clients, round: usize, worker: usize, ledger: Arc<Mutex<Ledger>>) {
    let mut own: Vec<String> = Vec::new();
    for i in 0.. {
        let tag = format!("r{round}-w{worker}-{i}");
        let result = match i % 6 {
            4 if !own.is_empty() => {
                let target = own[i % own.len()].clone();
                let name = format!("renamed-{tag}");
                ledger
                    .lock()
                    .unwrap()
                    .in_flight
                    .insert(target.clone(), Some(name.clone()));
                let answer = admin
                    .subscriptions()
                    .update_subscription(writes::rename(&target, &name))
                    .await;
                answer.map(|_| {
                    let mut l = ledger.lock().unwrap();
                    l.acknowledged += 1;
                    l.in_flight.remove(&target);
                    l.live.insert(target, name);
                })
            }
            5 if !own.is_empty() => {
                let target = own.swap_remove(i % own.len());
                ledger
                    .lock()
                    .unwrap()
                    .in_flight
                    .insert(target.clone(), None);
                let answer = admin
                    .subscriptions()
                    .delete_subscription(DeleteSubscriptionRequest {
                        tenant_id: TENANT.to_owned(),
                        subscription_id: target.clone(),
                        etag: String::new(),
                    })
                    .await;
                answer.map(|_| {
                    let mut l = ledger.lock().unwrap();
                    l.acknowledged += 1;
                    l.in_flight.remove(&target);
                    l.live.remove(&target);
                    l.deleted.insert(target);
                })
            }
            n => {
                // Half with a request id, so a lost answer can be retried.
                let request_id = if n % 2 == 0 {
                    format!("req-{tag}")
                } else {
                    String::new()
                };
                let name = format!("created-{tag}");
                if !request_id.is_empty() {
                    ledger
                        .lock()
                        .unwrap()
                        .unanswered
                        .insert(request_id.clone(), name.clone());
                }
                let answer = admin
                    .subscriptions()
                    .create_subscription(writes::create("", &name, &request_id))
                    .await;
                answer.map(|created| {
                    let id = created.into_inner().subscription_id;
                    let mut l = ledger.lock().unwrap();
                    l.acknowledged += 1;
                    l.unanswered.remove(&request_id);
                    l.live.insert(id.clone(), name);
                    own.push(id);
                })
            }
        };
        if let Err(status) = result {
            // The server died under the call; anything else is a defect.
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ),
                "a write under load answered {:?}: {}",
                status.code(),
                status.message()
            );
            return;
        }
    }
}

/// Retries every create whose answer was lost, with its request id: each
/// returns the first answer, or creates the subscription now, once.
async fn retry_unanswered(admin: &Clients, ledger: &Arc<Mutex<Ledger>>) {
    let unanswered = std::mem::take(&mut ledger.lock().unwrap().unanswered);
    for (request_id, name) in unanswered {
        let created = ok(admin
            .subscriptions()
            .create_subscription(writes::create("", &name, &request_id))
            .await);
        assert_eq!(created.name, name, "the retry answers for its own create");
        let mut l = ledger.lock().unwrap();
        l.acknowledged += 1;
        l.live.insert(created.subscription_id, name);
    }
}

/// Settles the renames and deletes whose answers were lost: each either
/// happened or did not, and the ledger follows what is stored.
async fn settle_in_flight(admin: &Clients, ledger: &Arc<Mutex<Ledger>>) {
    let in_flight = std::mem::take(&mut ledger.lock().unwrap().in_flight);
    let stored = stored(admin).await;
    let mut l = ledger.lock().unwrap();
    for (id, op) in in_flight {
        match (op, stored.get(&id)) {
            (Some(name), Some(s)) if s.name == name => {
                l.live.insert(id, name);
            }
            (None, None) => {
                l.live.remove(&id);
                l.deleted.insert(id);
            }
            // It did not happen: the ledger already says what is stored.
            _ => {}
        }
    }
}

/// Every live subscription of the tenant, by id.
async fn stored(admin: &Clients) -> BTreeMap<String, Subscription> {
    let mut all = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = ok(admin
            .subscriptions()
            .list_subscriptions(ListSubscriptionsRequest {
                tenant_id: TENANT.to_owned(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await);
        for s in page.subscriptions {
            all.insert(s.subscription_id.clone(), s);
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The stored data holds exactly what was acknowledged.
async fn check(admin: &Clients, ledger: &Ledger) {
    let stored = stored(admin).await;
    for (id, name) in &ledger.live {
        let found = stored.get(id).map(|s| s.name.as_str());
        assert_eq!(
            found,
            Some(name.as_str()),
            "acknowledged subscription {id} is stored as last acknowledged"
        );
    }
    for id in &ledger.deleted {
        if let Err(e) = writes::deleted(admin, id).await {
            panic!("an acknowledged delete was lost: {e}");
        }
    }
    let mut names = BTreeSet::new();
    for s in stored.values() {
        assert!(
            names.insert(s.name.clone()),
            "{:?} is stored twice: a write was duplicated",
            s.name
        );
    }
}

async fn kill_9_loses_no_acknowledged_write(backend: Backend) {
    // The tenant, endpoint and catalog, through an in-process server.
    let (server, _) = fixture(&backend).await;
    server.stop().await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..KILLS {
        let process = Process::start(&backend);
        let admin = process.admin();
        retry_unanswered(&admin, &ledger).await;
        settle_in_flight(&admin, &ledger).await;
        let seen = ledger.lock().unwrap().clone();
        check(&admin, &seen).await;

        let before = ledger.lock().unwrap().acknowledged;
        let load: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(write_load(admin.clone(), round, w, ledger.clone())))
            .collect();
        // Kill at a different point of each round, once writes are flowing.
        let started = Instant::now();
        while ledger.lock().unwrap().acknowledged < before + 50 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no writes were acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100 + 150 * round as u64)).await;
        process.kill();
        for task in load {
            task.await.expect("load task");
        }
    }
    let process = Process::start(&backend);
    let admin = process.admin();
    retry_unanswered(&admin, &ledger).await;
    settle_in_flight(&admin, &ledger).await;
    let ledger = ledger.lock().unwrap().clone();
    check(&admin, &ledger).await;
    println!(
        "kill -9 x{KILLS}: {} acknowledged writes, all present",
        ledger.acknowledged
    );
}

backend_tests!(kill_9_loses_no_acknowledged_write);
