//! Certificate chain checks with x509-parser, so tests prove issued chains really link up.

use anyhow::{bail, Context, Result};
use x509_parser::pem::Pem;
use x509_parser::prelude::*;

/// DER blocks of every CERTIFICATE in a PEM bundle, in order.
pub fn pem_certs(pem: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.context("bad PEM block")?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    Ok(out)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = X509Certificate::from_der(der).context("bad certificate DER")?;
    if !rest.is_empty() {
        bail!("trailing bytes after certificate");
    }
    Ok(cert)
}

/// Verifies leaf → intermediates → root: each certificate's issuer equals the next one's
/// subject and its signature verifies with the next one's key; the root is self-signed.
/// A copy of the root at the end of the bundle is allowed. Returns the leaf's subject.
pub fn verify_chain(leaf_and_intermediates_pem: &str, root_pem: &str) -> Result<String> {
    let chain_der = pem_certs(leaf_and_intermediates_pem)?;
    if chain_der.is_empty() {
        bail!("no CERTIFICATE block in the chain");
    }
    let roots = pem_certs(root_pem)?;
    let [root_der] = roots.as_slice() else {
        bail!("expected exactly one root certificate, got {}", roots.len());
    };
    let root = parse(root_der)?;
    if root.issuer() != root.subject() {
        bail!("root {} is not self-issued", root.subject());
    }
    root.verify_signature(None)
        .map_err(|e| anyhow::anyhow!("root self-signature: {e}"))?;

    let mut chain_der: Vec<&[u8]> = chain_der.iter().map(Vec::as_slice).collect();
    if chain_der.len() > 1 && chain_der.last() == Some(&root_der.as_slice()) {
        chain_der.pop();
    }
    let chain = chain_der
        .iter()
        .map(|d| parse(d))
        .collect::<Result<Vec<_>>>()?;
    let now = ASN1Time::now();
    for (i, cert) in chain.iter().enumerate() {
        if !cert.validity().is_valid_at(now) {
            bail!(
                "certificate {i} ({}) is not valid now: {:?}",
                cert.subject(),
                cert.validity()
            );
        }
        let parent = chain.get(i + 1).unwrap_or(&root);
        if cert.issuer() != parent.subject() {
            bail!(
                "certificate {i} issuer `{}` does not match the next subject `{}`",
                cert.issuer(),
                parent.subject()
            );
        }
        cert.verify_signature(Some(parent.public_key()))
            .map_err(|e| {
                anyhow::anyhow!(
                    "signature of certificate {i} ({}) by `{}`: {e}",
                    cert.subject(),
                    parent.subject()
                )
            })?;
        if !parent.is_ca() {
            bail!("`{}` signs certificates but is not a CA", parent.subject());
        }
    }
    Ok(chain[0].subject().to_string())
}

/// Subject alternative DNS names of the first certificate in a PEM bundle.
pub fn leaf_dns_names(pem: &str) -> Result<Vec<String>> {
    let ders = pem_certs(pem)?;
    let Some(der) = ders.first() else {
        bail!("no certificate");
    };
    let cert = parse(der)?;
    let mut out = Vec::new();
    if let Some(san) = cert.subject_alternative_name().ok().flatten() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                out.push((*d).to_string());
            }
        }
    }
    Ok(out)
}
