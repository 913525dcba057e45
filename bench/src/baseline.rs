//! Baselines for the write path: what the database alone manages with the
//! statements one create issues, and with a single-row INSERT.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hookplane::repository::baseline_sql;

use crate::report::median;
use crate::run::{RunArgs, run_collect};

/// A created subscription's state as its change row keeps it (the server
/// writes one of about this size with every change). No `:name` in it:
/// pgbench would read that as a variable.
const STATE: &str = r#"{"endpoint_id":"e0","name":"x","event_types":"[\"d0.e0.a0\"]","status":"ACTIVE","create_time":0,"update_time":0,"etag":"x"}"#;

/// The statements one CreateSubscription issues on PostgreSQL, in order,
/// as pgbench script. Nothing is read before the write: the catalog and the
/// tenant (TTL, verification and URL policy) come from the replica's memory.
/// The write, one statement (see `src/repository/fast_create/one_statement.rs`;
/// the parent rule and the revision come from the server's own builders):
/// share-lock tenant and endpoint and check both are live and the tenant
/// still at the etag the create was built from (here a check on the same
/// column, as pgbench cannot know each tenant's etag), record the request
/// nonce (replay protection across replicas) and take the revision from the
/// transaction id, insert the subscription (the primary key refuses a taken
/// id, the live-name index a taken name), append the change-log row with
/// the subscription's state. That
/// is all a create waits for: the server then puts the new subscription
/// into its own replica's resolve index directly. Not in the script: the
/// change-log follower's read, which no longer runs per create (it reads
/// announced commits at most every 5 ms, each read shared by every write
/// in that time); the pruning mark, which the follower reads at most once a
/// second; and the NOTIFY to other replicas, which the server sends once
/// per burst of commits on a connection of its own, outside the write.
fn pg_create_script() -> String {
    let parents = baseline_sql::parents("'bt' || lpad(:t::text, 5, '0')", "'e0'");
    let revision = baseline_sql::pg_revision();
    let shift = baseline_sql::PG_REVISION_SHIFT;
    let state = STATE;
    format!(
        r#"\set t random(0, :tenants - 1)
\set n random(1, 2000000000)
WITH parents AS (SELECT 1 FROM {parents} FOR SHARE), written AS (INSERT INTO request_nonces (api_id, nonce, expire_time) SELECT 'pgbench', md5(:n::text || clock_timestamp()::text), 0 FROM parents RETURNING {revision} AS revision), inserted AS (INSERT INTO subscriptions (tenant_id, subscription_id, endpoint_id, name, event_types, status, expire_time, create_time, update_time, etag) SELECT 'bt' || lpad(:t::text, 5, '0'), 'pgb' || (revision >> {shift}), 'e0', 'pgb-' || (revision >> {shift}), '["d0.e0.a0"]', 'ACTIVE', NULL, 0, 0, 'x' FROM written RETURNING 1), changed AS (INSERT INTO changes (revision, tenant_id, resource_type, resource_key, kind, change_time, state) SELECT revision, 'bt' || lpad(:t::text, 5, '0'), 'subscription', 'pgb' || (revision >> {shift}), 'UPSERT', 0, '{state}' FROM written, inserted RETURNING revision) SELECT revision FROM changed;
"#
    )
}

const PG_INSERT_SCRIPT: &str = r#"\set n random(1, 2000000000)
INSERT INTO bench_single_insert (tenant_id, subscription_id, endpoint_id, name, event_types, status, expire_time, create_time, update_time, etag) VALUES ('bt00000', md5(:n::text || clock_timestamp()::text), 'e0', NULL, '["d0.e0.a0"]', 'ACTIVE', NULL, 0, 0, 'x');
"#;

#[derive(Debug, Clone, Args)]
pub struct PgArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, default_value = "pgbench")]
    pub pgbench: PathBuf,
}

fn pgbench(
    bin: &PathBuf,
    url: &str,
    script: &str,
    tenants: usize,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!("hookplane-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("script.sql");
    std::fs::write(&file, script)?;
    let out = Command::new(bin)
        // Prepared statements, as the server's driver uses.
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds.to_string(),
        ])
        .args(["-D", &format!("tenants={tenants}"), "-f"])
        .arg(&file)
        .arg(url)
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .context("no tps line in pgbench output")
}

