//! API credentials' storage, and the bootstrap credential at start-up.

use crate::repository::ChangeKind;
use crate::repository::change_state::Changed;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QuerySelect, Statement,
};

use crate::domain::Role;
use crate::model::{Credential, new_etag};
use crate::repository::change_log::{ChangeLog, first_revision};
use crate::repository::entities::{credential, tenant};
use crate::repository::error::{classify, unique_as};
use crate::repository::query::{by_key, page};
use crate::repository::secrets::credential_aad;
use crate::repository::{
    Bootstrap, CredentialFilter, CredentialStore, Page, PageRequest, RepoError, RepoResult,
    Revision, SeaRepository, WriteMeta,
};

const BOOTSTRAP_LOCK: i64 = 0x686f_6f6b_0002;

#[async_trait::async_trait]
impl CredentialStore for SeaRepository {
    async fn create_credential(&self, c: &Credential, meta: &WriteMeta) -> RepoResult<Revision> {
        let (txn, mut log) = self.begin_write(meta).await?;
        if let Some(tenant_id) = &c.tenant_id {
            by_key(
                &*txn,
                tenant::Entity::find_by_id(tenant_id.clone()).lock_shared(),
            )
            .await?
            .filter(|t| t.delete_time.is_none())
            .ok_or(RepoError::NotFound("tenant"))?;
        }
        let row = insert_credential(&txn, self, c).await?;
        log.record(
            &txn,
            Changed::Credential(&row),
            ChangeKind::Upsert,
            meta.now,
        )
        .await?;
        self.commit(txn, meta, log.last).await
    }

    async fn get_credential(&self, api_id: &str) -> RepoResult<Option<Credential>> {
        self.read_by_key(credential::Entity::find_by_id(api_id.to_owned()))
            .await?
            .map(|row| self.credential_from_row(row))
            .transpose()
    }

    async fn list_credentials(
        &self,
        filter: &CredentialFilter,
        req: &PageRequest,
    ) -> RepoResult<Page<Credential>> {
        let mut select = credential::Entity::find();
        select = match &filter.tenant_id {
            Some(t) => select.filter(credential::Column::TenantId.eq(t.clone())),
            None => select.filter(credential::Column::TenantId.is_null()),
        };
        if !filter.show_revoked {
            select = select.filter(credential::Column::RevokeTime.is_null());
        }
        let (rows, has_more, total) = page(
            &self.reader,
            select,
            credential::Column::CreateTime,
            credential::Column::ApiId,
            req,
        )
        .await?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| self.credential_from_row(r))
                .collect::<RepoResult<_>>()?,
            has_more,
            total,
        })
    }

    async fn revoke_credential(
        &self,
        api_id: &str,
        meta: &WriteMeta,
    ) -> RepoResult<(Credential, Revision)> {
        let (txn, mut log) = self.begin_write(meta).await?;
        let row = by_key(
            &*txn,
            credential::Entity::find_by_id(api_id.to_owned()).lock_exclusive(),
        )
        .await?
        .ok_or(RepoError::NotFound("credential"))?;
        let updated = if row.revoke_time.is_some() {
            row
        } else {
            let mut am = row.into_active_model();
            am.revoke_time = sea_orm::Set(Some(meta.now));
            am.update_time = sea_orm::Set(meta.now);
            am.etag = sea_orm::Set(new_etag());
            am.update(&*txn).await.map_err(classify)?
        };
        log.record(
            &txn,
            Changed::Credential(&updated),
            ChangeKind::Upsert,
            meta.now,
        )
        .await?;
        let revision = self.commit(txn, meta, log.last).await?;
        Ok((self.credential_from_row(updated)?, revision))
    }

    async fn all_credentials(&self) -> RepoResult<Vec<Credential>> {
        credential::Entity::find()
            .all(&self.reader)
            .await
            .map_err(classify)?
            .into_iter()
            .map(|row| self.credential_from_row(row))
            .collect()
    }

    async fn count_credentials(&self) -> RepoResult<u64> {
        credential::Entity::find()
            .count(&self.reader)
            .await
            .map_err(classify)
    }

    async fn bootstrap_credential(
        &self,
        c: &Credential,
        only_if_empty: bool,
    ) -> RepoResult<Bootstrap> {
        let txn = self.begin().await?;
        if self.backend() == DatabaseBackend::Postgres {
            txn.execute_raw(Statement::from_string(
                self.backend(),
                format!("SELECT pg_advisory_xact_lock({BOOTSTRAP_LOCK})"),
            ))
            .await
            .map_err(classify)?;
        }
        let existing = if only_if_empty {
            if credential::Entity::find()
                .count(&txn)
                .await
                .map_err(classify)?
                > 0
            {
                return Ok(Bootstrap::Unchanged);
            }
            None
        } else {
            credential::Entity::find_by_id(c.api_id.clone())
                .one(&txn)
                .await
                .map_err(classify)?
        };
        let (outcome, row) = match existing {
            None => (Bootstrap::Created, insert_credential(&txn, self, c).await?),
            Some(row) => {
                let stored = self.credential_from_row(row.clone())?;
                if stored.role != Role::PlatformAdmin || stored.tenant_id.is_some() {
                    return Ok(Bootstrap::NotPlatformAdmin);
                }
                if stored.revoke_time.is_some() {
                    return Ok(Bootstrap::Revoked);
                }
                if stored.secret == c.secret {
                    return Ok(Bootstrap::Unchanged);
                }
                let mut am = row.into_active_model();
                am.secret_enc = sea_orm::Set(self.seal(&c.secret, &credential_aad(&c.api_id)));
                am.update_time = sea_orm::Set(c.update_time);
                am.etag = sea_orm::Set(new_etag());
                let replaced = am.update(&txn).await.map_err(classify)?;
                (Bootstrap::SecretReplaced, replaced)
            }
        };
        // Other replicas' credential caches follow the change log.
        let revision = first_revision(&txn).await?;
        let mut log = ChangeLog::new(revision);
        log.record(
            &txn,
            Changed::Credential(&row),
            ChangeKind::Upsert,
            c.update_time,
        )
        .await?;
        txn.commit().await.map_err(classify)?;
        self.publish(revision);
        Ok(outcome)
    }
}

async fn insert_credential(
    txn: &DatabaseTransaction,
    repo: &SeaRepository,
    c: &Credential,
) -> RepoResult<credential::Model> {
    let row = credential::Model {
        api_id: c.api_id.clone(),
        tenant_id: c.tenant_id.clone(),
        role: c.role.as_str().to_owned(),
        description: c.description.clone(),
        secret_enc: repo.seal(&c.secret, &credential_aad(&c.api_id)),
        create_time: c.create_time,
        update_time: c.update_time,
        revoke_time: c.revoke_time,
        etag: c.etag.clone(),
    };
    credential::Entity::insert(row.clone().into_active_model())
        .exec_without_returning(txn)
        .await
        .map_err(unique_as("credential"))?;
    Ok(row)
}
