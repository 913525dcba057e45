//! EventTypeService: the catalog, names, schemas, legacy codes and
//! ValidateEventPayload.

use hookplane::proto::validate_event_payload_request::Key as PayloadKey;
use hookplane::proto::{
    CreateEventTypeRequest, EventType, GetEventTypeRequest, ListEventTypesRequest,
    UpdateEventTypeRequest, ValidateEventPayloadRequest, ValidateEventPayloadResponse,
    get_event_type_request,
};
use tonic::Code;

use crate::harness::*;

const ORDER_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "count"],
  "properties": {
    "id": {"type": "string"},
    "count": {"type": "integer", "minimum": 0}
  }
}"#;

fn create(event_type: EventType) -> CreateEventTypeRequest {
    CreateEventTypeRequest {
        event_type: Some(event_type),
        request_id: String::new(),
    }
}

fn by_name(name: &str) -> GetEventTypeRequest {
    GetEventTypeRequest {
        key: Some(get_event_type_request::Key::Name(name.to_owned())),
    }
}

fn by_code(code: i32) -> GetEventTypeRequest {
    GetEventTypeRequest {
        key: Some(get_event_type_request::Key::LegacyCode(code)),
    }
}

fn validate(key: PayloadKey, payload: &str) -> ValidateEventPayloadRequest {
    ValidateEventPayloadRequest {
        key: Some(key),
        payload_json: payload.to_owned(),
    }
}

fn paths(response: &ValidateEventPayloadResponse) -> Vec<&str> {
    response
        .violations
        .iter()
        .map(|v| v.path.as_str())
        .collect()
}

async fn create_get_list_event_types(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut types = admin.event_types();
    let response = types
        .create_event_type(create(EventType {
            name: "order.created".to_owned(),
            description: "An order was placed".to_owned(),
            schema_json: ORDER_SCHEMA.to_owned(),
            legacy_code: 17,
            ..Default::default()
        }))
        .await
        .expect("create event type");
    assert!(revision(response.metadata()) > 0);
    let created = response.into_inner();
    assert_eq!(created.name, "order.created");
    assert_eq!(created.description, "An order was placed");
    assert_eq!(created.legacy_code, 17);
    assert!(!created.deprecated);
    assert!(!created.schema_json.is_empty());
    assert!(!created.etag.is_empty() && created.create_time.is_some());

    assert_eq!(
        ok(types.get_event_type(by_name("order.created")).await),
        created
    );
    assert_eq!(ok(types.get_event_type(by_code(17)).await), created);

    create_catalog(&admin).await;
    let listed = ok(types
        .list_event_types(ListEventTypesRequest::default())
        .await);
    let names: Vec<_> = listed.event_types.iter().map(|t| t.name.as_str()).collect();
    let mut expected = vec!["order.created"];
    expected.extend(CATALOG.iter().map(|(name, _, _)| *name));
    assert_eq!(names, expected, "creation order");
    assert_eq!(listed.total_size, expected.len() as i32);

    // Paging and skip.
    let first = ok(types
        .list_event_types(ListEventTypesRequest {
            page_size: 4,
            ..Default::default()
        })
        .await);
    assert_eq!(first.event_types.len(), 4);
    let second = ok(types
        .list_event_types(ListEventTypesRequest {
            page_size: 4,
            page_token: first.next_page_token.clone(),
            skip: 0,
        })
        .await);
    let paged: Vec<_> = first
        .event_types
        .iter()
        .chain(&second.event_types)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(paged, expected);
    assert!(second.next_page_token.is_empty());
    let skipped = ok(types
        .list_event_types(ListEventTypesRequest {
            page_size: 10,
            page_token: String::new(),
            skip: 5,
        })
        .await);
    let names: Vec<_> = skipped
        .event_types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, &expected[5..]);
    expect_invalid(
        types
            .list_event_types(ListEventTypesRequest {
                page_size: -10,
                ..Default::default()
            })
            .await,
        "page_size",
    );
    expect_invalid(
        types
            .list_event_types(ListEventTypesRequest {
                page_size: 4,
                page_token: tamper(&first.next_page_token),
                skip: 0,
            })
            .await,
        "page_token",
    );
    server.stop().await;
}

