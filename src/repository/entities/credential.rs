use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub api_id: String,
    pub tenant_id: Option<String>,
    pub role: String,
    pub description: String,
    pub secret_enc: Vec<u8>,
    pub create_time: i64,
    pub update_time: i64,
    pub revoke_time: Option<i64>,
    pub etag: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
