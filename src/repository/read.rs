//! Which way a read goes: SQLite's inline readers, a PostgreSQL held
//! connection, or the reader pool.

use sea_orm::{ConnectionTrait, EntityTrait, Select, Statement};

use super::error::classify;
use super::query::{by_key, model_of};
use super::sea::{Engine, SeaRepository};
use super::{RepoError, RepoResult};

impl SeaRepository {
    /// The row a primary-key select finds: on SQLite inline (see
    /// `inline_read`), elsewhere through the reader pool.
    pub(super) async fn read_by_key<E>(&self, select: Select<E>) -> RepoResult<Option<E::Model>>
    where
        E: EntityTrait,
        E::ActiveModel: sea_orm::TryIntoModel<E::Model>,
    {
        if *self.closed.borrow() {
            return Err(RepoError::Unavailable("the repository is closed".into()));
        }
        match &self.engine {
            Engine::Sqlite {
                inline: Some(inline),
                ..
            } => inline.one(select),
            Engine::Postgres {
                held: Some(held), ..
            } => {
                let statement = sea_orm::QueryTrait::build(&select, self.backend());
                model_of::<E>(held.query_one(statement).await.map_err(classify)?)
            }
            _ => by_key(&self.reader, select).await,
        }
    }

    /// Every row a read statement returns, on a held PostgreSQL connection when there
    /// are held connections (the follower's reads, which every write waits for),
    /// elsewhere through the reader pool.
    pub(super) async fn read_rows(
        &self,
        statement: Statement,
    ) -> RepoResult<Vec<sea_orm::QueryResult>> {
        match self.engine.held() {
            Some(held) => held.query_all(statement).await,
            None => self.reader.query_all_raw(statement).await,
        }
        .map_err(classify)
    }
}
