//! CreateSubscription as one statement.
//!
//! The transactional path (begin, nonce, parent check, insert, change row,
//! commit) costs six round trips, each parsed and executed on its own.
//!
//! On PostgreSQL the same writes are one data-modifying `WITH` statement
//! that PostgreSQL runs as its own transaction:
//!
//! - `parents` share-locks the tenant and the endpoint, and yields a row
//!   only if the tenant is live, active and still at the etag the caller
//!   built the subscription from, and the endpoint live;
//! - `quota` takes one from the tenant's subscription quota (see `quota`),
//!   only if `parents` yielded a row and the quota has room;
//! - `written` records the request nonce and takes the revision from the
//!   transaction id, both only if `quota` took one;
//! - `inserted` stores the subscription, `changed` appends its change row,
//!   and `idempotent` stores the response to replay, each only if the
//!   earlier steps wrote.
//!
//! SQLite has no data-modifying `WITH`; there the writes are one text of
//! several statements that sqlx runs in a single call on the writer's
//! thread, inside the open group-commit batch, for several creates at once
//! (see `create_batch`): a savepoint; per create, the nonce, the
//! subscription and the quota's count each under the same parent and quota
//! check, and the change row only if the count was taken (`changes() =
//! 1`); the savepoint's release.
//!
//! Either returns the revision of each create that wrote, and nothing for
//! one whose parent or quota check failed. A unique violation (a taken id or name,
//! a replayed nonce, a concurrent request id) aborts the write. In either
//! case the caller falls back to the transactional path, which writes
//! nothing or names the exact error; those are the rare cases.

use std::sync::OnceLock;

use sea_orm::{
    ActiveModelTrait, DatabaseBackend, EntityName, EntityTrait, IntoActiveModel, Iterable,
    Statement, Value,
};

use super::create_batch::MAX_BATCH;
use super::parent;
use crate::repository::entities::{idempotency, nonce, subscription};
use crate::repository::quota::{self, Quota};
use crate::repository::revision;
use crate::repository::{ChangeKind, ResourceKind, Revision};

/// Bind parameters in order, and their `$n` names.
struct Params(Vec<Value>);

impl Params {
    fn bind(&mut self, value: impl Into<Value>) -> String {
        self.0.push(value.into());
        format!("${}", self.0.len())
    }
}

/// `INSERT INTO table (columns) SELECT values {rest}`, for the columns the
/// active model sets; `rest` is a `FROM` or `WHERE` clause.
fn insert_select<A: ActiveModelTrait>(params: &mut Params, row: &A, rest: &str) -> String {
    let table = <A::Entity as Default>::default().table_name().to_owned();
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for column in <A::Entity as EntityTrait>::Column::iter() {
        if let Some(value) = row.get(column).into_value() {
            columns.push(format!("\"{}\"", sea_orm::IdenStatic::as_str(&column)));
            values.push(params.bind(value));
        }
    }
    format!(
        "INSERT INTO \"{table}\" ({}) SELECT {} {rest}",
        columns.join(", "),
        values.join(", ")
    )
}

/// A query yielding a row only if the parents of `row` pass the parent
/// rule (see `parent`).
fn live_parents(p: &mut Params, row: &subscription::Model, tenant_etag: &str) -> String {
    let keys = parent::Keys {
        tenant_id: &p.bind(row.tenant_id.clone()),
        endpoint_id: &p.bind(row.endpoint_id.clone()),
        tenant_etag: &p.bind(tenant_etag.to_owned()),
    };
    format!(
        "SELECT 1 FROM {} WHERE {}",
        parent::FROM,
        parent::condition(&keys)
    )
}

