//! The closed sets a change-log row is made of: what kind of resource
//! changed and how. They are stored as text (the `changes` table's
//! `resource_type` and `kind`), so each has exactly one spelling, here;
//! readers match on the enums, so a misspelt kind does not compile.

use super::ChangeRecord;

/// What kind of resource a change-log row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Tenant,
    Credential,
    EventType,
    Endpoint,
    Subscription,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Tenant,
        ResourceKind::Credential,
        ResourceKind::EventType,
        ResourceKind::Endpoint,
        ResourceKind::Subscription,
    ];

    /// As stored in `changes.resource_type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Tenant => "tenant",
            ResourceKind::Credential => "credential",
            ResourceKind::EventType => "event_type",
            ResourceKind::Endpoint => "endpoint",
            ResourceKind::Subscription => "subscription",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == stored)
    }
}

/// How a change-log row changed its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Created or updated.
    Upsert,
    /// Deleted.
    Delete,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 2] = [ChangeKind::Upsert, ChangeKind::Delete];

    /// As stored in `changes.kind`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Upsert => "UPSERT",
            ChangeKind::Delete => "DELETE",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == stored)
    }
}

impl ChangeRecord {
    /// The kind of resource changed; `None` for a value this build does not
    /// know (a row written by a newer version).
    pub fn resource(&self) -> Option<ResourceKind> {
        ResourceKind::parse(&self.resource_type)
    }

    /// How it changed; `None` for a value this build does not know.
    pub fn change(&self) -> Option<ChangeKind> {
        ChangeKind::parse(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_kind_parses_back_from_its_stored_text() {
        for kind in ResourceKind::ALL {
            assert_eq!(ResourceKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ResourceKind::parse("Subscription"), None, "case matters");
        assert_eq!(ResourceKind::parse(""), None);
    }

    #[test]
    fn every_change_kind_parses_back_from_its_stored_text() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("upsert"), None, "case matters");
    }

    /// The stored spellings are a contract with every database written so
    /// far: changing one would strand the rows already in the change log.
    #[test]
    fn stored_spellings_do_not_change() {
        let resources: Vec<&str> = ResourceKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            resources,
            [
                "tenant",
                "credential",
                "event_type",
                "endpoint",
                "subscription"
            ]
        );
        assert_eq!(ChangeKind::Upsert.as_str(), "UPSERT");
        assert_eq!(ChangeKind::Delete.as_str(), "DELETE");
    }

    #[test]
    fn a_record_reads_as_its_kinds() {
        let record = ChangeRecord {
            revision: 1,
            tenant_id: None,
            resource_type: "event_type".into(),
            resource_key: "orders.created".into(),
            kind: "DELETE".into(),
            subscription: None,
            endpoint: None,
            credential_live: None,
            tenant: None,
            event_type: None,
        };
        assert_eq!(record.resource(), Some(ResourceKind::EventType));
        assert_eq!(record.change(), Some(ChangeKind::Delete));
        let unknown = ChangeRecord {
            resource_type: "webhook".into(),
            kind: "MERGE".into(),
            ..record
        };
        assert_eq!(unknown.resource(), None);
        assert_eq!(unknown.change(), None);
    }
}
