//! The simulator's certificates: a two-level issuing PKI (root → issuing CA → leaves) that signs
//! enrolled CSRs, and a separate TLS CA + server certificate for the HTTPS listener.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber, SignatureAlgorithm,
};
use ring::rand::SecureRandom;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// Subject CN of the simulated root CA.
pub const ROOT_CN: &str = "Sim Root CA";
/// Subject CN of the simulated issuing CA.
pub const ISSUING_CN: &str = "Sim Issuing CA";
/// Validity of issued leaves.
pub const LEAF_VALIDITY_DAYS: i64 = 30;

/// Why certificate material could not be produced or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Reading or writing persisted CA files failed.
    #[error("pki file {path}: {source}")]
    Io {
        /// File that failed.
        path: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// rustls refused the server certificate.
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The random source failed.
    #[error("random number generator failed")]
    Random,
}

/// Why a CSR was refused (mapped to Command error codes by the enrollment handler).
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Not base64 / PEM, or not a PKCS#10 structure.
    #[error("the CSR could not be decoded: {0}")]
    Decode(String),
    /// The self-signature does not verify.
    #[error("the CSR signature is invalid")]
    Signature,
    /// Key algorithm or size not supported.
    #[error("the CSR key is not allowed: {0}")]
    KeyType(String),
}

/// A CSR that parsed and verified, with what the leaf needs.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    /// DER of the PKCS#10 request.
    pub der: Vec<u8>,
    /// Subject, copied into the leaf.
    pub subject: DistinguishedName,
    /// First subject CN, for records.
    pub subject_cn: Option<String>,
    /// SANs from the extension request, copied into the leaf.
    pub sans: Vec<SanType>,
    public_key: CsrPublicKey,
}

#[derive(Debug, Clone)]
struct CsrPublicKey {
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// A certificate issued for a CSR.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// PEM of the leaf.
    pub pem: String,
    /// Serial number, upper-case hex.
    pub serial_hex: String,
    /// SHA-1 of the DER, upper-case hex.
    pub thumbprint: String,
}

/// All certificate material of one simulator run.
pub struct Pki {
    /// Root CA certificate (PEM).
    pub root_pem: String,
    /// Issuing CA certificate (PEM).
    pub issuing_pem: String,
    /// Issuing CA subject as Command prints it (`IssuerDN`).
    pub issuer_dn: String,
    issuing: Issuer<'static, KeyPair>,
    /// TLS CA certificate (PEM) that clients trust.
    pub tls_ca_pem: String,
    tls_cert_der: CertificateDer<'static>,
    tls_key_der: Vec<u8>,
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Positive and always 16 bytes long.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn ca_params(cn: &str, constraint: BasicConstraints) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(constraint);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(3650);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Upper-case hex of bytes.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Lower-case hex of bytes.
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Pki {
    /// Creates fresh CAs, or reuses the issuing PKI persisted in `pki_dir` (creating it there
    /// on first use). The TLS material is always fresh.
    pub fn load_or_generate(
        pki_dir: Option<&Path>,
        tls_hostnames: &[String],
    ) -> Result<Pki, PkiError> {
        let (root_pem, issuing_pem, issuing) = match pki_dir {
            Some(dir) if dir.join("issuing-key.pem").exists() => {
                let root_pem = read(&dir.join("root.pem"))?;
                let issuing_pem = read(&dir.join("issuing.pem"))?;
                let key = KeyPair::from_pem(&read(&dir.join("issuing-key.pem"))?)?;
                let issuing = Issuer::from_ca_cert_pem(&issuing_pem, key)?;
                (root_pem, issuing_pem, issuing)
            }
            _ => {
                let (root_pem, issuing_pem, issuing, key_pem) = Self::generate_issuing_pki()?;
                if let Some(dir) = pki_dir {
                    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
                        path: dir.display().to_string(),
                        source,
                    })?;
                    write(&dir.join("root.pem"), &root_pem)?;
                    write(&dir.join("issuing.pem"), &issuing_pem)?;
                    write(&dir.join("issuing-key.pem"), &key_pem)?;
                }
                (root_pem, issuing_pem, issuing)
            }
        };

