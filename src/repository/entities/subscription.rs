use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub subscription_id: String,
    pub endpoint_id: String,
    pub name: Option<String>,
    /// JSON array of patterns, in the subscriber's order.
    pub event_types: String,
    pub status: String,
    pub expire_time: Option<i64>,
    pub create_time: i64,
    pub update_time: i64,
    pub etag: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
