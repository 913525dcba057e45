//! A full disk under SQLite: writes fail UNAVAILABLE with a clear message,
//! the server stays up, writes work again once space is freed, and nothing
//! that was acknowledged is lost (nor anything refused written).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookplane::proto::DeleteSubscriptionRequest;
use tonic::Code;

use crate::harness::*;
use crate::writes;

/// The file system holding the data directory: small, so the test fills it
/// in seconds.
const DISK_BYTES: u64 = 32 << 20;
/// Left free when the filler is written: a few thousand writes' worth.
const LEFT_FREE: u64 = 4 << 20;

/// A tmpfs mounted over a directory for the guard's lifetime.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, bytes: u64) -> Tmpfs {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): the fault suite runs as root"
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.to_str().expect("utf-8 path")).expect("path");
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a zeroed struct the call fills in.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs {}", self.path.display());
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// What the load saw: writes acknowledged, and writes refused.
#[derive(Default, Clone)]
struct Ledger {
    /// Acknowledged and not deleted since: id -> the name last acknowledged.
    live: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
    /// Creates refused with an error: they must not exist.
    refused: BTreeSet<String>,
    errors: Vec<(Code, String)>,
    acknowledged: usize,
}

impl Ledger {
    fn refusal(&mut self, status: &tonic::Status) {
        self.errors
            .push((status.code(), status.message().to_owned()));
    }
}

/// One worker's writes: creates (plain, and with a request id), renames and
/// deletes of its own subscriptions, until `until` says stop.
async fn write_load(
    admin: Clients,
    worker: usize,
    ledger: Arc<Mutex<Ledger>>,
    until: Arc<Mutex<Instant>>,
) {
    let mut own: Vec<String> = Vec::new();
    let mut i = 0usize;
    while Instant::now() < *until.lock().unwrap() {
        i += 1;
        let id = format!("w{worker}-{i}");
        match i % 8 {
            // A rename or a delete of one of the worker's own.
            6 | 7 if !own.is_empty() => {
                let target = own[i % own.len()].clone();
                if i % 8 == 6 {
                    let name = format!("renamed-{worker}-{i}");
                    let result = admin
                        .subscriptions()
                        .update_subscription(writes::rename(&target, &name))
                        .await;
                    let mut ledger = ledger.lock().unwrap();
                    match result {
                        Ok(_) => {
                            ledger.acknowledged += 1;
                            ledger.live.insert(target, name);
                        }
                        Err(status) => ledger.refusal(&status),
                    }
                } else {
                    let result = admin
                        .subscriptions()
                        .delete_subscription(DeleteSubscriptionRequest {
                            tenant_id: TENANT.to_owned(),
                            subscription_id: target.clone(),
                            etag: String::new(),
                        })
                        .await;
                    let mut ledger = ledger.lock().unwrap();
                    match result {
                        Ok(_) => {
                            ledger.acknowledged += 1;
                            ledger.live.remove(&target);
                            ledger.deleted.insert(target.clone());
                            own.retain(|o| *o != target);
                        }
                        Err(status) => ledger.refusal(&status),
                    }
                }
            }
            n => {
                let name = format!("created-{worker}-{i}");
                let result = admin
                    .subscriptions()
                    .create_subscription(writes::create(
                        &id,
                        &name,
                        // Some through the transactional path, most batched.
                        &if n == 3 {
                            format!("req-{id}")
                        } else {
                            String::new()
                        },
                    ))
                    .await;
                let mut ledger = ledger.lock().unwrap();
                match result {
                    Ok(_) => {
                        ledger.acknowledged += 1;
                        ledger.live.insert(id.clone(), name);
                        own.push(id);
                    }
                    Err(status) => {
                        ledger.refusal(&status);
                        ledger.refused.insert(id);
                    }
                }
            }
        }
    }
}

/// Runs `workers` writers until the disk has refused writes for a while.
async fn load_until_full(admin: &Clients, ledger: &Arc<Mutex<Ledger>>) {
    let until = Arc::new(Mutex::new(Instant::now() + Duration::from_secs(120)));
    let tasks: Vec<_> = (0..8)
        .map(|w| tokio::spawn(write_load(admin.clone(), w, ledger.clone(), until.clone())))
        .collect();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !ledger.lock().unwrap().errors.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the disk never filled"
        );
    }
    // Keep writing on the full disk: the defect was writes acknowledged
    // after the first refusals that were never committed.
    *until.lock().unwrap() = Instant::now() + Duration::from_secs(3);
    for t in tasks {
        t.await.expect("load task");
    }
}