pub async fn pg(args: PgArgs) -> anyhow::Result<()> {
    let url = args
        .run
        .database_url
        .clone()
        .context("--database-url postgres://... is required")?;
    let db = sea_orm::Database::connect(url.as_str()).await?;
    use sea_orm::ConnectionTrait;
    db.execute_unprepared(
        "DROP TABLE IF EXISTS bench_single_insert; CREATE TABLE bench_single_insert (LIKE subscriptions INCLUDING ALL)",
    )
    .await?;
    let (tenants, clients, seconds) = (args.run.tenants, args.run.concurrency, args.run.duration);
    let measured = rounds(&args.run, async || {
        let same = pgbench(
            &args.pgbench,
            &url,
            &pg_create_script(),
            tenants,
            clients,
            seconds,
        )?;
        let single = pgbench(
            &args.pgbench,
            &url,
            PG_INSERT_SCRIPT,
            tenants,
            clients,
            seconds,
        )?;
        Ok((same, single))
    })
    .await;
    db.execute_unprepared("DROP TABLE IF EXISTS bench_single_insert")
        .await?;
    // Remove the rows pgbench added, so later runs see the seeded data set.
    db.execute_unprepared("DELETE FROM subscriptions WHERE subscription_id LIKE 'pgb%'")
        .await?;
    let measured = measured?;
    let s = Summary::of(&measured);
    let out = serde_json::json!({
        "clients": clients,
        "create_per_sec": s.create,
        "pgbench_same_statements_tps": s.same,
        "pgbench_single_insert_tps": s.single,
        "ratio_to_same_statements": s.ratio_same,
        "ratio_to_single_insert": s.ratio_single,
        "rounds": measured,
    });
    if args.run.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "PostgreSQL, {clients} clients, medians of {} rounds: create {:.0}/s; pgbench same statements {:.0} tps (ratio {:.2}); single-row INSERT {:.0} tps (ratio {:.2})",
            measured.len(),
            s.create,
            s.same,
            s.ratio_same,
            s.single,
            s.ratio_single
        );
    }
    Ok(())
}

/// One round of a write baseline: the server's creates, then the database
/// alone running the same statements and a single-row INSERT, one after
/// the other.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Round {
    create_per_sec: f64,
    same_statements_per_sec: f64,
    single_insert_per_sec: f64,
}

