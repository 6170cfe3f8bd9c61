//! One ACME order: create it, answer its challenges, finalize with our own key, fetch the chain.
//! Whatever happens, every challenge answer put up for it is taken down again afterwards.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    Order, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use tracing::{debug, warn};
use warren_dns::DnsProvider;
use warren_store::Store;
use warren_tls::Challenges;

use crate::Propagation;
use crate::{AcmeError, ChallengeKind};

/// Where challenge answers go.
pub(crate) struct Responders<'a> {
    pub(crate) challenges: &'a Challenges,
    pub(crate) dns: Option<&'a dyn DnsProvider>,
    /// Where and how long to wait for a DNS-01 record before the CA is told to look.
    pub(crate) propagation: &'a Propagation,
    /// Several nodes answer for the cluster: HTTP-01 and TLS-ALPN-01 answers are published in
    /// the store for the others, which get this long to pick them up before the CA is told.
    pub(crate) shared: Option<(&'a dyn Store, Duration)>,
}

/// The store's word for a challenge kind (`acme_challenges.kind`).
pub fn shared_kind(kind: ChallengeKind) -> &'static str {
    kind.as_str()
}

/// What a successful order yields, in PEM.
pub(crate) struct Issued {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

/// Challenge answers put up during an order, to take down after it. The in-memory answers are
/// also taken down on drop, so an order abandoned mid-way (shutdown, timeout) leaves none
/// behind; TXT records need an `.await` and are removed by [`Cleanup::remove_txt`].
struct Cleanup<'a> {
    challenges: &'a Challenges,
    http01_tokens: Vec<String>,
    tls_alpn01_domains: Vec<String>,
    txt_records: Vec<(String, String)>,
    /// Answers published for the other nodes: (kind, key).
    published: Vec<(&'static str, String)>,
}

impl<'a> Cleanup<'a> {
    fn new(challenges: &'a Challenges) -> Self {
        Self {
            challenges,
            http01_tokens: Vec::new(),
            tls_alpn01_domains: Vec::new(),
            txt_records: Vec::new(),
            published: Vec::new(),
        }
    }

    async fn withdraw(&mut self, store: Option<&dyn Store>) {
        let Some(store) = store else { return };
        for (kind, key) in self.published.drain(..) {
            if let Err(e) = store.take_challenge(kind, &key).await {
                warn!(%key, error = %e, "could not withdraw a published challenge answer");
            }
        }
    }

