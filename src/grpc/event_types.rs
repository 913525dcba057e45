use tonic::{Request, Response, Status};

use super::{Api, caller, convert, idempotency, mask_paths, paging, status, touches, written};
use crate::proto::{self, server::event_type_service_server::EventTypeService};
use crate::service::{EventTypeChanges, EventTypeKey, NewEventType};

pub type EventTypeApi = Api;

const MUTABLE: &[&str] = &["description", "schema_json", "legacy_code", "deprecated"];
const IMMUTABLE: &[&str] = &["name", "create_time", "update_time", "etag"];

fn get_key(key: Option<proto::get_event_type_request::Key>) -> Option<EventTypeKey> {
    use proto::get_event_type_request::Key;
    key.map(|k| match k {
        Key::Name(n) => EventTypeKey::Name(n),
        Key::LegacyCode(c) => EventTypeKey::LegacyCode(c),
    })
}

fn validate_key(key: Option<proto::validate_event_payload_request::Key>) -> Option<EventTypeKey> {
    use proto::validate_event_payload_request::Key;
    key.map(|k| match k {
        Key::EventType(n) => EventTypeKey::Name(n),
        Key::LegacyCode(c) => EventTypeKey::LegacyCode(c),
    })
}

#[tonic::async_trait]
impl EventTypeService for Api {
    async fn create_event_type(
        &self,
        request: Request<proto::CreateEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let idem = idempotency(&req.request_id, &req);
        let e = req.event_type.unwrap_or_default();
        let new = NewEventType {
            name: e.name,
            description: e.description,
            schema_json: e.schema_json,
            legacy_code: e.legacy_code,
            deprecated: e.deprecated,
        };
        let w = self
            .write_result(
                &caller,
                self.services.create_event_type(&caller, new, idem).await,
            )
            .await?;
        Ok(written(w, convert::event_type))
    }

    async fn get_event_type(
        &self,
        request: Request<proto::GetEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let caller = caller(&request)?;
        let key = get_key(request.into_inner().key);
        let e = self
            .services
            .get_event_type(&caller, key)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::event_type(e)))
    }

    async fn list_event_types(
        &self,
        request: Request<proto::ListEventTypesRequest>,
    ) -> Result<Response<proto::ListEventTypesResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let paging = paging(req.page_size, &req.page_token, req.skip).map_err(status)?;
        let listed = self
            .services
            .list_event_types(&caller, &paging)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ListEventTypesResponse {
            event_types: listed.items.into_iter().map(convert::event_type).collect(),
            next_page_token: listed.next_page_token,
            total_size: listed.total_size,
        }))
    }

    async fn update_event_type(
        &self,
        request: Request<proto::UpdateEventTypeRequest>,
    ) -> Result<Response<proto::EventType>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let paths = mask_paths(req.update_mask.as_ref(), MUTABLE, IMMUTABLE).map_err(status)?;
        let e = req.event_type.unwrap_or_default();
        let changes = EventTypeChanges {
            etag: e.etag.clone(),
            description: touches(&paths, "description", !e.description.is_empty())
                .then(|| e.description.clone()),
            schema_json: touches(&paths, "schema_json", !e.schema_json.is_empty())
                .then(|| e.schema_json.clone()),
            legacy_code: touches(&paths, "legacy_code", e.legacy_code != 0)
                .then_some(e.legacy_code),
            deprecated: touches(&paths, "deprecated", e.deprecated).then_some(e.deprecated),
        };
        let w = self
            .write_result(
                &caller,
                self.services
                    .update_event_type(&caller, &e.name, changes)
                    .await,
            )
            .await?;
        Ok(written(w, convert::event_type))
    }

    async fn validate_event_payload(
        &self,
        request: Request<proto::ValidateEventPayloadRequest>,
    ) -> Result<Response<proto::ValidateEventPayloadResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let check = self
            .services
            .validate_event_payload(&caller, validate_key(req.key), &req.payload_json)
            .await
            .map_err(status)?;
        Ok(Response::new(proto::ValidateEventPayloadResponse {
            valid: check.violations.is_empty(),
            violations_truncated: check.truncated,
            violations: check
                .violations
                .into_iter()
                .map(|v| proto::validate_event_payload_response::Violation {
                    path: v.path,
                    message: v.message,
                })
                .collect(),
        }))
    }
}
