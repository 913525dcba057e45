//! Input a fuzzer sends: bodies that are not the method's message, NUL
//! characters, very long strings and request ids. Each gets a clear
//! INVALID_ARGUMENT (or is ignored), the same on both databases, and the
//! connection keeps serving.

use hookplane::proto::{
    CreateEventTypeRequest, CreateTenantRequest, Endpoint, EventType, GetTenantRequest,
    ListSubscriptionsRequest, RevokeCredentialRequest, Tenant, UpdateEndpointRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Code, GrpcMethod, Request, Status};

use crate::harness::*;

/// Field 1 as a number, where CreateTenantRequest has a message.
#[derive(Clone, PartialEq, prost::Message)]
struct NotATenantRequest {
    #[prost(uint64, tag = "1")]
    tenant: u64,
}

/// Sends `message` to CreateTenant, signed, whatever its type.
async fn create_tenant_raw<M: prost::Message + Send + Sync + 'static>(
    server: &TestServer,
    message: M,
) -> Result<Tenant, Status> {
    let channel = InterceptedService::new(server.channel(), Signer::new(&Cred::admin()));
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(message);
    request.extensions_mut().insert(GrpcMethod::new(
        "hookplane.v1.TenantService",
        "CreateTenant",
    ));
    let path = http::uri::PathAndQuery::from_static("/hookplane.v1.TenantService/CreateTenant");
    grpc.unary(
        request,
        path,
        tonic_prost::ProstCodec::<M, Tenant>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn an_undecodable_body_is_invalid_argument(backend: Backend) {
    let server = backend.start().await;
    let status = expect_code(
        create_tenant_raw(&server, NotATenantRequest { tenant: 7 }).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("failed to decode"),
        "{}",
        status.message()
    );
    // The same call with the right message works on the same connection.
    let tenant = ok_value(
        create_tenant_raw(
            &server,
            CreateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: "acme".to_owned(),
                    display_name: "Acme".to_owned(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
        .await,
    );
    assert_eq!(tenant.tenant_id, "acme");
    server.stop().await;
}

#[track_caller]
fn ok_value<T>(result: Result<T, Status>) -> T {
    result.unwrap_or_else(|s| panic!("expected OK, got {:?}: {}", s.code(), s.message()))
}

async fn a_nul_character_is_invalid_argument_naming_the_field(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    expect_invalid(
        admin
            .tenants()
            .create_tenant(CreateTenantRequest {
                tenant: Some(Tenant {
                    tenant_id: "nul".to_owned(),
                    display_name: "N\0L".to_owned(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await,
        "tenant.display_name",
    );
    expect_invalid(
        admin
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: "ac\0me".to_owned(),
            })
            .await,
        "tenant_id",
    );
    // The api id goes into the database's lookup as it is: PostgreSQL
    // cannot take a NUL there.
    expect_invalid(
        admin
            .credentials()
            .revoke_credential(RevokeCredentialRequest {
                api_id: "hp_\0".to_owned(),
            })
            .await,
        "api_id",
    );
    expect_invalid(
        admin
            .endpoints()
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(Endpoint {
                    etag: "\0".to_owned(),
                    description: "d".to_owned(),
                    ..endpoint(TENANT, ENDPOINT, URL)
                }),
                update_mask: mask(&["description"]),
                allow_missing: false,
            })
            .await,
        "endpoint.etag",
    );
    expect_invalid(
        admin
            .subscriptions()
            .list_subscriptions(ListSubscriptionsRequest {
                tenant_id: TENANT.to_owned(),
                endpoint_id: "ep\0".to_owned(),
                ..Default::default()
            })
            .await,
        "endpoint_id",
    );
    expect_code(
        admin
            .tenants()
            .get_tenant(GetTenantRequest {
                tenant_id: "nul".to_owned(),
            })
            .await,
        Code::NotFound,
    );
    server.stop().await;
}

/// What a status costs in trailers: message plus encoded details.
fn trailer_bytes(status: &Status) -> usize {
    status.message().len() + status.details().len()
}

async fn long_input_is_echoed_at_most_200_characters(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let long_path = "p".repeat(5000);
    let status = expect_invalid(
        admin
            .endpoints()
            .update_endpoint(UpdateEndpointRequest {
                endpoint: Some(endpoint(TENANT, ENDPOINT, URL)),
                update_mask: mask(&[&long_path]),
                allow_missing: false,
            })
            .await,
        "update_mask",
    );
    assert!(status.message().contains(&"p".repeat(200)));
    assert!(!status.message().contains(&"p".repeat(201)));
    assert!(
        trailer_bytes(&status) < 1024,
        "{} bytes",
        trailer_bytes(&status)
    );

    // A schema error quotes the schema's offending value.
    let schema = format!(r#"{{"type": "{}"}}"#, "q".repeat(5000));
    let status = expect_invalid(
        admin
            .event_types()
            .create_event_type(CreateEventTypeRequest {
                event_type: Some(EventType {
                    schema_json: schema,
                    ..event_type("long.schema")
                }),
                request_id: String::new(),
            })
            .await,
        "event_type.schema_json",
    );
    assert!(!status.message().contains(&"q".repeat(201)));
    assert!(
        trailer_bytes(&status) < 1024,
        "{} bytes",
        trailer_bytes(&status)
    );
    server.stop().await;
}

/// The x-request-id a GetTenant answer carries when the call sent `id`.
async fn answered_request_id(admin: &Clients, id: &[u8]) -> Result<String, Status> {
    let mut request = Request::new(GetTenantRequest {
        tenant_id: TENANT.to_owned(),
    });
    request.metadata_mut().insert(
        "x-request-id",
        tonic::metadata::MetadataValue::try_from(id).expect("a header value"),
    );
    let response = admin.tenants().get_tenant(request).await?;
    Ok(response
        .metadata()
        .get("x-request-id")
        .expect("x-request-id in the answer")
        .to_str()
        .expect("ascii")
        .to_owned())
}

async fn long_or_unprintable_request_ids_are_replaced(backend: Backend) {
    let (server, admin) = fixture(&backend).await;
    let longest = "r".repeat(128);
    assert_eq!(
        ok_value(answered_request_id(&admin, longest.as_bytes()).await),
        longest
    );
    for id in [
        "r".repeat(129).into_bytes(),
        "x".repeat(10_000).into_bytes(),
        b"caf\xc3\xa9".to_vec(),
        b"tab\tinside".to_vec(),
    ] {
        let answered = ok_value(answered_request_id(&admin, &id).await);
        assert!(
            uuid::Uuid::parse_str(&answered).is_ok(),
            "a {}-byte id answered as {answered:?}",
            id.len()
        );
    }
    // Headers beyond HTTP/2's header-list limit (16 KiB) never reach the
    // service: the transport refuses them, closing that connection. The
    // server goes on serving others.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
        .expect("endpoint URI")
        .connect_lazy();
    let other = Clients::on(channel, &Cred::admin());
    answered_request_id(&other, "y".repeat(100_000).as_bytes())
        .await
        .expect_err("a header list over 16 KiB is refused");
    ok_value(answered_request_id(&admin, b"after-the-big-one").await);
    server.stop().await;
}

backend_tests!(
    an_undecodable_body_is_invalid_argument,
    a_nul_character_is_invalid_argument_naming_the_field,
    long_input_is_echoed_at_most_200_characters,
    long_or_unprintable_request_ids_are_replaced,
);
