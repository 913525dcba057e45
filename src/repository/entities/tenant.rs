use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    pub display_name: String,
    pub state: String,
    pub require_verification: bool,
    pub https_only: bool,
    pub default_ttl_seconds: i64,
    pub max_ttl_seconds: i64,
    pub create_time: i64,
    pub update_time: i64,
    pub delete_time: Option<i64>,
    pub etag: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
