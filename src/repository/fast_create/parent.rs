//! The parent rule of a subscription write: its tenant is live, ACTIVE and
//! (for a create) still at the etag the caller built the subscription
//! from; its endpoint is live.
//!
//! Every create path applies it. The fast paths filter with it in SQL
//! ([`condition`] over [`FROM`]) and write nothing when it fails; the
//! transaction reads both rows ([`read`]) and checks them here in Rust
//! ([`Parents::check`]), which also names what failed. A test below runs
//! the SQL and the Rust side by side on every way the rule can fail.

use sea_orm::{DatabaseBackend, DbErr, QueryResult, Statement};

use crate::model::TenantState;
use crate::repository::{RepoError, RepoResult};

/// The rows the rule reads: `t` the tenant, `e` the endpoint.
pub(in crate::repository) const FROM: &str =
    "tenants t JOIN endpoints e ON e.tenant_id = t.tenant_id";

/// What the rule is checked against, each an SQL expression of the
/// caller's dialect: a placeholder (`$1`, `?`) or a column.
pub(in crate::repository) struct Keys<'a> {
    pub tenant_id: &'a str,
    pub endpoint_id: &'a str,
    pub tenant_etag: &'a str,
}

/// The condition over [`FROM`] that holds only when the rule does.
pub(in crate::repository) fn condition(keys: &Keys<'_>) -> String {
    format!(
        "t.tenant_id = {} AND e.endpoint_id = {} AND t.state = '{}' \
         AND t.etag = {} AND t.delete_time IS NULL AND e.delete_time IS NULL",
        keys.tenant_id,
        keys.endpoint_id,
        TenantState::Active.as_str(),
        keys.tenant_etag,
    )
}

/// Reads what the rule checks of the tenant and endpoint (no row when
/// either does not exist at all). On PostgreSQL both rows stay
/// share-locked until commit.
pub(in crate::repository) fn read(
    backend: DatabaseBackend,
    tenant_id: &str,
    endpoint_id: &str,
) -> Statement {
    let (params, lock) = match backend {
        DatabaseBackend::Postgres => (("$1", "$2"), " FOR SHARE"),
        _ => (("?", "?"), ""),
    };
    let sql = format!(
        "SELECT t.state, t.etag, t.delete_time AS tenant_delete_time, \
         e.delete_time AS endpoint_delete_time \
         FROM {FROM} WHERE t.tenant_id = {} AND e.endpoint_id = {}{lock}",
        params.0, params.1
    );
    Statement::from_sql_and_values(
        backend,
        sql,
        [tenant_id.to_owned().into(), endpoint_id.to_owned().into()],
    )
}

/// A tenant and endpoint as [`read`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::repository) struct Parents {
    pub tenant_deleted: bool,
    pub tenant_state: String,
    pub tenant_etag: String,
    pub endpoint_deleted: bool,
}

impl Parents {
    pub(in crate::repository) fn from_row(row: &QueryResult) -> RepoResult<Self> {
        let field = |e: DbErr| RepoError::Internal(e.into());
        let tenant_deleted: Option<i64> = row.try_get("", "tenant_delete_time").map_err(field)?;
        let endpoint_deleted: Option<i64> =
            row.try_get("", "endpoint_delete_time").map_err(field)?;
        Ok(Parents {
            tenant_deleted: tenant_deleted.is_some(),
            tenant_state: row.try_get("", "state").map_err(field)?,
            tenant_etag: row.try_get("", "etag").map_err(field)?,
            endpoint_deleted: endpoint_deleted.is_some(),
        })
    }

    /// The rule in Rust, naming the first thing that fails: a deleted
    /// tenant, a suspended one, a deleted endpoint, then (when the caller
    /// built its write from `tenant_etag`) a tenant changed since.
    pub(in crate::repository) fn check(
        &self,
        tenant_id: &str,
        tenant_etag: Option<&str>,
    ) -> RepoResult<()> {
        if self.tenant_deleted {
            return Err(RepoError::NotFound("tenant"));
        }
        tenant_active(tenant_id, &self.tenant_state)?;
        if self.endpoint_deleted {
            return Err(RepoError::NotFound("endpoint"));
        }
        match tenant_etag {
            Some(etag) if etag != self.tenant_etag => Err(RepoError::TenantChanged),
            _ => Ok(()),
        }
    }
}

