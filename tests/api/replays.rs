//! Replay before idempotency: a write whose signed headers were accepted
//! once is UNAUTHENTICATED when they come again, after a restart too (when
//! only the database remembers the nonce), even when its request_id has a
//! stored response. An idempotent retry is a new call, signed afresh.

use std::future::Future;
use std::pin::Pin;

use hookplane::proto::credential::Role;
use hookplane::proto::credential_service_client::CredentialServiceClient;
use hookplane::proto::endpoint_service_client::EndpointServiceClient;
use hookplane::proto::event_type_service_client::EventTypeServiceClient;
use hookplane::proto::subscription_service_client::SubscriptionServiceClient;
use hookplane::proto::tenant_service_client::TenantServiceClient;
use hookplane::proto::{
    ConfirmSubscriptionRequest, CreateCredentialRequest, CreateEndpointRequest,
    CreateEventTypeRequest, CreateSubscriptionRequest, CreateTenantRequest, Credential,
    DeleteEndpointRequest, DeleteSubscriptionRequest, DeleteTenantRequest, EventType,
    PingEndpointRequest, RenewSubscriptionRequest, ResendConfirmationRequest,
    RevokeCredentialRequest, RotateEndpointSecretRequest, Subscription, Tenant,
    UpdateEndpointRequest, UpdateEventTypeRequest, UpdateSubscriptionRequest, UpdateTenantRequest,
};
use sea_orm::ConnectionTrait as _;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::*;
use crate::lifecycle::{receiving_fixture, verifying};

type Reply = Pin<Box<dyn Future<Output = Result<String, Status>> + Send>>;

/// One signed call, sent again with the same headers and body each time it
/// is run; it answers the response's Debug text.
struct Signed {
    name: &'static str,
    send: Box<dyn Fn(Channel) -> Reply + Send + Sync>,
}

impl Signed {
    async fn run(&self, channel: Channel) -> Result<String, Status> {
        (self.send)(channel).await
    }
}

/// A call to `$client::$method` at `$path` with `$message`, signed once by
/// the admin with a fixed timestamp and nonce.
macro_rules! signed {
    ($client:ident, $method:ident, $path:literal, $message:expr) => {{
        let message = $message;
        let (timestamp, nonce) = (unix_now(), fresh_nonce());
        Signed {
            name: stringify!($method),
            send: Box::new(move |channel: Channel| {
                let request =
                    signed_request(message.clone(), &Cred::admin(), $path, timestamp, &nonce);
                Box::pin(async move {
                    $client::new(channel)
                        .$method(request)
                        .await
                        .map(|r| format!("{:?}", r.into_inner()))
                })
            }),
        }
    }};
}

/// The status of a refused call; its message and details must not hold
/// `secret`.
#[track_caller]
fn refused_without(result: Result<String, Status>, secret: &str) -> Status {
    let status = expect_code(result, Code::Unauthenticated);
    assert!(
        !format!("{status:?}").contains(secret),
        "the refusal reveals the secret: {status:?}"
    );
    status
}

