//! TLS and mutual TLS with certificates made here by rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookplane::proto::{CreateTenantRequest, GetTenantRequest, Tenant};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate and its key, both PEM.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write PEM");
    path
}

/// A TLS channel to `server` that trusts `ca_pem`, optionally presenting a
/// client certificate.
fn tls_channel(server: &TestServer, ca_pem: &str, identity: Option<&(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", server.grpc_addr.port()))
        .expect("URI")
        .tls_config(tls)
        .expect("client TLS config")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect_lazy()
}

fn create(tenant_id: &str) -> CreateTenantRequest {
    CreateTenantRequest {
        tenant: Some(Tenant {
            tenant_id: tenant_id.to_owned(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// Server certificate files for `localhost` and 127.0.0.1, and their CA.
fn server_certs(dir: &Path) -> (Ca, PathBuf, PathBuf) {
    let ca = Ca::new("hookplane test server CA");
    let (cert, key) = ca.issue(
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let cert_path = write(dir, "server.pem", &cert);
    let key_path = write(dir, "server.key", &key);
    (ca, cert_path, key_path)
}

async fn tls_serves_clients_that_trust_its_ca(backend: Backend) {
    install_crypto_provider();
    let certs = tempfile::tempdir().expect("cert dir");
    let (ca, cert, key) = server_certs(certs.path());
    let server = backend
        .start_with(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .await;

    let trusted = tls_channel(&server, &ca.pem, None);
    let created = ok(Clients::on(trusted.clone(), &Cred::admin())
        .tenants()
        .create_tenant(create("acme"))
        .await);
    assert_eq!(created.tenant_id, "acme");
    let health = ok(HealthClient::new(trusted)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await);
    assert_eq!(health.status, ServingStatus::Serving as i32);

    // Plaintext and a client that does not trust the CA get nowhere.
    let plaintext = server
        .admin()
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await;
    assert!(plaintext.is_err(), "plaintext to a TLS port: {plaintext:?}");
    let stranger = Ca::new("someone else's CA");
    let untrusted = Clients::on(tls_channel(&server, &stranger.pem, None), &Cred::admin())
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: "acme".to_owned(),
        })
        .await;
    assert!(untrusted.is_err(), "unknown server CA: {untrusted:?}");
    server.stop().await;
}

async fn mutual_tls_requires_a_certificate_from_the_client_ca(backend: Backend) {
    install_crypto_provider();
    let certs = tempfile::tempdir().expect("cert dir");
    let (ca, cert, key) = server_certs(certs.path());
    let client_ca = Ca::new("hookplane test client CA");
    let client_ca_path = write(certs.path(), "client-ca.pem", &client_ca.pem);
    let server = backend
        .start_with(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            client_ca_path.to_str().unwrap(),
        ])
        .await;

    let good_identity = client_ca.issue(
        &["client.hookplane.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue_ca = Ca::new("rogue client CA");
    let rogue_identity = rogue_ca.issue(
        &["client.hookplane.test"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let without = Clients::on(tls_channel(&server, &ca.pem, None), &Cred::admin())
        .tenants()
        .create_tenant(create("nocert"))
        .await;
    assert!(without.is_err(), "no client certificate: {without:?}");
    let rogue = Clients::on(
        tls_channel(&server, &ca.pem, Some(&rogue_identity)),
        &Cred::admin(),
    )
    .tenants()
    .create_tenant(create("rogue"))
    .await;
    assert!(rogue.is_err(), "certificate from another CA: {rogue:?}");

    let good = Clients::on(
        tls_channel(&server, &ca.pem, Some(&good_identity)),
        &Cred::admin(),
    );
    let created = ok(good.tenants().create_tenant(create("acme")).await);
    assert_eq!(created.tenant_id, "acme");
    // Neither refused call wrote anything.
    for refused in ["nocert", "rogue"] {
        expect_code(
            good.tenants()
                .get_tenant(GetTenantRequest {
                    tenant_id: refused.to_owned(),
                })
                .await,
            tonic::Code::NotFound,
        );
    }
    server.stop().await;
}

backend_tests!(
    tls_serves_clients_that_trust_its_ca,
    mutual_tls_requires_a_certificate_from_the_client_ca,
);
