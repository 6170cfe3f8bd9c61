//! Reading PEM chains and keys, and the few X.509 facts the broker needs about a certificate:
//! which names it covers, who issued it, and when it expires (renewal is scheduled from that).

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::TlsError;

/// What a leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names from the subject alternative names, lowercase (the subject's common name when
    /// there are none, as old certificates do).
    pub names: Vec<String>,
    /// The issuer's distinguished name (`CN=Pebble Intermediate CA 1c5d5a`).
    pub issuer: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// Parses a PEM chain (leaf first, then intermediates) and its private key (PKCS#8, PKCS#1 or
/// SEC1) into a key rustls can serve, checking that the key belongs to the leaf.
pub fn load_pem(
    chain_pem: impl AsRef<[u8]>,
    key_pem: impl AsRef<[u8]>,
) -> Result<CertifiedKey, TlsError> {
    let chain = parse_chain(chain_pem.as_ref())?;
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_ref()) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoPrivateKey),
        Err(e) => return Err(TlsError::Pem(e.to_string())),
    };
    let provider = rustls::crypto::ring::default_provider();
    Ok(CertifiedKey::from_der(chain, key, &provider)?)
}

/// [`load_pem`] from files, as the operator's `--tls-cert` / `--tls-key` name them; also returns
/// what the leaf says, so the caller knows which names to serve it for.
pub fn load_pem_files(chain: &Path, key: &Path) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let chain_pem = read(chain)?;
    let key = load_pem(&chain_pem, read(key)?)?;
    let info = cert_info_der(&key.cert[0])?;
    Ok((key, info))
}

/// Reads the leaf (first certificate) of a PEM chain.
pub fn cert_info(chain_pem: impl AsRef<[u8]>) -> Result<CertInfo, TlsError> {
    let chain = parse_chain(chain_pem.as_ref())?;
    cert_info_der(&chain[0])
}

/// Reads one DER certificate.
pub fn cert_info_der(der: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(TlsError::Certificate(e.to_string())),
    };
    if names.is_empty()
        && let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
    {
        names.push(cn.to_ascii_lowercase());
    }
    Ok(CertInfo {
        names,
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Every `CERTIFICATE` block, in order; at least one.
fn parse_chain(pem_bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Warren Test");
        let cert = params.self_signed(&key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn loads_a_chain_and_reads_its_facts() {
        let (chain, key) = self_signed(&["Chat.Example.com", "*.example.com"]);
        let ck = load_pem(&chain, &key).expect("load");
        assert_eq!(ck.cert.len(), 1);
        let info = cert_info(&chain).expect("info");
        assert_eq!(info.names, ["chat.example.com", "*.example.com"]);
        assert_eq!(info.issuer, "CN=Warren Test");
        assert!(info.not_after > info.not_before);
        let dir = std::env::temp_dir().join(format!("warren-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("c.pem"), &chain).expect("write");
        std::fs::write(dir.join("k.pem"), &key).expect("write");
        let (_, info2) = load_pem_files(&dir.join("c.pem"), &dir.join("k.pem")).expect("files");
        assert_eq!(info2, info);
        assert!(matches!(
            load_pem_files(&dir.join("missing.pem"), &dir.join("k.pem")),
            Err(TlsError::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_missing_parts_and_mismatched_keys() {
        let (chain, key) = self_signed(&["a.example.com"]);
        let (_, other_key) = self_signed(&["b.example.com"]);
        assert!(matches!(load_pem("", &key), Err(TlsError::NoCertificate)));
        assert!(matches!(load_pem(&chain, ""), Err(TlsError::NoPrivateKey)));
        assert!(matches!(
            load_pem(&chain, &other_key),
            Err(TlsError::Key(_))
        ));
    }
}
