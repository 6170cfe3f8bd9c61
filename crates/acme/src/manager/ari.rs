//! ACME Renewal Information (RFC 9773): the CA says when to renew each certificate.
//!
//! Where the CA's directory offers `renewalInfo`, a certificate's renewal is timed by the CA's
//! suggested window instead of two thirds of its lifetime, and re-read as often as the CA asks
//! (`Retry-After`): a CA that must revoke certificates early (as Let's Encrypt did in 2022)
//! moves their windows, and the broker renews before the revocation instead of serving a
//! revoked certificate until its own schedule comes round. The renewal order then names the
//! certificate it replaces, which the CA may reward with rate-limit exemptions. Where the CA
//! offers none (Pebble 2.4, some private CAs), nothing changes.

use std::sync::atomic::Ordering;

use instant_acme::CertificateIdentifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::{debug, warn};
use warren_store::{Certificate, now};

use super::CertManager;
use crate::schedule::{AriPlan, ari_plan, jitter};

impl CertManager {
    /// What the CA's renewal information says of `row`'s certificate; `None` when the CA
    /// offers none or it cannot be read now (then the two-thirds schedule stands).
    pub(super) async fn ari(&self, row: &Certificate) -> Option<AriPlan> {
        let id = identifier(row.chain_pem.as_deref()?)?;
        let not_after = row.not_after?;
        let account = self.account().await.ok()?;
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => {
                self.ari_offered.store(true, Ordering::Relaxed);
                let window = &info.suggested_window;
                let plan = ari_plan(
                    now(),
                    (window.start.unix_timestamp(), window.end.unix_timestamp()),
                    i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX),
                    not_after,
                    jitter(),
                );
                debug!(name = %row.name, ?plan, explanation = ?info.explanation_url, "renewal information read");
                Some(plan)
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                warn!(name = %row.name, error = %e, "cannot read the CA's renewal information; renewing on the usual schedule");
                None
            }
        }
    }
}

/// The certificate's ARI identifier (authority key id and serial) from the first certificate of
/// a stored chain; `None` for a chain that does not parse or has no authority key id.
pub(crate) fn identifier(chain_pem: &str) -> Option<CertificateIdentifier<'static>> {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    CertificateIdentifier::try_from(&der)
        .ok()
        .map(CertificateIdentifier::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, Issuer, KeyPair, SerialNumber};

    #[test]
    fn a_ca_signed_certificate_is_identified_by_its_authority_key_and_serial() {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["chat.example.com".into()]).expect("params");
        leaf.serial_number = Some(SerialNumber::from(vec![0x01, 0x02, 0x03]));
        leaf.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let pem = leaf.signed_by(&key, &issuer).expect("sign").pem();
        let id = identifier(&pem).expect("identified");
        // RFC 9773 §4.1: base64url of the serial's DER content octets, after the key id.
        assert_eq!(id.serial, "AQID");
        let text = id.to_string();
        assert!(
            text.ends_with(".AQID") && text.len() > ".AQID".len(),
            "{text}"
        );

        // A self-signed certificate names no authority key: no renewal information to ask for.
        let own = CertificateParams::new(vec!["chat.example.com".into()])
            .expect("params")
            .self_signed(&key)
            .expect("sign")
            .pem();
        assert!(identifier(&own).is_none());
        assert!(identifier("not a certificate").is_none());
    }
}
