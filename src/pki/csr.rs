//! Parses and verifies the PKCS#10 CSR of a CertificateRequest.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;

use super::PkiError;

/// Facts about a CSR that are logged (never the key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// Subject common name, empty when absent.
    pub common_name: String,
    /// Every SAN as `type:value`.
    pub sans: Vec<String>,
}

/// Largest `spec.request` accepted (256 KiB of PEM). Real CSRs are a few KiB (tens with
/// post-quantum keys); the object also has to hold the issued chain within etcd's ~1.5 MiB.
pub const MAX_CSR_BYTES: usize = 256 * 1024;

/// Requires exactly a CERTIFICATE REQUEST PEM block whose signature verifies.
pub fn parse_csr(pem: &[u8]) -> Result<CsrInfo, PkiError> {
    if pem.len() > MAX_CSR_BYTES {
        return Err(PkiError::CsrTooLarge {
            size: pem.len(),
            max: MAX_CSR_BYTES,
        });
    }
    let (_, block) = parse_x509_pem(pem).map_err(|_| PkiError::CsrPemType)?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(PkiError::CsrPemType);
    }
    let (_, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| PkiError::CsrInvalid(format!("failed to parse CSR: {e}")))?;
    csr.verify_signature()
        .map_err(|_| PkiError::CsrInvalid("CSR signature does not verify".into()))?;
    let info = &csr.certification_request_info;
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    let mut sans = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    sans.push(match name {
                        GeneralName::DNSName(d) => format!("dns:{d}"),
                        GeneralName::IPAddress(ip) => format!("ip:{}", ip_to_string(ip)),
                        GeneralName::URI(u) => format!("uri:{u}"),
                        GeneralName::RFC822Name(e) => format!("email:{e}"),
                        other => format!("other:{other}"),
                    });
                }
            }
        }
    }
    Ok(CsrInfo { common_name, sans })
}

fn ip_to_string(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{b:02x?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "a.example.com");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn valid_csr_reports_cn_and_sans() {
        let info = parse_csr(csr_pem().as_bytes()).unwrap();
        assert_eq!(info.common_name, "a.example.com");
        assert_eq!(info.sans, vec!["dns:a.example.com"]);
    }

    #[test]
    fn wrong_pem_type_is_refused_with_upstream_text() {
        let pem = csr_pem().replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert_eq!(
            parse_csr(pem.as_bytes()).unwrap_err().to_string(),
            "csr is invalid: PEM block type must be CERTIFICATE REQUEST"
        );
        assert_eq!(parse_csr(b"not pem").unwrap_err(), PkiError::CsrPemType);
    }

    #[test]
    fn malformed_pem_gets_the_upstream_text() {
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all!\n-----END CERTIFICATE REQUEST-----\n";
        assert_eq!(parse_csr(pem.as_bytes()), Err(PkiError::CsrPemType));
        assert_eq!(parse_csr(b""), Err(PkiError::CsrPemType));
    }

    #[test]
    fn junk_inside_a_csr_block_is_named() {
        let pem = super::super::to_pem("CERTIFICATE REQUEST", b"\x30\x03\x02\x01\x01");
        let e = parse_csr(pem.as_bytes()).unwrap_err().to_string();
        assert!(
            e.starts_with("csr is invalid: failed to parse CSR: "),
            "{e}"
        );
    }

    #[test]
    fn oversized_csr_is_refused_before_parsing() {
        let big = vec![b'A'; MAX_CSR_BYTES + 1];
        assert_eq!(
            parse_csr(&big).unwrap_err().to_string(),
            format!(
                "csr is invalid: the CSR is {} bytes, more than the 262144 bytes accepted",
                MAX_CSR_BYTES + 1
            )
        );
        // A valid CSR padded to 1 MiB with a private extension is refused the same way.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["big.example.com".into()]).unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 55555, 1],
                vec![0u8; 1 << 20],
            ));
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        assert!(matches!(
            parse_csr(pem.as_bytes()),
            Err(PkiError::CsrTooLarge { .. })
        ));
    }

    #[test]
    fn tampered_signature_is_refused() {
        let pem = csr_pem();
        let (_, block) = parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        let n = der.len();
        der[n - 5] ^= 0xff;
        let bad = super::super::to_pem("CERTIFICATE REQUEST", &der);
        assert!(matches!(
            parse_csr(bad.as_bytes()),
            Err(PkiError::CsrInvalid(_))
        ));
    }

    #[test]
    fn truncated_and_corrupted_csrs_are_errors_not_panics() {
        let pem = csr_pem();
        let der = parse_x509_pem(pem.as_bytes()).unwrap().1.contents;
        for n in 0..der.len() {
            let cut = super::super::to_pem("CERTIFICATE REQUEST", &der[..n]);
            assert!(parse_csr(cut.as_bytes()).is_err(), "truncated at {n}");
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            // Every byte is covered by the signature or the DER structure.
            let bad = super::super::to_pem("CERTIFICATE REQUEST", &bad);
            assert!(parse_csr(bad.as_bytes()).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn hostile_csr_pem_text_is_refused() {
        for junk in [
            "-----BEGIN CERTIFICATE REQUEST-----".to_string(),
            "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n".to_string(),
            "-----BEGIN CERTIFICATE REQUEST-----\n\u{1F600}\n-----END CERTIFICATE REQUEST-----\n"
                .to_string(),
            "-----END CERTIFICATE REQUEST-----\n".repeat(1000),
        ] {
            assert!(parse_csr(junk.as_bytes()).is_err(), "{:.80}", junk);
        }
        assert!(parse_csr(&[0xff; 1024]).is_err());
    }

    #[test]
    fn odd_ip_san_lengths_are_printed_not_indexed() {
        assert_eq!(ip_to_string(&[10, 0, 0, 1]), "10.0.0.1");
        assert_eq!(ip_to_string(&[0; 16]), "::");
        assert_eq!(ip_to_string(&[]), "[]");
        assert_eq!(ip_to_string(&[1, 2, 3]), "[01, 02, 03]");
        assert_eq!(ip_to_string(&[0xff; 17]).matches("ff").count(), 17);
    }
}
