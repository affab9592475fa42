//! CSR checks and chain ordering with x509-parser (product.md §10.1, §10.4).

mod chain;
mod csr;
mod key_match;

pub use chain::{split_chain, IssuedChain};
pub use csr::{parse_csr, CsrInfo, MAX_CSR_BYTES};
pub use key_match::key_matches;

/// Why a CSR or a returned chain is unusable; texts as upstream where users search for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// spec.request is not one CERTIFICATE REQUEST PEM block.
    #[error("csr is invalid: PEM block type must be CERTIFICATE REQUEST")]
    CsrPemType,
    /// The CSR does not parse or its signature does not verify.
    #[error("csr is invalid: {0}")]
    CsrInvalid(String),
    /// spec.request is larger than any real CSR; refused before parsing so an oversized object
    /// fails clearly instead of being sent to Command (and its answer overflowing the object).
    #[error("csr is invalid: the CSR is {size} bytes, more than the {max} bytes accepted")]
    CsrTooLarge {
        /// Bytes of spec.request (decoded PEM).
        size: usize,
        /// [`MAX_CSR_BYTES`].
        max: usize,
    },
    /// A returned certificate string holds no PEM certificate.
    #[error("failed to parse certificate PEM")]
    CertificatePem,
    /// The returned certificates are not one unbroken chain; the detail names the gap.
    #[error("certificate chain is malformed or broken: {0}")]
    BrokenChain(String),
    /// Command answered without any certificate.
    #[error("Command returned no certificates")]
    Empty,
}

/// PEM armour around DER, 64 columns, as Go's encoding/pem writes it.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