/// The tenant part of the rule every write under a tenant checks: a
/// suspended tenant's resources cannot change.
pub(in crate::repository) fn tenant_active(tenant_id: &str, state: &str) -> RepoResult<()> {
    // A state this version does not know is refused like a suspension.
    let state = TenantState::parse(state).unwrap_or(TenantState::Suspended);
    match state.refuses_writes(tenant_id) {
        Some(why) => Err(RepoError::Precondition(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Parents {
        Parents {
            tenant_deleted: false,
            tenant_state: TenantState::Active.as_str().to_owned(),
            tenant_etag: "etag-1".to_owned(),
            endpoint_deleted: false,
        }
    }

    /// Every way the rule can fail, one at a time, with the error the Rust
    /// check names.
    fn failures() -> Vec<(&'static str, Parents, Option<&'static str>, RepoError)> {
        vec![
            (
                "deleted tenant",
                Parents {
                    tenant_deleted: true,
                    ..live()
                },
                Some("etag-1"),
                RepoError::NotFound("tenant"),
            ),
            (
                "suspended tenant",
                Parents {
                    tenant_state: TenantState::Suspended.as_str().to_owned(),
                    ..live()
                },
                Some("etag-1"),
                RepoError::Precondition(String::new()),
            ),
            (
                "tenant changed",
                live(),
                Some("etag-0"),
                RepoError::TenantChanged,
            ),
            (
                "deleted endpoint",
                Parents {
                    endpoint_deleted: true,
                    ..live()
                },
                Some("etag-1"),
                RepoError::NotFound("endpoint"),
            ),
        ]
    }

    fn same_error(got: &RepoError, want: &RepoError) -> bool {
        match (got, want) {
            (RepoError::NotFound(a), RepoError::NotFound(b)) => a == b,
            (RepoError::Precondition(m), RepoError::Precondition(_)) => m.contains("suspended"),
            (RepoError::TenantChanged, RepoError::TenantChanged) => true,
            _ => false,
        }
    }

    #[test]
    fn the_rust_check_names_each_failure() {
        assert!(live().check("t1", Some("etag-1")).is_ok());
        assert!(live().check("t1", None).is_ok(), "no etag to compare");
        for (case, parents, etag, want) in failures() {
            let got = parents.check("t1", etag).expect_err(case);
            assert!(same_error(&got, &want), "{case}: {got:?}, not {want:?}");
        }
    }

    #[test]
    fn the_rust_check_names_a_deleted_tenant_before_anything_else() {
        let everything_wrong = Parents {
            tenant_deleted: true,
            tenant_state: TenantState::Suspended.as_str().to_owned(),
            tenant_etag: "other".to_owned(),
            endpoint_deleted: true,
        };
        let got = everything_wrong.check("t1", Some("etag-1")).unwrap_err();
        assert!(matches!(got, RepoError::NotFound("tenant")), "{got:?}");
    }

    #[test]
    fn the_condition_renders_in_each_parameter_style() {
        let postgres = condition(&Keys {
            tenant_id: "$1",
            endpoint_id: "$2",
            tenant_etag: "$3",
        });
        assert_eq!(
            postgres,
            "t.tenant_id = $1 AND e.endpoint_id = $2 AND t.state = 'ACTIVE' \
             AND t.etag = $3 AND t.delete_time IS NULL AND e.delete_time IS NULL"
        );
        let columns = condition(&Keys {
            tenant_id: "input.s_tenant_id",
            endpoint_id: "input.s_endpoint_id",
            tenant_etag: "input.tenant_etag",
        });
        assert!(columns.starts_with("t.tenant_id = input.s_tenant_id AND "));
        assert!(columns.contains("t.etag = input.tenant_etag"));
    }

    #[test]
    fn the_read_renders_for_each_dialect() {
        let postgres = read(DatabaseBackend::Postgres, "t1", "e1");
        assert!(
            postgres.sql.ends_with(&format!(
                "FROM {FROM} WHERE t.tenant_id = $1 AND e.endpoint_id = $2 FOR SHARE"
            )),
            "{}",
            postgres.sql
        );
        let sqlite = read(DatabaseBackend::Sqlite, "t1", "e1");
        assert!(
            sqlite.sql.ends_with(&format!(
                "FROM {FROM} WHERE t.tenant_id = ? AND e.endpoint_id = ?"
            )),
            "{}",
            sqlite.sql
        );
        assert_eq!(sqlite.values.unwrap().0.len(), 2);
    }

    /// The SQL condition and the Rust check agree on every case: the rule
    /// really is one rule, whichever path applies it.
    #[test]
    fn the_sql_condition_holds_exactly_when_the_rust_check_passes() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE tenants (tenant_id TEXT PRIMARY KEY, state TEXT NOT NULL, \
               etag TEXT NOT NULL, delete_time INTEGER); \
             CREATE TABLE endpoints (tenant_id TEXT NOT NULL, endpoint_id TEXT NOT NULL, \
               delete_time INTEGER, PRIMARY KEY (tenant_id, endpoint_id));",
        )
        .unwrap();
        let sql = format!(
            "SELECT 1 FROM {FROM} WHERE {}",
            condition(&Keys {
                tenant_id: "?1",
                endpoint_id: "?2",
                tenant_etag: "?3",
            })
        );
        let mut cases: Vec<(&str, Parents, Option<&str>)> = failures()
            .into_iter()
            .map(|(case, parents, etag, _)| (case, parents, etag))
            .collect();
        cases.push(("live", live(), Some("etag-1")));
        for (case, parents, etag) in cases {
            db.execute_batch("DELETE FROM tenants; DELETE FROM endpoints;")
                .unwrap();
            db.execute(
                "INSERT INTO tenants VALUES ('t1', ?1, ?2, ?3)",
                rusqlite::params![
                    parents.tenant_state,
                    parents.tenant_etag,
                    parents.tenant_deleted.then_some(1)
                ],
            )
            .unwrap();
            db.execute(
                "INSERT INTO endpoints VALUES ('t1', 'e1', ?1)",
                rusqlite::params![parents.endpoint_deleted.then_some(1)],
            )
            .unwrap();
            let holds = db
                .prepare(&sql)
                .unwrap()
                .exists(rusqlite::params!["t1", "e1", etag.unwrap()])
                .unwrap();
            assert_eq!(
                holds,
                parents.check("t1", etag).is_ok(),
                "{case}: SQL and Rust disagree"
            );
            let elsewhere = db
                .prepare(&sql)
                .unwrap()
                .exists(rusqlite::params!["t1", "e2", etag.unwrap()])
                .unwrap();
            assert!(!elsewhere, "{case}: the condition matched another endpoint");
        }
    }
}