/// CreateCredential and CreateEndpoint with a request_id: replaying the
/// signed call (the first one, or a retry that got the stored response) is
/// refused before and after a restart, and never shows the stored secret;
/// a retry signed afresh still gets it.
async fn a_replayed_create_never_reveals_the_stored_secret(backend: Backend) {
    let (server, _) = fixture(&backend).await;
    let credential = || CreateCredentialRequest {
        credential: Some(Credential {
            tenant_id: TENANT.to_owned(),
            role: Role::Reader as i32,
            ..Default::default()
        }),
        request_id: "replayed-credential".to_owned(),
    };
    let endpoint = || CreateEndpointRequest {
        endpoint: Some(endpoint(TENANT, "replayed", URL)),
        request_id: "replayed-endpoint".to_owned(),
    };
    let create_credential = signed!(
        CredentialServiceClient,
        create_credential,
        "/hookplane.v1.CredentialService/CreateCredential",
        credential()
    );
    let retry_credential = signed!(
        CredentialServiceClient,
        create_credential,
        "/hookplane.v1.CredentialService/CreateCredential",
        credential()
    );
    let create_endpoint = signed!(
        EndpointServiceClient,
        create_endpoint,
        "/hookplane.v1.EndpointService/CreateEndpoint",
        endpoint()
    );

    let created = create_credential
        .run(server.channel())
        .await
        .expect("create the credential");
    let retried = retry_credential
        .run(server.channel())
        .await
        .expect("a retry signed afresh");
    assert_eq!(retried, created, "the retry gets the stored response");
    let secret = ok(server
        .admin()
        .credentials()
        .create_credential(credential())
        .await)
    .secret;
    assert!(secret.starts_with("hpsk_"), "{secret}");
    let endpoint_secret = {
        let answer = create_endpoint
            .run(server.channel())
            .await
            .expect("create the endpoint");
        let start = answer.find("whsec_").expect("the create shows the secret");
        answer[start..]
            .split('"')
            .next()
            .expect("a quoted secret")
            .to_owned()
    };
    refused_without(create_credential.run(server.channel()).await, &secret);
    refused_without(retry_credential.run(server.channel()).await, &secret);

    let server = server.restart().await;
    for call in [&create_credential, &retry_credential] {
        let status = refused_without(call.run(server.channel()).await, &secret);
        assert!(status.message().contains("nonce"), "{}", status.message());
    }
    refused_without(
        create_endpoint.run(server.channel()).await,
        &endpoint_secret,
    );

    // Signed afresh, the retry still gets the first answer.
    let admin = server.admin();
    assert_eq!(
        ok(admin.credentials().create_credential(credential()).await).secret,
        secret
    );
    assert_eq!(
        ok(admin.endpoints().create_endpoint(endpoint()).await).secret,
        endpoint_secret
    );
    server.stop().await;
}

/// Rows in the change log: any write adds some.
async fn changes(backend: &Backend) -> i64 {
    let db = backend.database().await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM changes",
        ))
        .await
        .expect("count the change log")
        .expect("a count");
    let n = row.try_get::<i64>("", "n").expect("a number");
    let _ = db.close().await;
    n
}

