//! Query helpers every resource uses: a read by key, keyset pages, full-row
//! updates, columns by position.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};

use super::error::classify;
use super::{PageRequest, RepoResult};

/// Column `index` of `row`.
pub(super) fn at<T: sea_orm::TryGetable>(
    row: &sea_orm::QueryResult,
    index: usize,
) -> RepoResult<T> {
    row.try_get_by_index(index).map_err(classify)
}

/// Marks every column of a model as set, for a full-row UPDATE.
pub(super) fn all_set<M, A>(model: M) -> A
where
    M: IntoActiveModel<A>,
    A: ActiveModelTrait,
{
    model.into_active_model().reset_all()
}

/// Runs a keyset page over `select`, ordered by (create_time, key).
pub(super) async fn page<E, C>(
    db: &C,
    select: Select<E>,
    time_col: E::Column,
    key_col: E::Column,
    page: &PageRequest,
) -> RepoResult<(Vec<E::Model>, bool, u64)>
where
    E: EntityTrait,
    E::Model: Sync,
    C: ConnectionTrait,
{
    let total = select.clone().count(db).await.map_err(classify)?;
    let mut q = select;
    if let Some((t, key)) = &page.after {
        q = q.filter(
            sea_orm::Condition::any().add(time_col.gt(*t)).add(
                sea_orm::Condition::all()
                    .add(time_col.eq(*t))
                    .add(key_col.gt(key.clone())),
            ),
        );
    }
    let mut rows = q
        .order_by_asc(time_col)
        .order_by_asc(key_col)
        .offset(page.skip)
        .limit(page.limit + 1)
        .all(db)
        .await
        .map_err(classify)?;
    let has_more = rows.len() as u64 > page.limit;
    rows.truncate(page.limit as usize);
    Ok((rows, has_more, total))
}

/// The row a primary-key select finds. `Select::one` would add `LIMIT ?`,
/// and the bundled SQLite, which looks at a bound LIMIT when it plans, then
/// prepares the statement again every time it runs: a key selects at most
/// one row anyway.
pub(super) async fn by_key<E, C>(db: &C, select: Select<E>) -> RepoResult<Option<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let statement = sea_orm::QueryTrait::build(&select, db.get_database_backend());
    model_of::<E>(db.query_one_raw(statement).await.map_err(classify)?)
}

/// The model in a row a key read returned.
pub(super) fn model_of<E: EntityTrait>(
    row: Option<sea_orm::QueryResult>,
) -> RepoResult<Option<E::Model>> {
    row.map(|row| E::Model::from_query_result(&row, "").map_err(classify))
        .transpose()
}
