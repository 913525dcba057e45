//! The synthetic data set: T tenants, E endpoints, S subscriptions over a
//! catalog of event types `d{0..}.e{0..5}.a{0..4}`, with a realistic pattern
//! mix: about 70 % exact names, 20 % `prefix.*`, 5 % a middle `*`, 5 % `*`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hookplane::config::DatabaseArgs;
use hookplane::model::{
    Endpoint, EventType, Subscription, SubscriptionStatus, Tenant, TenantSettings, TenantState,
    new_etag, now_micros,
};
use hookplane::repository::{EventTypeStore, Maintenance, Snapshot, WriteMeta};

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[arg(long, default_value = "./bench-data")]
    pub data_dir: PathBuf,
    /// Default: SQLite in the data dir.
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// Endpoints in all; spread evenly over the tenants.
    #[arg(long, default_value_t = 20_000)]
    pub endpoints: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub subscriptions: usize,
    /// Event types in the catalog (multiple of 30).
    #[arg(long, default_value_t = 300)]
    pub event_types: usize,
}

/// Deterministic names shared by `seed` and `run`.
pub fn tenant_id(i: usize) -> String {
    format!("bt{i:05}")
}

pub fn event_type_name(i: usize) -> String {
    format!("d{}.e{}.a{}", i / 30, (i / 5) % 6, i % 5)
}

pub fn subscription_id(i: usize) -> String {
    format!("s{i:07}")
}

/// A small deterministic generator, so a data set can be rebuilt exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn pattern(rng: &mut Rng, catalog: usize) -> String {
    let e = event_type_name(rng.below(catalog));
    let parts: Vec<&str> = e.split('.').collect();
    match rng.below(100) {
        0..70 => e.clone(),
        70..90 => format!("{}.*", parts[0]),
        90..95 => format!("{}.*.{}", parts[0], parts[2]),
        _ => "*".to_owned(),
    }
}

pub fn database(
    data_dir: &std::path::Path,
    url: Option<String>,
    key: Option<String>,
) -> DatabaseArgs {
    DatabaseArgs {
        data_dir: data_dir.to_owned(),
        database_url: url,
        master_key: key,
        previous_master_key: None,
        db_max_connections: 8,
    }
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let db = database(
        &args.data_dir,
        args.database_url.clone(),
        args.master_key.clone(),
    );
    let repo = hookplane::startup::connect(&db).await?;
    let now = now_micros();
    let catalog = args.event_types.max(30);
    let meta = WriteMeta {
        api_id: "bench-seed".into(),
        nonce: None,
        nonce_expire_time: now,
        now,
        idempotency: None,
    };
    for i in 0..catalog {
        let e = EventType {
            name: event_type_name(i),
            description: String::new(),
            schema_json: None,
            legacy_code: Some(i as i32 + 1),
            deprecated: false,
            create_time: now,
            update_time: now,
            etag: new_etag(),
        };
        match repo.create_event_type(&e, &meta).await {
            Ok(_) | Err(hookplane::repository::RepoError::AlreadyExists(_)) => {}
            Err(e) => return Err(e).context("cannot create the catalog"),
        }
    }
    let tenants = args.tenants.max(1);
    let endpoints_per_tenant = (args.endpoints / tenants).max(1);
    let subs_per_tenant = args.subscriptions / tenants;
    let extra = args.subscriptions % tenants;
    let mut rng = Rng::new(42);
    let mut batch = Snapshot::default();
    let mut loaded = 0usize;
    for t in 0..tenants {
        let tenant_id = tenant_id(t);
        batch.tenants.push(Tenant {
            tenant_id: tenant_id.clone(),
            display_name: format!("bench tenant {t}"),
            state: TenantState::Active,
            settings: TenantSettings::default(),
            create_time: now,
            update_time: now,
            delete_time: None,
            etag: new_etag(),
        });
        for e in 0..endpoints_per_tenant {
            batch.endpoints.push(Endpoint {
                tenant_id: tenant_id.clone(),
                endpoint_id: format!("e{e}"),
                url: format!("https://hooks.example.com/{tenant_id}/{e}"),
                description: String::new(),
                enabled: true,
                secret: hookplane::domain::SigningSecret::generate()
                    .expose()
                    .to_owned(),
                previous_secret: None,
                create_time: now,
                update_time: now,
                delete_time: None,
                etag: new_etag(),
            });
        }
        let count = subs_per_tenant + usize::from(t < extra);
        for s in 0..count {
            let patterns = (0..1 + rng.below(2))
                .map(|_| pattern(&mut rng, catalog))
                .collect::<Vec<_>>();
            let mut patterns = patterns;
            patterns.dedup();
            batch.subscriptions.push(Subscription {
                tenant_id: tenant_id.clone(),
                subscription_id: subscription_id(s),
                endpoint_id: format!("e{}", s % endpoints_per_tenant),
                name: Some(format!("sub-{s}")),
                event_types: patterns,
                status: SubscriptionStatus::Active,
                expire_time: None,
                create_time: now + s as i64,
                update_time: now,
                etag: new_etag(),
            });
        }
        if batch.subscriptions.len() >= 20_000 || t + 1 == tenants {
            loaded += batch.subscriptions.len();
            repo.import(&std::mem::take(&mut batch), now)
                .await
                .context("cannot import a batch")?;
            eprintln!("seed: {} tenants, {loaded} subscriptions", t + 1);
        }
    }
    repo.close().await;
    if let Some(url) = args
        .database_url
        .as_deref()
        .filter(|u| u.starts_with("postgres"))
    {
        // Planner statistics for the bulk-loaded tables: without them (a
        // server with autovacuum off, or one that has not run yet) the
        // expiry sweep's count, for one, scans the whole table.
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(url).await?;
        db.execute_unprepared("VACUUM ANALYZE").await?;
        db.close().await?;
    }
    println!(
        "seeded {tenants} tenants, {} endpoints, {loaded} subscriptions, {catalog} event types in {:.1} s",
        tenants * endpoints_per_tenant,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
