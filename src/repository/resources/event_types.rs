//! The event-type catalogue's storage.

use crate::repository::ChangeKind;
use crate::repository::change_state::Changed;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder};

use crate::model::EventType;
use crate::repository::entities::event_type;
use crate::repository::error::{classify, unique_as};
use crate::repository::query::{all_set, page};
use crate::repository::rows::{event_type_from_row, event_type_to_row};
use crate::repository::{
    EventTypeStore, Page, PageRequest, RepoError, RepoResult, Revision, SeaRepository, WriteMeta,
};

#[async_trait::async_trait]
impl EventTypeStore for SeaRepository {
    async fn create_event_type(&self, e: &EventType, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        if let Some(code) = e.legacy_code {
            let taken = event_type::Entity::find()
                .filter(event_type::Column::LegacyCode.eq(code))
                .count(&*txn)
                .await
                .map_err(classify)?;
            if taken > 0 {
                return Err(RepoError::AlreadyExists("event type legacy_code"));
            }
        }
        let row = event_type_to_row(e);
        event_type::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(unique_as("event type"))?;
        log.record(&txn, Changed::EventType(&row), ChangeKind::Upsert, meta.now)
            .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn get_event_type(&self, name: &str) -> RepoResult<Option<EventType>> {
        Ok(self
            .read_by_key(event_type::Entity::find_by_id(name.to_owned()))
            .await?
            .map(event_type_from_row))
    }

    async fn get_event_type_by_code(&self, legacy_code: i32) -> RepoResult<Option<EventType>> {
        Ok(event_type::Entity::find()
            .filter(event_type::Column::LegacyCode.eq(legacy_code))
            .one(&self.reader)
            .await
            .map_err(classify)?
            .map(event_type_from_row))
    }

    async fn list_event_types(&self, req: &PageRequest) -> RepoResult<Page<EventType>> {
        let (rows, has_more, total) = page(
            &self.reader,
            event_type::Entity::find(),
            event_type::Column::CreateTime,
            event_type::Column::Name,
            req,
        )
        .await?;
        Ok(Page {
            items: rows.into_iter().map(event_type_from_row).collect(),
            has_more,
            total,
        })
    }

    async fn all_event_types(&self) -> RepoResult<Vec<EventType>> {
        Ok(event_type::Entity::find()
            .order_by_asc(event_type::Column::Name)
            .all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .map(event_type_from_row)
            .collect())
    }

    async fn update_event_type(
        &self,
        e: &EventType,
        prev_etag: &str,
        meta: &WriteMeta,
    ) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        if let Some(code) = e.legacy_code {
            let taken = event_type::Entity::find()
                .filter(event_type::Column::LegacyCode.eq(code))
                .filter(event_type::Column::Name.ne(e.name.clone()))
                .count(&*txn)
                .await
                .map_err(classify)?;
            if taken > 0 {
                return Err(RepoError::AlreadyExists("event type legacy_code"));
            }
        }
        let row = event_type_to_row(e);
        let result = event_type::Entity::update_many()
            .set(all_set(row.clone()))
            .filter(event_type::Column::Name.eq(e.name.clone()))
            .filter(event_type::Column::Etag.eq(prev_etag))
            .exec(&*txn)
            .await
            .map_err(unique_as("event type legacy_code"))?;
        if result.rows_affected == 0 {
            return Err(RepoError::Stale);
        }
        log.record(&txn, Changed::EventType(&row), ChangeKind::Upsert, meta.now)
            .await?;
        self.commit(txn, meta, log.last).await
    }
}