/// `--pairs` rounds, each a fresh server's health/create pair followed by
/// `baselines`. The machine is shared and its speed drifts by a fifth
/// within minutes, so a create rate is only compared with the baselines
/// measured right after it, as the run compares each workload with the
/// health check right before it.
async fn rounds(
    run: &RunArgs,
    mut baselines: impl AsyncFnMut() -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<Vec<Round>> {
    let mut one = run.clone();
    one.workloads = "create".into();
    one.pairs = 1;
    let mut rounds = Vec::new();
    for i in 0..run.pairs.max(1) {
        let create = run_collect(one.clone())
            .await?
            .first()
            .and_then(|r| r.pairs.first())
            .map(|p| p.workload.calls_per_sec)
            .context("no create measurement")?;
        let (same, single) = baselines().await?;
        eprintln!(
            "round {}: create {create:.0}/s, same statements {same:.0}/s, single-row insert {single:.0}/s",
            i + 1
        );
        rounds.push(Round {
            create_per_sec: create,
            same_statements_per_sec: same,
            single_insert_per_sec: single,
        });
    }
    Ok(rounds)
}

/// Medians over the rounds; each ratio is the median of the rounds' own ratios.
struct Summary {
    create: f64,
    same: f64,
    single: f64,
    ratio_same: f64,
    ratio_single: f64,
}

impl Summary {
    fn of(rounds: &[Round]) -> Self {
        let over = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        Summary {
            create: over(&|r| r.create_per_sec),
            same: over(&|r| r.same_statements_per_sec),
            single: over(&|r| r.single_insert_per_sec),
            ratio_same: over(&|r| r.create_per_sec / r.same_statements_per_sec),
            ratio_single: over(&|r| r.create_per_sec / r.single_insert_per_sec),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SqliteArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// The same statements as one create, in one IMMEDIATE transaction, in a
/// bare loop on one connection with the server's file settings: the
/// revision counter read when the batch opens, the create's own text (see
/// `one_statement` in the repository), the counter stored at commit.
async fn sqlite_loop(
    path: &std::path::Path,
    tenants: usize,
    seconds: u64,
    single_insert: bool,
) -> anyhow::Result<f64> {
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sea_orm::sqlx::{ConnectOptions, Executor};
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // As the server's writer connection has it.
        .pragma("cache_size", "-65536")
        .connect()
        .await?;
    if single_insert {
        conn.execute("DROP TABLE IF EXISTS bench_single_insert")
            .await?;
        conn.execute(
            "CREATE TABLE bench_single_insert (tenant_id TEXT NOT NULL, subscription_id TEXT NOT NULL, endpoint_id TEXT NOT NULL, name TEXT, event_types TEXT NOT NULL, status TEXT NOT NULL, expire_time BIGINT, create_time BIGINT NOT NULL, update_time BIGINT NOT NULL, etag TEXT NOT NULL, PRIMARY KEY (tenant_id, subscription_id))",
        )
        .await?;
    }
    let parents = baseline_sql::parents("$1", "'e0'");
    let sqlite_create_text = format!(
        "SAVEPOINT create_batch; \
         INSERT INTO request_nonces SELECT 'sqlite-bench', $2, 0 WHERE $2 IS NOT NULL AND EXISTS ( \
         SELECT 1 FROM {parents}); \
         INSERT INTO subscriptions SELECT $1, $2, 'e0', $2, '[\"d0.e0.a0\"]', 'ACTIVE', NULL, 0, 0, 'x' \
         WHERE EXISTS (SELECT 1 FROM {parents}); \
         INSERT INTO changes (revision, tenant_id, resource_type, resource_key, kind, change_time, state) \
         SELECT $3, $1, 'subscription', $2, 'UPSERT', 0, '{STATE}' WHERE changes() = 1 \
         RETURNING revision; \
         RELEASE create_batch"
    );
    let started = Instant::now();
    let mut n: u64 = 0;
    let mut rng = crate::dataset::Rng::new(99);
    while started.elapsed() < Duration::from_secs(seconds) {
        n += 1;
        let t = crate::dataset::tenant_id(rng.below(tenants));
        let id = format!("sqb{}-{n}", std::process::id());
        if single_insert {
            sea_orm::sqlx::query("INSERT INTO bench_single_insert VALUES (?, ?, 'e0', NULL, '[\"d0.e0.a0\"]', 'ACTIVE', NULL, 0, 0, 'x')")
                .bind(&t)
                .bind(&id)
                .execute(&mut conn)
                .await?;
            continue;
        }
        // Nothing is read before the write: the tenant comes from the
        // replica's memory, its etag is checked with the parents.
        // A batch of one: the counter is read when the batch opens and
        // stored when it commits; the write runs in its own savepoint.
        conn.execute("BEGIN IMMEDIATE").await?;
        let rev: i64 =
            sea_orm::sqlx::query_scalar("SELECT value FROM revision_counter WHERE id = 1")
                .fetch_one(&mut conn)
                .await?;
        let rev = rev + 1;
        // The create's own text, for a batch of one: its savepoint, the
        // nonce and the subscription each under the parent check (with the
        // tenant's etag), the change row only if the subscription was
        // written, the release; one call to the connection's thread.
        // Built from constants and the server's own SQL builders: no input.
        let written =
            sea_orm::sqlx::query(sea_orm::sqlx::AssertSqlSafe(sqlite_create_text.clone()))
                .bind(&t)
                .bind(&id)
                .bind(rev)
                .fetch_all(&mut conn)
                .await?;
        anyhow::ensure!(
            written.len() == 1,
            "the bare loop's create for {t} wrote nothing"
        );
        sea_orm::sqlx::query("UPDATE revision_counter SET value = ? WHERE id = 1 AND value < ?")
            .bind(rev)
            .bind(rev)
            .execute(&mut conn)
            .await?;
        conn.execute("COMMIT").await?;
        // The create then goes into the replica's index directly; the
        // follower's read of the change log no longer runs per create.
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    if single_insert {
        conn.execute("DROP TABLE IF EXISTS bench_single_insert")
            .await?;
    } else {
        // Leave the data set as seeded.
        conn.execute("DELETE FROM subscriptions WHERE subscription_id LIKE 'sqb%'")
            .await?;
        conn.execute("DELETE FROM changes WHERE resource_key LIKE 'sqb%'")
            .await?;
        conn.execute("DELETE FROM request_nonces WHERE api_id = 'sqlite-bench'")
            .await?;
    }
    Ok(rate)
}

pub async fn sqlite(args: SqliteArgs) -> anyhow::Result<()> {
    let path = args.run.data_dir.join("hookplane.db");
    let (tenants, seconds) = (args.run.tenants, args.run.duration);
    // The server is stopped while the loops run on its file.
    let measured = rounds(&args.run, async || {
        let same = sqlite_loop(&path, tenants, seconds, false).await?;
        let single = sqlite_loop(&path, tenants, seconds, true).await?;
        Ok((same, single))
    })
    .await?;
    let s = Summary::of(&measured);
    let out = serde_json::json!({
        "create_per_sec": s.create,
        "bare_loop_same_statements_per_sec": s.same,
        "single_insert_commit_per_sec": s.single,
        "ratio_to_same_statements": s.ratio_same,
        "ratio_to_single_insert": s.ratio_single,
        "rounds": measured,
    });
    if args.run.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "SQLite (synchronous FULL), medians of {} rounds: create {:.0}/s at C={}; bare loop same statements {:.0}/s (ratio {:.2}); INSERT+COMMIT {:.0}/s (ratio {:.2})",
            measured.len(),
            s.create,
            args.run.concurrency,
            s.same,
            s.ratio_same,
            s.single,
            s.ratio_single
        );
    }
    Ok(())
}
