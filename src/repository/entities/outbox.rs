use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub kind: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub endpoint_id: String,
    /// Encrypted: a confirmation body holds its token.
    pub payload_enc: Vec<u8>,
    pub attempts: i32,
    pub next_attempt_time: i64,
    pub done_time: Option<i64>,
    pub last_error: String,
    pub create_time: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