/// The PostgreSQL statement creating `row`, if its tenant holds fewer than
/// `limit` live subscriptions; see the module documentation.
pub(in crate::repository) fn create_subscription(
    state: String,
    row: subscription::Model,
    tenant_etag: &str,
    nonce: Option<&nonce::ActiveModel>,
    idempotency: Option<&idempotency::ActiveModel>,
    change_time: i64,
    limit: i64,
) -> Statement {
    let mut p = Params(Vec::new());
    let parents = format!("{} FOR SHARE", live_parents(&mut p, &row, tenant_etag));
    let (tenant, limit) = (p.bind(row.tenant_id.clone()), p.bind(limit));
    let quota = format!(
        "{} RETURNING 1",
        quota::take_one_sql(
            Quota::Subscriptions,
            &tenant,
            &limit,
            " AND EXISTS (SELECT 1 FROM parents)"
        )
    );
    let (tenant_id, subscription_id) = (row.tenant_id.clone(), row.subscription_id.clone());
    let row = row.into_active_model();
    let revision = format!("{} AS revision", revision::pg_base_sql());
    let written = match nonce {
        Some(n) => format!(
            "{} RETURNING {revision}",
            insert_select(&mut p, n, "FROM quota")
        ),
        None => format!("SELECT {revision} FROM quota"),
    };
    let inserted = format!(
        "{} RETURNING 1",
        insert_select(&mut p, &row, "FROM written")
    );
    let changed = format!(
        "INSERT INTO changes ({CHANGE_COLUMNS}) \
         SELECT revision, {}, '{resource}', {}, '{kind}', {}, {} FROM written, inserted \
         RETURNING revision",
        p.bind(tenant_id),
        p.bind(subscription_id),
        p.bind(change_time),
        p.bind(state),
        resource = ResourceKind::Subscription.as_str(),
        kind = ChangeKind::Upsert.as_str(),
    );
    let idempotent = idempotency
        .map(|i| {
            format!(
                ", idempotent AS ({})",
                insert_select(&mut p, i, "FROM inserted")
            )
        })
        .unwrap_or_default();
    let sql = format!(
        "WITH parents AS ({parents}), quota AS ({quota}), written AS ({written}), \
         inserted AS ({inserted}), changed AS ({changed}){idempotent} SELECT revision FROM changed"
    );
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, p.0)
}

/// The change-log row's columns, as every text here writes them.
const CHANGE_COLUMNS: &str =
    "revision, tenant_id, resource_type, resource_key, kind, change_time, state";

/// The savepoint [`create_subscriptions_sqlite`] opens; the caller rolls
/// back to it when the statements fail part-way.
pub(in crate::repository) const SQLITE_SAVEPOINT: &str = "create_batch";

/// The SQLite statements creating `creates` inside the open group-commit
/// batch's transaction, create `i` at revision `first_revision + i`; see
/// the module documentation. Each create is checked against its own tenant
/// and endpoint and writes its rows only if they pass: the nonce (if any)
/// and the subscription each under the parent check, the change row only
/// if the subscription was written. They return the revision of each
/// create that wrote. A unique violation stops them part-way, with the
/// savepoint still open.
pub(in crate::repository) fn create_subscriptions_sqlite(
    creates: &[BatchedCreate],
    first_revision: Revision,
) -> Statement {
    let mut p = Params(Vec::new());
    let mut statements = vec![format!("SAVEPOINT {SQLITE_SAVEPOINT}")];
    let count = Quota::Subscriptions.column();
    for (revision, c) in (first_revision..).zip(creates) {
        let (api_id, nonce, nonce_expire) = nonce_values(c);
        let parents = live_parents(&mut p, &c.row, &c.tenant_etag);
        // The same check guards every write of the create; the quota's
        // count moves last, so the check reads the same values each time.
        let (tenant, limit) = (
            p.bind(c.row.tenant_id.clone()),
            p.bind(c.subscription_limit),
        );
        let checked = format!(
            "EXISTS ({parents}) AND {}",
            quota::has_room_sql(Quota::Subscriptions, &tenant, &limit)
        );
        statements.push(format!(
            "INSERT INTO request_nonces (api_id, nonce, expire_time) \
             SELECT {}, {nonce}, {} WHERE {nonce} IS NOT NULL AND {checked}",
            p.bind(api_id),
            p.bind(nonce_expire),
            nonce = p.bind(nonce),
        ));
        let row = c.row.clone().into_active_model();
        statements.push(insert_select(&mut p, &row, &format!("WHERE {checked}")));
        statements.push(format!(
            "UPDATE tenant_usage SET {count} = {count} + 1 WHERE tenant_id = {} AND {checked}",
            p.bind(c.row.tenant_id.clone()),
        ));
        statements.push(format!(
            "INSERT INTO changes ({CHANGE_COLUMNS}) \
             SELECT {}, {}, '{resource}', {}, '{kind}', {}, {} WHERE changes() = 1 RETURNING revision",
            p.bind(revision),
            p.bind(c.row.tenant_id.clone()),
            p.bind(c.row.subscription_id.clone()),
            p.bind(c.change_time),
            p.bind(c.state.clone()),
            resource = ResourceKind::Subscription.as_str(),
            kind = ChangeKind::Upsert.as_str(),
        ));
    }
    statements.push(format!("RELEASE {SQLITE_SAVEPOINT}"));
    Statement::from_sql_and_values(DatabaseBackend::Sqlite, statements.join("; "), p.0)
}

