use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub revision: i64,
    pub tenant_id: Option<String>,
    pub resource_type: String,
    pub resource_key: String,
    pub kind: String,
    pub change_time: i64,
    /// The resource as the change left it (see `change_state`); NULL in
    /// rows written before it was kept.
    pub state: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