        let tls_ca_key = KeyPair::generate()?;
        let tls_ca_params = ca_params("Sim TLS CA", BasicConstraints::Constrained(0))?;
        let tls_ca_cert = tls_ca_params.self_signed(&tls_ca_key)?;
        let tls_ca = Issuer::new(tls_ca_params, tls_ca_key);

        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        for h in tls_hostnames {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                names.push(h.clone());
            }
        }
        let mut server_params = CertificateParams::new(names)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "command-sim");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        server_params.not_before = now - time::Duration::hours(1);
        server_params.not_after = now + time::Duration::days(365);
        server_params.serial_number = Some(random_serial()?);
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &tls_ca)?;

        Ok(Pki {
            root_pem,
            issuing_pem,
            issuer_dn: format!("CN={ISSUING_CN}"),
            issuing,
            tls_ca_pem: tls_ca_cert.pem(),
            tls_cert_der: server_cert.der().clone(),
            tls_key_der: server_key.serialize_der(),
        })
    }

    fn generate_issuing_pki() -> Result<(String, String, Issuer<'static, KeyPair>, String), PkiError>
    {
        let root_key = KeyPair::generate()?;
        let root_params = ca_params(ROOT_CN, BasicConstraints::Unconstrained)?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root = Issuer::new(root_params, root_key);

        let issuing_key = KeyPair::generate()?;
        let issuing_params = ca_params(ISSUING_CN, BasicConstraints::Constrained(0))?;
        let issuing_cert = issuing_params.signed_by(&issuing_key, &root)?;
        let key_pem = issuing_key.serialize_pem();
        Ok((
            root_cert.pem(),
            issuing_cert.pem(),
            Issuer::new(issuing_params, issuing_key),
            key_pem,
        ))
    }

    /// A rustls server configuration presenting the TLS server certificate.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.tls_key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.tls_cert_der.clone()], key)?;
        Ok(config)
    }

    /// Signs a verified CSR: subject and SANs from the CSR (plus `extra_sans`), 30 days,
    /// serverAuth + clientAuth, random serial.
    pub fn sign(&self, csr: &ParsedCsr, extra_sans: &[SanType]) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = csr.subject.clone();
        params.subject_alt_names = csr.sans.clone();
        for san in extra_sans {
            if !params.subject_alt_names.contains(san) {
                params.subject_alt_names.push(san.clone());
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);
        let serial = random_serial()?;
        let serial_hex = hex_upper(&serial.to_bytes());
        params.serial_number = Some(serial);
        let cert = params.signed_by(&csr.public_key, &self.issuing)?;
        let thumbprint = hex_upper(
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der()).as_ref(),
        );
        Ok(IssuedCert {
            pem: cert.pem(),
            serial_hex,
            thumbprint,
        })
    }
}

/// Decodes a CSR given as PEM (any `-----BEGIN …-----` armour) or bare base64 DER.
pub fn decode_csr_text(text: &str) -> Result<Vec<u8>, CsrError> {
    let mut body = String::new();
    let mut in_armour = false;
    let mut saw_armour = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            in_armour = true;
            saw_armour = true;
            continue;
        }
        if line.starts_with("-----END") {
            break;
        }
        if in_armour || !saw_armour {
            body.push_str(line);
        }
    }
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    if body.is_empty() {
        return Err(CsrError::Decode("no base64 content".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| CsrError::Decode(format!("invalid base64: {e}")))
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// Parses a PKCS#10 DER, verifies its signature and extracts what the leaf needs.
pub fn parse_csr(der: Vec<u8>) -> Result<ParsedCsr, CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| CsrError::Decode(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CsrError::Decode("trailing data after the request".into()));
    }
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    let info = &csr.certification_request_info;

    let spki = &info.subject_pki;
    let key_oid = spki.algorithm.algorithm.to_id_string();
    let alg: &'static SignatureAlgorithm = match key_oid.as_str() {
        OID_RSA => {
            match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {}
                Ok(PublicKey::RSA(rsa)) => {
                    return Err(CsrError::KeyType(format!(
                        "RSA key size {} is below 2048",
                        rsa.key_size()
                    )))
                }
                _ => return Err(CsrError::KeyType("malformed RSA key".into())),
            }
            &rcgen::PKCS_RSA_SHA256
        }
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                OID_P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
                other => return Err(CsrError::KeyType(format!("unsupported EC curve {other}"))),
            }
        }
        OID_ED25519 => &rcgen::PKCS_ED25519,
        other => {
            return Err(CsrError::KeyType(format!(
                "unsupported key algorithm {other}"
            )))
        }
    };

    let mut subject = DistinguishedName::new();
    for rdn in info.subject.iter() {
        for attr in rdn.iter() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(|i| i.collect())
                .ok_or_else(|| CsrError::Decode("subject attribute OID too large".into()))?;
            let value = attr.attr_value();
            let text = std::str::from_utf8(value.data)
                .map_err(|_| CsrError::Decode("subject attribute is not text".into()))?;
            let dn_value = match value.header.tag() {
                Tag::PrintableString => match text.try_into() {
                    Ok(p) => DnValue::PrintableString(p),
                    Err(_) => DnValue::Utf8String(text.to_string()),
                },
                Tag::Ia5String => match text.try_into() {
                    Ok(p) => DnValue::Ia5String(p),
                    Err(_) => DnValue::Utf8String(text.to_string()),
                },
                _ => DnValue::Utf8String(text.to_string()),
            };
            subject.push(DnType::from_oid(&oid), dn_value);
        }
    }
    let subject_cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);

    let mut sans = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    sans.push(san_from_general(name)?);
                }
            }
        }
    }

    Ok(ParsedCsr {
        subject,
        subject_cn,
        sans,
        public_key: CsrPublicKey {
            raw: spki.subject_public_key.data.to_vec(),
            alg,
        },
        der,
    })
}