    async fn remove_txt(&mut self, dns: Option<&dyn DnsProvider>) {
        let Some(dns) = dns else { return };
        for (fqdn, value) in self.txt_records.drain(..) {
            if let Err(e) = dns.remove_txt(&fqdn, &value).await {
                warn!(%fqdn, error = %e, "could not remove an ACME challenge TXT record");
            }
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for token in &self.http01_tokens {
            self.challenges.remove_http01(token);
        }
        for domain in &self.tls_alpn01_domains {
            self.challenges.remove_tls_alpn01(domain);
        }
    }
}

/// Publishes an answer for the other nodes of a cluster (if any) and gives them time to pick
/// it up: the CA may reach any of them.
async fn publish(
    to: &Responders<'_>,
    cleanup: &mut Cleanup<'_>,
    kind: ChallengeKind,
    key: &str,
    value: &str,
) -> Result<(), AcmeError> {
    let Some((store, settle)) = to.shared else {
        return Ok(());
    };
    cleanup.published.push((shared_kind(kind), key.to_owned()));
    store.put_challenge(shared_kind(kind), key, value).await?;
    tokio::time::sleep(settle).await;
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Orders a certificate for `name` validated with `kind`, giving up after `timeout`. A renewal
/// names the certificate it `replaces` where the CA offers renewal information (RFC 9773).
pub(crate) async fn issue(
    account: &Account,
    name: &str,
    kind: ChallengeKind,
    to: &Responders<'_>,
    timeout: Duration,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Issued, AcmeError> {
    let mut cleanup = Cleanup::new(to.challenges);
    let result = tokio::time::timeout(
        timeout,
        attempt(account, name, kind, to, timeout, replaces, &mut cleanup),
    )
    .await;
    cleanup.remove_txt(to.dns).await;
    cleanup.withdraw(to.shared.map(|(store, _)| store)).await;
    drop(cleanup);
    result.unwrap_or_else(|_| Err(AcmeError::Timeout(name.to_owned())))
}

async fn attempt(
    account: &Account,
    name: &str,
    kind: ChallengeKind,
    to: &Responders<'_>,
    timeout: Duration,
    replaces: Option<CertificateIdentifier<'static>>,
    cleanup: &mut Cleanup<'_>,
) -> Result<Issued, AcmeError> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = match replaces {
        None => account.new_order(&NewOrder::new(&identifiers)).await?,
        // Refused when naming the certificate it replaces: ordered again without. A CA that
        // counts that certificate as replaced already (a renewal this broker finalized but
        // never stored, say a crash in between) answers `alreadyReplaced` every time, and one
        // that does not echo the field fails instant-acme's check (Pebble 2.4 behind an ARI
        // endpoint found it): either way the certificate would never renew. Only the CA's
        // rate-limit exemption for replacements is lost.
        Some(id) => {
            let with = NewOrder::new(&identifiers).replaces(id);
            match account.new_order(&with).await {
                Ok(order) => order,
                Err(e) => {
                    warn!(name, error = %e, "the CA refused a renewal naming the certificate it replaces; ordering without");
                    account.new_order(&NewOrder::new(&identifiers)).await?
                }
            }
        }
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Validation {
                    name: name.to_owned(),
                    detail: format!("authorization is {status:?}"),
                });
            }
        }
        let Some(mut challenge) = authz.challenge(challenge_type(kind)) else {
            return Err(AcmeError::NoChallenge {
                name: name.to_owned(),
                kind,
            });
        };
        let Identifier::Dns(domain) = challenge.identifier().identifier.clone() else {
            return Err(AcmeError::InvalidName(name.to_owned()));
        };
        let key_auth = challenge.key_authorization();
        match kind {
            ChallengeKind::Http01 => {
                cleanup.http01_tokens.push(challenge.token.clone());
                to.challenges
                    .add_http01(&challenge.token, key_auth.as_str());
                publish(to, cleanup, kind, &challenge.token, key_auth.as_str()).await?;
            }
            ChallengeKind::TlsAlpn01 => {
                cleanup.tls_alpn01_domains.push(domain.clone());
                let digest = key_auth.digest();
                to.challenges.add_tls_alpn01(&domain, digest.as_ref())?;
                publish(to, cleanup, kind, &domain, &hex_of(digest.as_ref())).await?;
            }
            ChallengeKind::Dns01 => {
                let dns = to
                    .dns
                    .ok_or_else(|| AcmeError::NoDnsProvider(name.to_owned()))?;
                let fqdn = format!("_acme-challenge.{domain}");
                let value = key_auth.dns_value();
                // Recorded before the call: a request that fails half-way may still have
                // created the record, and removal is idempotent.
                cleanup.txt_records.push((fqdn.clone(), value.clone()));
                dns.add_txt(&fqdn, &value).await?;
                let servers = match &to.propagation.servers {
                    Some(servers) => servers.clone(),
                    None => dns.authoritative_servers().await,
                };
                debug!(%fqdn, ?servers, "waiting for the record at the authoritative servers");
                warren_dns::propagation::wait_for_txt(
                    &servers,
                    &fqdn,
                    &value,
                    to.propagation.timeout,
                )
                .await?;
            }
        }
        debug!(name, %domain, challenge = %kind, "challenge answer in place");
        challenge.set_ready().await?;
    }

    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(timeout);
    match order.poll_ready(&retry).await {
        Ok(OrderStatus::Ready) => {}
        Ok(status) => {
            return Err(validation_error(&mut order, name, format!("order is {status:?}")).await);
        }
        Err(instant_acme::Error::Api(problem)) => {
            return Err(validation_error(&mut order, name, problem.to_string()).await);
        }
        Err(e) => return Err(e.into()),
    }

    let key = KeyPair::generate().map_err(|e| AcmeError::Internal(e.to_string()))?;
    let mut params = CertificateParams::new(vec![name.to_owned()])
        .map_err(|_| AcmeError::InvalidName(name.to_owned()))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Internal(e.to_string()))?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retry).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        ChallengeKind::Dns01 => ChallengeType::Dns01,
    }
}

/// The CA's own words on why validation failed: the problems on the order's challenges, else
/// `fallback`.
async fn validation_error(order: &mut Order, name: &str, fallback: String) -> AcmeError {
    let mut problems = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                problems.push(problem.to_string());
            }
        }
    }
    AcmeError::Validation {
        name: name.to_owned(),
        detail: if problems.is_empty() {
            fallback
        } else {
            problems.join("; ")
        },
    }
}