/// A create's nonce row as values (NULL when it has none).
fn nonce_values(c: &BatchedCreate) -> (Option<String>, Option<String>, Option<i64>) {
    match &c.nonce {
        Some(n) => (
            n.api_id.clone().take(),
            n.nonce.clone().take(),
            n.expire_time.clone().take(),
        ),
        None => (None, None, None),
    }
}

/// One create of a batch (see `create_batch`).
pub(in crate::repository) struct BatchedCreate {
    pub row: subscription::Model,
    /// The row as its change-log row keeps it (see `change_state`).
    pub state: String,
    pub tenant_etag: String,
    pub nonce: Option<nonce::ActiveModel>,
    pub change_time: i64,
    /// The tenant's subscription quota (the same for every create).
    pub subscription_limit: i64,
}

/// The statement creating every row of `creates`, or none: the same checks
/// and writes as [`create_subscription`], for several rows at once. Each row
/// is checked against its own tenant and endpoint; unless all pass, nothing
/// is written and no row is returned. The transaction's revision base plus
/// a row's position is that row's revision, so the statement returns one
/// revision per create, whose low bits give its position. A parent row
/// locked by another write fails the statement at once (`NOWAIT`) instead
/// of holding every create of the batch behind that write.
///
/// The quotas of the batch's tenants are locked in tenant order (so two
/// batches cannot deadlock on them) and, read as they stand once locked,
/// must all have room for the batch's creates; then all are taken, else
/// none and nothing is written.
pub(in crate::repository) fn create_subscriptions(creates: &[BatchedCreate]) -> Statement {
    let per_row = BATCH_INPUTS + subscription::Column::iter().len();
    let mut values = Vec::with_capacity(creates.len() * per_row);
    for c in creates {
        let (api_id, nonce, nonce_expire) = nonce_values(c);
        values.extend([
            c.tenant_etag.clone().into(),
            api_id.into(),
            nonce.into(),
            nonce_expire.into(),
            c.change_time.into(),
            c.state.clone().into(),
        ]);
        let row = c.row.clone().into_active_model();
        values.extend(
            subscription::Column::iter()
                .map(|column| row.get(column).into_value().unwrap_or(Value::String(None))),
        );
    }
    // The last parameter, after every create's.
    values.push(creates.first().map_or(0, |c| c.subscription_limit).into());
    let count = creates.len();
    let sql = match count.checked_sub(1).and_then(|i| BATCH_SQL.get(i)) {
        Some(text) => text.get_or_init(|| batch_sql(count)).clone(),
        None => batch_sql(count),
    };
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

/// Bound values per create before the subscription's columns: the tenant's
/// etag, the nonce's api id, nonce and expiry, the change time and state.
const BATCH_INPUTS: usize = 6;

/// [`create_subscriptions`]' text by batch size, built on first use: the
/// text depends on nothing else, and building it for every batch showed
/// in create profiles.
static BATCH_SQL: [OnceLock<String>; MAX_BATCH] = [const { OnceLock::new() }; MAX_BATCH];

/// The text of [`create_subscriptions`] for `count` creates.
fn batch_sql(count: usize) -> String {
    use sea_orm::IdenStatic;
    let names: Vec<&str> = subscription::Column::iter().map(|c| c.as_str()).collect();
    let per_row = BATCH_INPUTS + names.len();
    let rows = (0..count)
        .map(|i| {
            let params = (1..=per_row)
                .map(|k| format!("${}", i * per_row + k))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({i}, {params})")
        })
        .collect::<Vec<_>>();
    let input_columns = names
        .iter()
        .map(|n| format!("\"s_{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let table_columns = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let revision = format!("{} AS base", revision::pg_base_sql());
    let limit = format!("${}", count * per_row + 1);
    let live = Quota::Subscriptions.column();
    let parents_live = parent::condition(&parent::Keys {
        tenant_id: "input.s_tenant_id",
        endpoint_id: "input.s_endpoint_id",
        tenant_etag: "input.tenant_etag",
    });
    format!(
        "WITH input (i, tenant_etag, nonce_api_id, nonce, nonce_expire, change_time, state, {input_columns}) \
         AS (VALUES {rows}), \
         parents AS (SELECT input.i FROM input, {parents_from} \
           WHERE {parents_live} FOR SHARE OF t, e NOWAIT), \
         checked AS (SELECT {revision} FROM parents HAVING count(*) = {count}), \
         need AS (SELECT s_tenant_id AS tenant_id, count(*) AS n FROM input GROUP BY s_tenant_id), \
         locked AS (SELECT u.{live} + need.n AS after FROM tenant_usage u \
           JOIN need ON need.tenant_id = u.tenant_id WHERE EXISTS (SELECT 1 FROM checked) \
           ORDER BY u.tenant_id FOR UPDATE OF u), \
         fits AS (SELECT checked.base FROM checked \
           WHERE (SELECT count(*) FROM locked WHERE after <= {limit}) = (SELECT count(*) FROM need)), \
         quota AS (UPDATE tenant_usage u SET {live} = u.{live} + need.n FROM need, fits \
           WHERE u.tenant_id = need.tenant_id RETURNING 1), \
         written AS (INSERT INTO request_nonces (api_id, nonce, expire_time) \
           SELECT nonce_api_id, nonce, nonce_expire FROM input, fits \
           WHERE input.nonce IS NOT NULL RETURNING 1), \
         inserted AS (INSERT INTO subscriptions ({table_columns}) \
           SELECT {input_columns} FROM input, fits RETURNING 1), \
         changed AS (INSERT INTO changes ({CHANGE_COLUMNS}) \
           SELECT fits.base + input.i, input.s_tenant_id, '{resource}', input.s_subscription_id, \
           '{kind}', input.change_time, input.state FROM input, fits RETURNING revision) \
         SELECT revision FROM changed",
        rows = rows.join(", "),
        parents_from = parent::FROM,
        resource = ResourceKind::Subscription.as_str(),
        kind = ChangeKind::Upsert.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sea_orm::Set;

    use super::*;

    fn row(tenant: &str, id: &str) -> subscription::Model {
        subscription::Model {
            tenant_id: tenant.into(),
            subscription_id: id.into(),
            endpoint_id: "e1".into(),
            name: None,
            event_types: r#"["orders.*"]"#.into(),
            status: "ACTIVE".into(),
            expire_time: None,
            create_time: 1,
            update_time: 1,
            etag: "s-etag".into(),
        }
    }

    fn nonce_row(value: &str) -> nonce::ActiveModel {
        nonce::ActiveModel {
            api_id: Set("caller".into()),
            nonce: Set(value.into()),
            expire_time: Set(99),
        }
    }

    fn create(i: usize, with_nonce: bool) -> BatchedCreate {
        BatchedCreate {
            row: row(&format!("t{}", i % 2), &format!("s{i}")),
            state: format!("{{\"etag\":\"s{i}\"}}"),
            tenant_etag: "t-etag".into(),
            nonce: with_nonce.then(|| nonce_row(&format!("n{i}"))),
            change_time: 5,
            subscription_limit: 100,
        }
    }

    /// The `$n` parameters the text names, each once however often used.
    fn named(sql: &str) -> BTreeSet<usize> {
        let mut named = BTreeSet::new();
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            rest = &rest[at + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                named.insert(n);
            }
        }
        named
    }

    fn bound(statement: &Statement) -> usize {
        statement.values.as_ref().map_or(0, |v| v.0.len())
    }

    /// Every bound value is named, in order from `$1`, and nothing else.
    fn assert_parameters_match(statement: &Statement) {
        let expected: BTreeSet<usize> = (1..=bound(statement)).collect();
        assert_eq!(named(&statement.sql), expected, "{}", statement.sql);
    }

    #[test]
    fn the_batch_text_numbers_every_create_s_parameters_then_the_limit() {
        for count in [1, 2, 7, MAX_BATCH] {
            let creates: Vec<_> = (0..count).map(|i| create(i, i % 3 != 0)).collect();
            let statement = create_subscriptions(&creates);
            let per_row = BATCH_INPUTS + subscription::Column::iter().len();
            assert_eq!(bound(&statement), count * per_row + 1, "{count} creates");
            assert_parameters_match(&statement);
            // The limit is the last parameter.
            let values = &statement.values.as_ref().unwrap().0;
            assert_eq!(values.last(), Some(&Value::BigInt(Some(100))));
            // Row i of the input is numbered i, for its revision's position.
            assert!(statement.sql.contains(&format!("({}, $", count - 1)));
            // Each create's change row keeps its own state.
            for c in &creates {
                assert!(
                    values.contains(&Value::from(c.state.clone())),
                    "{}",
                    c.state
                );
            }
        }
    }

    #[test]
    fn the_batch_text_is_built_once_per_size() {
        let creates: Vec<_> = (0..3).map(|i| create(i, true)).collect();
        let first = create_subscriptions(&creates).sql;
        assert_eq!(first, batch_sql(3));
        assert_eq!(create_subscriptions(&creates).sql, first);
        assert_ne!(batch_sql(2), first);
    }

    #[test]
    fn every_text_checks_the_parent_rule_and_takes_its_revision_from_the_one_scheme() {
        let keys = |t, e, etag| parent::Keys {
            tenant_id: t,
            endpoint_id: e,
            tenant_etag: etag,
        };
        let batch = batch_sql(2);
        let by_input = parent::condition(&keys(
            "input.s_tenant_id",
            "input.s_endpoint_id",
            "input.tenant_etag",
        ));
        assert!(batch.contains(&by_input), "{batch}");
        assert!(batch.contains(revision::pg_base_sql()), "{batch}");
        assert!(batch.contains("FOR SHARE OF t, e NOWAIT"));

        let one = create_subscription("{}".into(), row("t1", "s1"), "t-etag", None, None, 5, 100);
        assert!(
            one.sql
                .contains(&parent::condition(&keys("$1", "$2", "$3"))),
            "{}",
            one.sql
        );
        assert!(one.sql.contains(revision::pg_base_sql()));

        let creates: Vec<_> = (0..2).map(|i| create(i, false)).collect();
        let sqlite = create_subscriptions_sqlite(&creates, 40);
        assert!(
            sqlite
                .sql
                .contains(&parent::condition(&keys("$1", "$2", "$3")))
        );
        assert!(!sqlite.sql.contains("pg_current_xact_id"));
    }

    #[test]
    fn the_one_statement_create_binds_each_optional_row_it_writes() {
        let bare = create_subscription("{}".into(), row("t1", "s1"), "t-etag", None, None, 5, 100);
        assert_parameters_match(&bare);
        assert!(!bare.sql.contains("request_nonces"));
        assert!(!bare.sql.contains("idempotent"));

        let idempotency = crate::repository::entities::idempotency::ActiveModel {
            api_id: Set("caller".into()),
            request_id: Set("r1".into()),
            method: Set("CreateSubscription".into()),
            fingerprint: Set(vec![1]),
            response_enc: Set(vec![2]),
            create_time: Set(5),
        };
        let full = create_subscription(
            "{}".into(),
            row("t1", "s1"),
            "t-etag",
            Some(&nonce_row("n1")),
            Some(&idempotency),
            5,
            100,
        );
        assert_parameters_match(&full);
        assert!(full.sql.contains("INSERT INTO \"request_nonces\""));
        assert!(
            full.sql
                .contains("idempotent AS (INSERT INTO \"idempotency_records\"")
        );
        assert_eq!(bound(&full), bound(&bare) + 3 + 6);
    }

    /// On SQLite each create writes under its own check, and its revision
    /// is the batch's first plus its position.
    #[test]
    fn the_sqlite_text_gives_each_create_its_own_statements_and_revision() {
        let creates: Vec<_> = (0..3).map(|i| create(i, i != 1)).collect();
        let statement = create_subscriptions_sqlite(&creates, 40);
        assert_parameters_match(&statement);
        let parts: Vec<&str> = statement.sql.split("; ").collect();
        assert_eq!(parts.first(), Some(&"SAVEPOINT create_batch"));
        assert_eq!(parts.last(), Some(&"RELEASE create_batch"));
        // Nonce, subscription, quota, change row: four per create.
        assert_eq!(parts.len(), 2 + 4 * creates.len());
        let values = &statement.values.as_ref().unwrap().0;
        for revision in [40, 41, 42] {
            assert!(
                values.contains(&Value::BigInt(Some(revision))),
                "{revision}"
            );
        }
        assert!(!values.contains(&Value::BigInt(Some(43))));
        for c in &creates {
            assert!(
                values.contains(&Value::from(c.state.clone())),
                "{}",
                c.state
            );
        }
    }
}
