//! The ACME account: created at the CA on first use, stored (encrypted) in the store, and
//! restored from there on every later start, so a broker never piles up accounts at the CA.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{Account, AccountCredentials, BodyWrapper, HttpClient, NewAccount};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::{info, warn};
use warren_store::Store;

use crate::{AcmeError, AcmeSettings};

/// Who the store records as having created the account.
const ACTOR: &str = "acme";

/// An HTTPS client for the CA: system roots plus `root_ca_pem`, ring, a connect timeout (a CA
/// that does not answer must fail the attempt, not hang it).
pub(crate) fn http_client(settings: &AcmeSettings) -> Result<Box<dyn HttpClient>, AcmeError> {
    let mut extra = Vec::new();
    if let Some(pem) = &settings.root_ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            extra.push(cert.map_err(|e| AcmeError::BadSettings(format!("root CA PEM: {e}")))?);
        }
        if extra.is_empty() {
            return Err(AcmeError::BadSettings(
                "root CA PEM holds no certificate".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| AcmeError::BadSettings(format!("trust roots: {e}")))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Internal(e.to_string()))?
        .dangerous() // Not dangerous: this is the platform verifier, just with extra roots.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client: HyperClient<_, BodyWrapper<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

/// The account for `settings.directory_url`: restored from the store, or created at the CA and
/// stored.
pub(crate) async fn load_or_create(
    settings: &AcmeSettings,
    store: &dyn Store,
) -> Result<Account, AcmeError> {
    let dir = &settings.directory_url;
    let stored = store.acme_account(dir).await?.map(|row| {
        let json = settings.key.open(dir, &row.credentials)?;
        serde_json::from_slice::<AccountCredentials>(&json)
            .map_err(|e| AcmeError::Cipher(format!("stored ACME account is unreadable: {e}")))
    });
    if let Some(Err(e)) = &stored {
        // The key file was replaced: the old account is out of reach, start a new one.
        warn!(directory = %dir, error = %e, "stored ACME account unusable; creating a new one");
    }
    if let Some(Ok(credentials)) = stored {
        let account = Account::builder_with_http(http_client(settings)?)
            .from_credentials(credentials)
            .await?;
        info!(directory = %dir, account = account.id(), "ACME account restored");
        return Ok(account);
    }
    create(settings, store).await
}

/// Creates an account at the CA and stores it, replacing any stored one.
pub(crate) async fn create(
    settings: &AcmeSettings,
    store: &dyn Store,
) -> Result<Account, AcmeError> {
    let dir = &settings.directory_url;
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http_client(settings)?)
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            dir.clone(),
            None,
        )
        .await?;
    let json = serde_json::to_vec(&credentials).map_err(|e| AcmeError::Internal(e.to_string()))?;
    store
        .put_acme_account(ACTOR, dir, &settings.key.seal(dir, &json)?)
        .await?;
    info!(directory = %dir, account = account.id(), "ACME account created");
    Ok(account)
}

/// Proves, changing nothing, that the CA's directory answers through the configured trust
/// roots, and that a stored account for it opens with the configured key (`broker check`).
pub async fn check(settings: &AcmeSettings, store: &dyn Store) -> Result<String, AcmeError> {
    let dir = &settings.directory_url;
    let client = http_client(settings)?;
    let req = http::Request::get(dir.as_str())
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| AcmeError::BadSettings(format!("acme_directory {dir:?}: {e}")))?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| AcmeError::Directory("no answer within 20 s".into()))?
        .map_err(|e| AcmeError::Directory(chain(&e)))?;
    let status = resp.parts.status;
    let mut body = resp.body;
    let bytes = body
        .into_bytes()
        .await
        .map_err(|e| AcmeError::Directory(e.to_string()))?;
    if !status.is_success() {
        return Err(AcmeError::Directory(format!("answered {status}")));
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
        AcmeError::Directory("not an ACME directory (the answer is not JSON)".into())
    })?;
    if ["newNonce", "newAccount", "newOrder"]
        .iter()
        .any(|k| json.get(k).and_then(|v| v.as_str()).is_none())
    {
        return Err(AcmeError::Directory(
            "not an ACME directory (no newNonce/newAccount/newOrder)".into(),
        ));
    }
    let ari = if json.get("renewalInfo").is_some() {
        "renewal information (ARI) offered"
    } else {
        "no renewal information (ARI)"
    };
    let account = match store.acme_account(dir).await? {
        None => "no account yet (made at the first order)".to_owned(),
        Some(row) => {
            settings.key.open(dir, &row.credentials).map_err(|e| {
                AcmeError::Cipher(format!(
                    "the stored account does not open with cert_key ({e}): was the key file replaced?"
                ))
            })?;
            "the stored account opens with cert_key".to_owned()
        }
    };
    Ok(format!("{dir}: answers; {ari}; {account}"))
}

/// An error with its causes: hyper's "client error (Connect)" alone does not say that the
/// connection was refused, or that the CA's certificate is not trusted.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
