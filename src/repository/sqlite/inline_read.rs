//! Single-row reads on SQLite, run on the calling thread.
//!
//! sqlx runs every SQLite statement on its connection's own thread and
//! hands the rows back through channels, so each read costs two thread
//! switches. For a read by primary key those switches cost more than the
//! read itself (GetSubscription profiles were dominated by context
//! switching). These reads run on the caller's thread instead, on read-only
//! connections of their own. A key lookup in a WAL database takes a few
//! microseconds once its pages are cached, short enough to run on an async
//! worker; on a cold cache it waits for the disk like any page fault would.
//!
//! The row comes back as the entity's sea-orm model, set column by column
//! through its active model, so a column of the wrong type is an error
//! here just as it is on the pool path.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::{Value as SqliteValue, ValueRef};
use rusqlite::{Connection, OpenFlags};
use sea_orm::sea_query::Value;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ColumnType, DbBackend, EntityTrait, IdenStatic, Iterable,
    QueryTrait, Select, TryIntoModel,
};

use crate::repository::{RepoError, RepoResult};

pub(crate) struct InlineReader {
    connections: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

impl InlineReader {
    /// Opens `connections` read-only connections to the database file
    /// (after migrations, so they see the final schema).
    pub fn open(path: &Path, connections: usize, cache_kib: u32) -> rusqlite::Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connections = (0..connections.max(1))
            .map(|_| {
                let c = Connection::open_with_flags(path, flags)?;
                c.busy_timeout(Duration::from_secs(10))?;
                c.pragma_update(None, "cache_size", format!("-{cache_kib}"))?;
                c.pragma_update(
                    None,
                    "mmap_size",
                    crate::repository::sqlite::SQLITE_MMAP_BYTES,
                )?;
                // Plans that do not depend on bound values: the bundled
                // SQLite plans with some of them (a bound LIMIT, say) and
                // then prepares the statement again whenever they change.
                c.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
                Ok(Mutex::new(c))
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(InlineReader {
            connections,
            next: AtomicUsize::new(0),
        })
    }

    /// The first row `select` finds, if any.
    pub fn one<E>(&self, select: Select<E>) -> RepoResult<Option<E::Model>>
    where
        E: EntityTrait,
        E::ActiveModel: TryIntoModel<E::Model>,
    {
        // No LIMIT: rows are produced one step at a time, and only the
        // first is read.
        let statement = select.build(DbBackend::Sqlite);
        let params = statement
            .values
            .map(|v| v.0)
            .unwrap_or_default()
            .into_iter()
            .map(parameter)
            .collect::<RepoResult<Vec<_>>>()?;
        let connection = self.connection();
        let mut prepared = connection.prepare_cached(&statement.sql).map_err(failed)?;
        // sea-orm selects the entity's columns in their declared order.
        let columns: Vec<E::Column> = E::Column::iter().collect();
        let names_match = prepared.column_count() == columns.len()
            && columns
                .iter()
                .enumerate()
                .all(|(i, c)| prepared.column_name(i).is_ok_and(|n| n == c.as_str()));
        if !names_match {
            let table = E::default().table_name();
            return Err(RepoError::Internal(
                format!("a select of {table} did not return its columns in order").into(),
            ));
        }
        let mut rows = prepared
            .query(rusqlite::params_from_iter(params))
            .map_err(failed)?;
        let Some(row) = rows.next().map_err(failed)? else {
            return Ok(None);
        };
        let mut model = E::ActiveModel::default();
        for (i, column) in columns.into_iter().enumerate() {
            let value = field(
                row.get_ref(i).map_err(failed)?,
                column.def().get_column_type(),
            )?;
            model
                .try_set(column, value)
                .map_err(|e| RepoError::Internal(e.into()))?;
        }
        model
            .try_into_model()
            .map(Some)
            .map_err(|e| RepoError::Internal(e.into()))
    }

    /// A free connection, else the next one in turn. Holders never await,
    /// so at most one per runtime thread is busy at a time.
    fn connection(&self) -> MutexGuard<'_, Connection> {
        let n = self.connections.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.connections[(start + i) % n].try_lock() {
                return guard;
            }
        }
        // A panic mid-read leaves the connection itself intact.
        self.connections[start % n]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn failed(err: rusqlite::Error) -> RepoError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            RepoError::Unavailable(err.into())
        }
        _ => RepoError::Internal(err.into()),
    }
}

fn parameter(value: Value) -> RepoResult<SqliteValue> {
    Ok(match value {
        Value::String(Some(s)) => SqliteValue::Text(s),
        Value::BigInt(Some(i)) => SqliteValue::Integer(i),
        Value::Int(Some(i)) => SqliteValue::Integer(i.into()),
        Value::Bool(Some(b)) => SqliteValue::Integer(b.into()),
        // LIMIT and OFFSET come as unsigned.
        Value::BigUnsigned(Some(u)) => {
            SqliteValue::Integer(i64::try_from(u).map_err(|e| RepoError::Internal(e.into()))?)
        }
        Value::Bytes(Some(b)) => SqliteValue::Blob(b),
        Value::String(None)
        | Value::BigInt(None)
        | Value::Int(None)
        | Value::Bool(None)
        | Value::BigUnsigned(None)
        | Value::Bytes(None) => SqliteValue::Null,
        other => {
            return Err(RepoError::Internal(
                format!("unsupported parameter {other:?}").into(),
            ));
        }
    })
}

/// The value as the model's field of type `ty` expects it.
fn field(value: ValueRef<'_>, ty: &ColumnType) -> RepoResult<Value> {
    Ok(match (value, ty) {
        (ValueRef::Integer(i), ColumnType::Integer) => Value::Int(i32::try_from(i).ok()),
        (ValueRef::Integer(i), ColumnType::Boolean) => Value::Bool(Some(i != 0)),
        (ValueRef::Integer(i), _) => Value::BigInt(Some(i)),
        (ValueRef::Text(t), _) => Value::String(Some(
            String::from_utf8(t.to_vec()).map_err(|e| RepoError::Internal(e.into()))?,
        )),
        (ValueRef::Blob(b), _) => Value::Bytes(Some(b.to_vec())),
        (ValueRef::Real(f), _) => Value::Double(Some(f)),
        (ValueRef::Null, ColumnType::Integer) => Value::Int(None),
        (ValueRef::Null, ColumnType::Boolean) => Value::Bool(None),
        (ValueRef::Null, ColumnType::BigInteger) => Value::BigInt(None),
        (ValueRef::Null, ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob) => {
            Value::Bytes(None)
        }
        (ValueRef::Null, _) => Value::String(None),
    })
}