async fn event_type_name_rules(backend: Backend) {
    let server = backend.start().await;
    let mut types = server.admin().event_types();
    let too_long = "a".repeat(129);
    for bad in [
        "",
        "ab",
        "a..b",
        ".abc",
        "abc.",
        "a b.c",
        "agent*",
        "command.*",
        "com/x",
        "ümlaut",
        &too_long,
    ] {
        expect_invalid(
            types.create_event_type(create(event_type(bad))).await,
            "event_type.name",
        );
    }
    let longest = format!("{}.{}", "a".repeat(64), "b".repeat(63));
    for good in [
        "command.completed",
        "agent.presencechanged.v1",
        "WorkflowStateChange",
        "alarm-raised",
        "abc",
        "snake_case.x",
        longest.as_str(),
    ] {
        let created = ok(types.create_event_type(create(event_type(good))).await);
        assert_eq!(created.name, good);
    }
    // Case-sensitive: a different name.
    ok(types
        .create_event_type(create(event_type("Command.Completed")))
        .await);
    expect_code(
        types
            .create_event_type(create(event_type("command.completed")))
            .await,
        Code::AlreadyExists,
    );
    expect_code(
        types.get_event_type(by_name("COMMAND.COMPLETED")).await,
        Code::NotFound,
    );
    server.stop().await;
}

async fn schema_json_must_be_a_valid_schema(backend: Backend) {
    let server = backend.start().await;
    let mut types = server.admin().event_types();
    for bad in [
        "{not json",
        "{\"type\": 12}",
        "{\"type\": \"no-such-type\"}",
        "\"just a string\"",
    ] {
        expect_invalid(
            types
                .create_event_type(create(EventType {
                    schema_json: bad.to_owned(),
                    ..event_type("order.created")
                }))
                .await,
            "event_type.schema_json",
        );
    }
    expect_code(
        types.get_event_type(by_name("order.created")).await,
        Code::NotFound,
    );
    let created = ok(types
        .create_event_type(create(EventType {
            schema_json: ORDER_SCHEMA.to_owned(),
            ..event_type("order.created")
        }))
        .await);
    let stored: serde_json::Value = serde_json::from_str(&created.schema_json).expect("json");
    let sent: serde_json::Value = serde_json::from_str(ORDER_SCHEMA).expect("json");
    assert_eq!(stored, sent, "the schema is kept");
    server.stop().await;
}

async fn legacy_code_rules(backend: Backend) {
    let server = backend.start().await;
    let mut types = server.admin().event_types();
    expect_invalid(
        types
            .create_event_type(create(EventType {
                legacy_code: -5,
                ..event_type("order.created")
            }))
            .await,
        "event_type.legacy_code",
    );
    ok(types
        .create_event_type(create(EventType {
            legacy_code: 7,
            ..event_type("order.created")
        }))
        .await);
    expect_code(
        types
            .create_event_type(create(EventType {
                legacy_code: 7,
                ..event_type("order.updated")
            }))
            .await,
        Code::AlreadyExists,
    );
    // Zero means "no code", so any number of types may have it.
    ok(types
        .create_event_type(create(event_type("order.updated")))
        .await);
    ok(types
        .create_event_type(create(event_type("order.deleted")))
        .await);

    assert_eq!(
        ok(types.get_event_type(by_code(7)).await).name,
        "order.created"
    );
    expect_code(types.get_event_type(by_code(8)).await, Code::NotFound);
    expect_invalid(types.get_event_type(by_code(-1)).await, "legacy_code");
    expect_invalid(types.get_event_type(by_code(0)).await, "legacy_code");
    expect_invalid(types.get_event_type(by_name("a b")).await, "name");
    expect_code(
        types
            .get_event_type(GetEventTypeRequest { key: None })
            .await,
        Code::InvalidArgument,
    );
    server.stop().await;
}