fn san_from_general(name: &GeneralName<'_>) -> Result<SanType, CsrError> {
    let bad = |what: &str| CsrError::Decode(format!("invalid {what} SAN"));
    Ok(match name {
        GeneralName::DNSName(n) => SanType::DnsName((*n).try_into().map_err(|_| bad("DNS"))?),
        GeneralName::RFC822Name(n) => {
            SanType::Rfc822Name((*n).try_into().map_err(|_| bad("email"))?)
        }
        GeneralName::URI(n) => SanType::URI((*n).try_into().map_err(|_| bad("URI"))?),
        GeneralName::IPAddress(octets) => match octets.len() {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(octets);
                SanType::IpAddress(std::net::IpAddr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(octets);
                SanType::IpAddress(std::net::IpAddr::from(a))
            }
            _ => return Err(bad("IP")),
        },
        _ => {
            return Err(CsrError::Decode(
                "unsupported SAN type in the CSR (DNS, IP, URI and email are supported)".into(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem(sans: Vec<String>) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "leaf.example.com");
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    #[test]
    fn signs_a_csr_and_copies_subject_and_sans() {
        let pki = Pki::load_or_generate(None, &[]).expect("pki");
        let pem = csr_pem(vec!["leaf.example.com".into(), "10.0.0.1".into()]);
        let csr = parse_csr(decode_csr_text(&pem).expect("decode")).expect("parse");
        assert_eq!(csr.subject_cn.as_deref(), Some("leaf.example.com"));
        let issued = pki.sign(&csr, &[]).expect("sign");
        let der = decode_csr_text(&issued.pem).expect("cert decodes");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("cert parses");
        assert_eq!(cert.subject().to_string(), "CN=leaf.example.com");
        assert_eq!(cert.issuer().to_string(), "CN=Sim Issuing CA");
        assert_eq!(hex_upper(cert.raw_serial()), issued.serial_hex);
        let san = cert
            .subject_alternative_name()
            .expect("ext ok")
            .expect("san present");
        assert_eq!(san.value.general_names.len(), 2);
    }

    #[test]
    fn bare_base64_is_accepted_and_garbage_rejected() {
        let pem = csr_pem(vec!["a.example".into()]);
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(parse_csr(decode_csr_text(&bare).expect("decode")).is_ok());
        assert!(matches!(
            decode_csr_text("not base64!"),
            Err(CsrError::Decode(_))
        ));
    }

    #[test]
    fn persisted_pki_is_reused() {
        let dir = std::env::temp_dir().join(format!("command-sim-pki-{}", uuid::Uuid::new_v4()));
        let first = Pki::load_or_generate(Some(&dir), &[]).expect("first");
        let second = Pki::load_or_generate(Some(&dir), &[]).expect("second");
        assert_eq!(first.root_pem, second.root_pem);
        assert_eq!(first.issuing_pem, second.issuing_pem);
        let csr =
            parse_csr(decode_csr_text(&csr_pem(vec!["x.example".into()])).expect("d")).expect("p");
        let issued = second.sign(&csr, &[]).expect("sign");
        let leaf_der = decode_csr_text(&issued.pem).expect("leaf");
        let issuing_der = decode_csr_text(&first.issuing_pem).expect("issuing");
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).expect("leaf parses");
        let (_, issuing) =
            x509_parser::parse_x509_certificate(&issuing_der).expect("issuing parses");
        leaf.verify_signature(Some(issuing.public_key()))
            .expect("leaf verifies against the persisted issuing CA");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