/// Plain creates that must all succeed.
async fn load_must_succeed(
    admin: &Clients,
    ledger: &Arc<Mutex<Ledger>>,
    prefix: &str,
    count: usize,
) {
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        ok(admin
            .subscriptions()
            .create_subscription(writes::create(&id, &id, ""))
            .await);
        let mut ledger = ledger.lock().unwrap();
        ledger.acknowledged += 1;
        ledger.live.insert(id.clone(), id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_full_disk_loses_no_acknowledged_write() {
    install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let backend = Backend::sqlite();
    let disk = Tmpfs::mount(backend.data_dir(), DISK_BYTES);
    let (server, admin) = fixture(&backend).await;

    // Fill the disk but for a little room.
    let filler = backend.data_dir().join("filler");
    let room = disk.available().saturating_sub(LEFT_FREE);
    std::fs::write(&filler, vec![0u8; room as usize]).expect("write the filler");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    load_until_full(&admin, &ledger).await;
    {
        let ledger = ledger.lock().unwrap();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for (code, message) in &ledger.errors {
            *kinds.entry(format!("{code:?}: {message}")).or_default() += 1;
        }
        println!("refusals on the full disk: {kinds:#?}");
        for (code, message) in &ledger.errors {
            assert!(
                matches!(code, Code::Unavailable | Code::ResourceExhausted),
                "a full disk answers UNAVAILABLE or RESOURCE_EXHAUSTED, got {code:?}: {message}"
            );
        }
        assert!(
            ledger
                .errors
                .iter()
                .any(|(_, m)| m.contains("disk is full")),
            "some refusal says the disk is full: {:?}",
            &ledger.errors[..ledger.errors.len().min(5)]
        );
        println!(
            "full disk: {} writes acknowledged, {} refused",
            ledger.acknowledged,
            ledger.errors.len()
        );
    }
    // The server stays up: reads and health answer on a full disk.
    let first = ledger.lock().unwrap().live.keys().next().cloned();
    if let Some(id) = first {
        writes::get(&admin, &id)
            .await
            .expect("reads answer on a full disk");
    }

    // Space freed: writes work again, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = format!("after-{attempt}");
        let result = admin
            .subscriptions()
            .create_subscription(writes::create(&id, &id, ""))
            .await;
        {
            let mut l = ledger.lock().unwrap();
            match result {
                Ok(_) => {
                    l.acknowledged += 1;
                    l.live.insert(id.clone(), id);
                    break;
                }
                Err(status) => {
                    l.refused.insert(id);
                    assert!(
                        Instant::now() < deadline,
                        "writes did not resume within 10 s of freeing space: {status:?}"
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load_must_succeed(&admin, &ledger, "resumed", 200).await;

    // After a restart, every acknowledged write is there, and no refused
    // create is.
    let server = server.restart().await;
    let admin = server.admin();
    let ledger = ledger.lock().unwrap().clone();
    let mut lost = Vec::new();
    for (id, name) in &ledger.live {
        match writes::get(&admin, id).await {
            Ok(found) if found.name == *name => {}
            other => lost.push(format!("{id}: expected name {name:?}, got {other:?}")),
        }
    }
    for id in &ledger.deleted {
        if let Err(e) = writes::deleted(&admin, id).await {
            lost.push(e);
        }
    }
    let mut refused_but_written = Vec::new();
    for id in &ledger.refused {
        if writes::get(&admin, id).await.is_ok() {
            refused_but_written.push(id.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes were lost, e.g. {:?}",
        lost.len(),
        ledger.acknowledged,
        &lost[..lost.len().min(5)]
    );
    assert!(
        refused_but_written.is_empty(),
        "{} creates answered an error but were written: {:?}",
        refused_but_written.len(),
        &refused_but_written[..refused_but_written.len().min(5)]
    );
    server.stop().await;
    drop(disk);
}