async fn update_event_type(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut types = admin.event_types();
    let created = ok(types
        .create_event_type(create(EventType {
            legacy_code: 1,
            ..event_type("order.created")
        }))
        .await);
    ok(types
        .create_event_type(create(EventType {
            legacy_code: 2,
            ..event_type("order.updated")
        }))
        .await);

    let updated = ok(types
        .update_event_type(UpdateEventTypeRequest {
            event_type: Some(EventType {
                description: "new words".to_owned(),
                deprecated: true,
                legacy_code: 99,
                etag: created.etag.clone(),
                ..event_type("order.created")
            }),
            update_mask: mask(&["description", "deprecated"]),
        })
        .await);
    assert_eq!(updated.description, "new words");
    assert!(updated.deprecated);
    assert_eq!(updated.legacy_code, 1, "unmasked field kept");
    assert_ne!(updated.etag, created.etag);

    expect_code(
        types
            .update_event_type(UpdateEventTypeRequest {
                event_type: Some(EventType {
                    description: "stale".to_owned(),
                    etag: created.etag.clone(),
                    ..event_type("order.created")
                }),
                update_mask: mask(&["description"]),
            })
            .await,
        Code::Aborted,
    );
    expect_code(
        types
            .update_event_type(UpdateEventTypeRequest {
                event_type: Some(EventType {
                    legacy_code: 2,
                    ..event_type("order.created")
                }),
                update_mask: mask(&["legacy_code"]),
            })
            .await,
        Code::AlreadyExists,
    );
    expect_invalid(
        types
            .update_event_type(UpdateEventTypeRequest {
                event_type: Some(EventType {
                    schema_json: "{\"type\": 12}".to_owned(),
                    ..event_type("order.created")
                }),
                update_mask: mask(&["schema_json"]),
            })
            .await,
        "event_type.schema_json",
    );
    for path in ["create_time", "bogus"] {
        expect_invalid(
            types
                .update_event_type(UpdateEventTypeRequest {
                    event_type: Some(event_type("order.created")),
                    update_mask: mask(&[path]),
                })
                .await,
            "update_mask",
        );
    }
    expect_code(
        types
            .update_event_type(UpdateEventTypeRequest {
                event_type: Some(event_type("order.missing")),
                update_mask: mask(&["description"]),
            })
            .await,
        Code::NotFound,
    );
    let got = ok(types.get_event_type(by_name("order.created")).await);
    assert_eq!(got, updated, "refused updates changed nothing");
    server.stop().await;
}

