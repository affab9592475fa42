//! Whether a certificate belongs to a request: its public key is the CSR's. A certificate found
//! by lookup, follow-up or download is adopted only then, so an annotation or a metadata value
//! a user wrote can never hand a request somebody else's certificate.

use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::*;

use super::PkiError;

/// The DER SubjectPublicKeyInfo of the CSR in `csr_pem`.
fn csr_key(csr_pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, block) = parse_x509_pem(csr_pem).map_err(|_| PkiError::CsrPemType)?;
    let (_, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| PkiError::CsrInvalid(format!("failed to parse CSR: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// True when the leaf certificate `cert_pem` carries the public key of the CSR `csr_pem`.
pub fn key_matches(csr_pem: &[u8], cert_pem: &str) -> Result<bool, PkiError> {
    let want = csr_key(csr_pem)?;
    let (_, block) = parse_x509_pem(cert_pem.as_bytes()).map_err(|_| PkiError::CertificatePem)?;
    let (_, cert) =
        X509Certificate::from_der(&block.contents).map_err(|_| PkiError::CertificatePem)?;
    Ok(cert.tbs_certificate.subject_pki.raw == want.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_and_cert(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        (csr, cert)
    }

    #[test]
    fn only_a_certificate_for_the_csrs_key_matches() {
        let (csr_a, cert_a) = csr_and_cert("a.example.com");
        let (_, cert_b) = csr_and_cert("a.example.com");
        assert!(key_matches(csr_a.as_bytes(), &cert_a).unwrap());
        assert!(!key_matches(csr_a.as_bytes(), &cert_b).unwrap());
        assert_eq!(
            key_matches(csr_a.as_bytes(), "not a pem"),
            Err(PkiError::CertificatePem)
        );
        assert_eq!(key_matches(b"junk", &cert_a), Err(PkiError::CsrPemType));
    }
}
