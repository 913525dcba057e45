use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "request_nonces")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub api_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub nonce: String,
    pub expire_time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