async fn validate_event_payload(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    let mut types = admin.event_types();
    ok(types
        .create_event_type(create(EventType {
            schema_json: ORDER_SCHEMA.to_owned(),
            legacy_code: 5,
            ..event_type("order.created")
        }))
        .await);
    ok(types
        .create_event_type(create(event_type("free.form")))
        .await);
    let name = || PayloadKey::EventType("order.created".to_owned());

    let good = ok(types
        .validate_event_payload(validate(name(), r#"{"id": "o-1", "count": 3}"#))
        .await);
    assert!(good.valid);
    assert!(good.violations.is_empty());

    let bad = ok(types
        .validate_event_payload(validate(name(), r#"{"id": 5, "count": -1}"#))
        .await);
    assert!(!bad.valid);
    let mut got = paths(&bad);
    got.sort();
    assert_eq!(got, ["/count", "/id"], "{bad:?}");
    assert!(bad.violations.iter().all(|v| !v.message.is_empty()));

    let missing = ok(types
        .validate_event_payload(validate(PayloadKey::LegacyCode(5), r#"{"id": "o-1"}"#))
        .await);
    assert!(!missing.valid);
    assert!(!missing.violations.is_empty());

    for garbage in ["{oops", "{\"id\": \"o-1\", }", "[1, 2"] {
        let unparsable = ok(types
            .validate_event_payload(validate(name(), garbage))
            .await);
        assert!(!unparsable.valid, "{garbage:?}");
        assert_eq!(paths(&unparsable), [""], "{garbage:?}");
    }

    // No schema: any JSON object is valid, broken JSON still is not.
    let free = || PayloadKey::EventType("free.form".to_owned());
    let any = ok(types
        .validate_event_payload(validate(free(), r#"{"whatever": [1, 2, {"x": null}]}"#))
        .await);
    assert!(any.valid && any.violations.is_empty());
    let broken = ok(types.validate_event_payload(validate(free(), "{")).await);
    assert!(!broken.valid);
    assert_eq!(paths(&broken), [""]);

    expect_code(
        types
            .validate_event_payload(validate(
                PayloadKey::EventType("no.such.type".to_owned()),
                "{}",
            ))
            .await,
        Code::NotFound,
    );
    expect_code(
        types
            .validate_event_payload(validate(PayloadKey::LegacyCode(404), "{}"))
            .await,
        Code::NotFound,
    );
    expect_code(
        types
            .validate_event_payload(ValidateEventPayloadRequest {
                key: None,
                payload_json: "{}".to_owned(),
            })
            .await,
        Code::InvalidArgument,
    );
    server.stop().await;
}

async fn catalog_writes_need_a_platform_credential(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    create_catalog(&admin).await;
    let tenant_admin = create_credential(
        &admin,
        "acme",
        hookplane::proto::credential::Role::TenantAdmin,
    )
    .await;
    let mut types = server.clients(&tenant_admin).event_types();
    expect_code(
        types
            .create_event_type(create(event_type("order.created")))
            .await,
        Code::PermissionDenied,
    );
    let listed = ok(types
        .list_event_types(ListEventTypesRequest::default())
        .await);
    assert_eq!(
        listed.event_types.len(),
        CATALOG.len(),
        "catalog reads are open"
    );
    assert_eq!(
        ok(types.get_event_type(by_code(1002)).await).name,
        "command.completed"
    );
    server.stop().await;
}

async fn payload_violations_are_bounded(backend: Backend) {
    let server = backend.start().await;
    let mut types = server.admin().event_types();
    let list_of = |items: &str| EventType {
        schema_json: format!(r#"{{"type": "array", "items": {{"type": "{items}"}}}}"#),
        ..event_type("list.of")
    };
    let created = ok(types.create_event_type(create(list_of("string"))).await);
    let name = || PayloadKey::EventType("list.of".to_owned());

    // Just under the 1 MiB message limit: some 500,000 violations.
    let payload = format!("[{}1]", "1,".repeat((1024 * 1024 - 1024) / 2));
    let started = std::time::Instant::now();
    let answer = ok(types
        .validate_event_payload(validate(name(), &payload))
        .await);
    let elapsed = started.elapsed();
    assert!(!answer.valid);
    assert_eq!(answer.violations.len(), 100);
    assert!(answer.violations_truncated);
    assert_eq!(answer.violations[0].path, "/0");
    println!("1 MiB payload with ~500,000 violations answered in {elapsed:?}");

    let few = ok(types
        .validate_event_payload(validate(name(), "[1, 2]"))
        .await);
    assert_eq!(paths(&few), ["/0", "/1"]);
    assert!(!few.violations_truncated);

    // A changed type is checked against its new schema.
    ok(types
        .update_event_type(UpdateEventTypeRequest {
            event_type: Some(EventType {
                etag: created.etag,
                ..list_of("number")
            }),
            update_mask: mask(&["schema_json"]),
        })
        .await);
    let now_valid = ok(types
        .validate_event_payload(validate(name(), "[1, 2]"))
        .await);
    assert!(now_valid.valid, "{now_valid:?}");
    server.stop().await;
}

backend_tests!(
    payload_violations_are_bounded,
    create_get_list_event_types,
    event_type_name_rules,
    schema_json_must_be_a_valid_schema,
    legacy_code_rules,
    update_event_type,
    validate_event_payload,
    catalog_writes_need_a_platform_credential,
);