/// Every RPC that changes something (and PingEndpoint, which sends), signed
/// once and accepted, is refused when its headers and body come again after
/// a restart, and the replays change nothing.
async fn every_write_replayed_after_a_restart_is_refused(backend: Backend) {
    let (server, admin, receiver, _) = receiving_fixture(&backend, verifying(), &[]).await;
    let mut calls: Vec<Signed> = Vec::new();
    let channel = server.channel();
    macro_rules! accept {
        ($call:expr) => {{
            let call = $call;
            let answer = call.run(channel.clone()).await.unwrap_or_else(|s| {
                panic!("{} refused: {:?} {}", call.name, s.code(), s.message())
            });
            calls.push(call);
            answer
        }};
    }

    accept!(signed!(
        TenantServiceClient,
        create_tenant,
        "/hookplane.v1.TenantService/CreateTenant",
        CreateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: "replayed".to_owned(),
                ..Default::default()
            }),
            request_id: String::new(),
        }
    ));
    accept!(signed!(
        TenantServiceClient,
        update_tenant,
        "/hookplane.v1.TenantService/UpdateTenant",
        UpdateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: "replayed".to_owned(),
                display_name: "Replayed".to_owned(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        }
    ));
    let reader = create_credential(&admin, TENANT, Role::Reader).await;
    accept!(signed!(
        CredentialServiceClient,
        create_credential,
        "/hookplane.v1.CredentialService/CreateCredential",
        CreateCredentialRequest {
            credential: Some(Credential {
                tenant_id: TENANT.to_owned(),
                role: Role::Reader as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        }
    ));
    accept!(signed!(
        CredentialServiceClient,
        revoke_credential,
        "/hookplane.v1.CredentialService/RevokeCredential",
        RevokeCredentialRequest {
            api_id: reader.api_id.clone(),
        }
    ));
    accept!(signed!(
        EventTypeServiceClient,
        create_event_type,
        "/hookplane.v1.EventTypeService/CreateEventType",
        CreateEventTypeRequest {
            event_type: Some(event_type("replayed.type")),
            request_id: String::new(),
        }
    ));
    accept!(signed!(
        EventTypeServiceClient,
        update_event_type,
        "/hookplane.v1.EventTypeService/UpdateEventType",
        UpdateEventTypeRequest {
            event_type: Some(EventType {
                description: "changed".to_owned(),
                ..event_type("replayed.type")
            }),
            update_mask: mask(&["description"]),
        }
    ));
    accept!(signed!(
        EndpointServiceClient,
        create_endpoint,
        "/hookplane.v1.EndpointService/CreateEndpoint",
        CreateEndpointRequest {
            endpoint: Some(endpoint(TENANT, "replayed", &receiver.url("/replayed"))),
            request_id: String::new(),
        }
    ));
    accept!(signed!(
        EndpointServiceClient,
        update_endpoint,
        "/hookplane.v1.EndpointService/UpdateEndpoint",
        UpdateEndpointRequest {
            endpoint: Some(hookplane::proto::Endpoint {
                description: "changed".to_owned(),
                ..endpoint(TENANT, "replayed", "")
            }),
            update_mask: mask(&["description"]),
            allow_missing: false,
        }
    ));
    accept!(signed!(
        EndpointServiceClient,
        rotate_endpoint_secret,
        "/hookplane.v1.EndpointService/RotateEndpointSecret",
        RotateEndpointSecretRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "replayed".to_owned(),
            ..Default::default()
        }
    ));
    accept!(signed!(
        EndpointServiceClient,
        ping_endpoint,
        "/hookplane.v1.EndpointService/PingEndpoint",
        PingEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
        }
    ));
    accept!(signed!(
        SubscriptionServiceClient,
        create_subscription,
        "/hookplane.v1.SubscriptionService/CreateSubscription",
        CreateSubscriptionRequest {
            subscription: Some(Subscription {
                subscription_id: "replayed".to_owned(),
                ..subscription(TENANT, ENDPOINT, &["command.completed"])
            }),
            request_id: String::new(),
            ttl_seconds: 0,
        }
    ));
    receiver.confirmation("replayed", 1).await;
    accept!(signed!(
        SubscriptionServiceClient,
        resend_confirmation,
        "/hookplane.v1.SubscriptionService/ResendConfirmation",
        ResendConfirmationRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: "replayed".to_owned(),
        }
    ));
    let token = receiver.confirmation("replayed", 2).await.token;
    accept!(signed!(
        SubscriptionServiceClient,
        confirm_subscription,
        "/hookplane.v1.SubscriptionService/ConfirmSubscription",
        ConfirmSubscriptionRequest { token }
    ));
    accept!(signed!(
        SubscriptionServiceClient,
        update_subscription,
        "/hookplane.v1.SubscriptionService/UpdateSubscription",
        UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                tenant_id: TENANT.to_owned(),
                subscription_id: "replayed".to_owned(),
                name: "replayed".to_owned(),
                ..Default::default()
            }),
            update_mask: mask(&["name"]),
            allow_missing: false,
        }
    ));
    accept!(signed!(
        SubscriptionServiceClient,
        renew_subscription,
        "/hookplane.v1.SubscriptionService/RenewSubscription",
        RenewSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: "replayed".to_owned(),
            ttl_seconds: 3600,
        }
    ));
    accept!(signed!(
        SubscriptionServiceClient,
        delete_subscription,
        "/hookplane.v1.SubscriptionService/DeleteSubscription",
        DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: "replayed".to_owned(),
            etag: String::new(),
        }
    ));
    accept!(signed!(
        EndpointServiceClient,
        delete_endpoint,
        "/hookplane.v1.EndpointService/DeleteEndpoint",
        DeleteEndpointRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "replayed".to_owned(),
            etag: String::new(),
            force: false,
        }
    ));
    accept!(signed!(
        TenantServiceClient,
        delete_tenant,
        "/hookplane.v1.TenantService/DeleteTenant",
        DeleteTenantRequest {
            tenant_id: "replayed".to_owned(),
            etag: String::new(),
            force: false,
        }
    ));
    assert_eq!(calls.len(), 18, "every write RPC, and the ping");

    let server = server.restart().await;
    let before = (changes(&backend).await, receiver.deliveries().len());
    for call in &calls {
        match call.run(server.channel()).await {
            Err(status) if status.code() == Code::Unauthenticated => {}
            other => panic!("{} replayed after a restart: {other:?}", call.name),
        }
    }
    assert_eq!(
        (changes(&backend).await, receiver.deliveries().len()),
        before,
        "the replays wrote and sent nothing"
    );
    server.stop().await;
}

backend_tests!(
    a_replayed_create_never_reveals_the_stored_secret,
    every_write_replayed_after_a_restart_is_refused,
);
