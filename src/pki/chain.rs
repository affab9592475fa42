//! Orders Command's certificates into one chain: leaf + intermediates, and the root apart.

use x509_parser::certificate::X509Certificate;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;

use super::{to_pem, PkiError};

/// What goes into `status.certificate` and `status.ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedChain {
    /// Leaf first, then every intermediate; a self-signed root left out.
    pub certificate_pem: String,
    /// The self-signed root, else the topmost certificate; empty for a lone leaf.
    pub ca_pem: String,
}

struct Parsed {
    der: Vec<u8>,
}

impl Parsed {
    fn cert(&self) -> Result<X509Certificate<'_>, PkiError> {
        X509Certificate::from_der(&self.der)
            .map(|(_, c)| c)
            .map_err(|_| PkiError::CertificatePem)
    }
}

fn issued_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer() == parent.subject() && child.verify_signature(Some(parent.public_key())).is_ok()
}

fn self_signed(c: &X509Certificate<'_>) -> bool {
    issued_by(c, c)
}

/// Longest subject text put into a message, so a hostile certificate cannot bloat the status.
const MAX_NAME_CHARS: usize = 200;

fn clip(text: String) -> String {
    match text.char_indices().nth(MAX_NAME_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `CN=leaf.example.com` (the subject as RFC 4514 text), for messages.
fn subject_of(c: &X509Certificate<'_>) -> String {
    let s = c.subject().to_string();
    clip(if s.is_empty() {
        "<empty subject>".into()
    } else {
        s
    })
}

fn subjects(parsed: &[X509Certificate<'_>], idx: &[usize]) -> String {
    idx.iter()
        .map(|&i| subject_of(&parsed[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the certificates do not form one chain, naming the gap so the Command administrator knows
/// which CA certificate is missing or misplaced.
fn why_broken(parsed: &[X509Certificate<'_>], leaves: &[usize]) -> String {
    let n = parsed.len();
    // A certificate (not self-signed) whose issuer is absent is the usual cause: Command does
    // not have (or does not return) an intermediate CA certificate.
    let orphans: Vec<usize> = (0..n)
        .filter(|&i| {
            !self_signed(&parsed[i]) && !(0..n).any(|j| j != i && issued_by(&parsed[i], &parsed[j]))
        })
        .collect();
    if let Some(&i) = orphans.first() {
        let issuer = clip(parsed[i].issuer().to_string());
        return format!(
            "no certificate among the {n} returned issued {} (its issuer is {issuer}); the CA chain Command returns lacks that certificate",
            subject_of(&parsed[i])
        );
    }
    match leaves.len() {
        0 => "every certificate issued another one; no leaf certificate found".into(),
        _ => format!(
            "the certificates belong to {} separate chains, ending in {}",
            leaves.len(),
            subjects(parsed, leaves)
        ),
    }
}

/// Builds the single chain independent of input order (first PEM block of each string,
/// duplicates dropped), so a reordered answer (root first, leaf in the middle) still yields
/// leaf → intermediates → root; anything but one unbroken chain is [`PkiError::BrokenChain`]
/// with the gap named.
pub fn split_chain(pems: &[String]) -> Result<IssuedChain, PkiError> {
    let mut certs: Vec<Parsed> = Vec::new();
    for p in pems {
        let (_, block) = parse_x509_pem(p.as_bytes()).map_err(|_| PkiError::CertificatePem)?;
        if block.label != "CERTIFICATE" {
            return Err(PkiError::CertificatePem);
        }
        X509Certificate::from_der(&block.contents).map_err(|_| PkiError::CertificatePem)?;
        if !certs.iter().any(|c| c.der == block.contents) {
            certs.push(Parsed {
                der: block.contents,
            });
        }
    }
    if certs.is_empty() {
        return Err(PkiError::Empty);
    }
    let parsed: Vec<X509Certificate<'_>> =
        certs.iter().map(Parsed::cert).collect::<Result<_, _>>()?;
    // The leaf is the one certificate that issued no other certificate in the set.
    let leaves: Vec<usize> = (0..parsed.len())
        .filter(|&i| !(0..parsed.len()).any(|j| j != i && issued_by(&parsed[j], &parsed[i])))
        .collect();
    let [leaf] = leaves[..] else {
        return Err(PkiError::BrokenChain(why_broken(&parsed, &leaves)));
    };
    let mut order = vec![leaf];
    while let Some(&cur) = order.last() {
        if self_signed(&parsed[cur]) {
            break;
        }
        let next: Vec<usize> = (0..parsed.len())
            .filter(|&j| !order.contains(&j) && issued_by(&parsed[cur], &parsed[j]))
            .collect();
        match next[..] {
            [] => break,
            [n] => order.push(n),
            _ => {
                return Err(PkiError::BrokenChain(format!(
                    "more than one certificate could have issued {}: {}",
                    subject_of(&parsed[cur]),
                    subjects(&parsed, &next)
                )))
            }
        }
    }
    if order.len() != parsed.len() {
        let stray: Vec<usize> = (0..parsed.len()).filter(|i| !order.contains(i)).collect();
        return Err(PkiError::BrokenChain(format!(
            "not part of the chain of {}: {}",
            subject_of(&parsed[leaf]),
            subjects(&parsed, &stray)
        )));
    }
    let top = order[order.len() - 1];
    let root_is_self_signed = self_signed(&parsed[top]);
    let mut certificate_pem = String::new();
    for &i in &order {
        if i == top && root_is_self_signed && order.len() > 1 {
            continue;
        }
        certificate_pem.push_str(&to_pem("CERTIFICATE", &certs[i].der));
    }
    let ca_pem = if order.len() == 1 && !root_is_self_signed {
        String::new()
    } else {
        to_pem("CERTIFICATE", &certs[top].der)
    };
    Ok(IssuedChain {
        certificate_pem,
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    struct Pki {
        root: String,
        sub: String,
        leaf: String,
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p
    }

    fn pki() -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("Root-CA");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let sub_key = KeyPair::generate().unwrap();
        let sub_params = ca_params("Sub-CA");
        let sub = sub_params.signed_by(&sub_key, &root_issuer).unwrap();
        let sub_issuer = Issuer::new(sub_params, sub_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut lp = CertificateParams::new(vec!["leaf.example.com".into()]).unwrap();
        lp.distinguished_name
            .push(DnType::CommonName, "leaf.example.com");
        let leaf = lp.signed_by(&leaf_key, &sub_issuer).unwrap();
        Pki {
            root: root.pem(),
            sub: sub.pem(),
            leaf: leaf.pem(),
        }
    }

    fn norm(p: &str) -> String {
        let (_, b) = parse_x509_pem(p.as_bytes()).unwrap();
        to_pem("CERTIFICATE", &b.contents)
    }

    #[test]
    fn leaf_sub_root_in_any_order_are_put_leaf_first() {
        let p = pki();
        for input in [
            vec![p.leaf.clone(), p.sub.clone(), p.root.clone()],
            vec![p.root.clone(), p.leaf.clone(), p.sub.clone(), p.sub.clone()],
            // Reordered (root first, leaf last): put leaf-first.
            vec![p.root.clone(), p.sub.clone(), p.leaf.clone()],
            vec![p.sub.clone(), p.root.clone(), p.leaf.clone()],
        ] {
            let c = split_chain(&input).unwrap();
            assert_eq!(
                c.certificate_pem,
                format!("{}{}", norm(&p.leaf), norm(&p.sub))
            );
            assert_eq!(c.ca_pem, norm(&p.root));
        }
    }

    #[test]
    fn without_root_topmost_is_ca_and_lone_leaf_has_none() {
        let p = pki();
        let c = split_chain(&[p.leaf.clone(), p.sub.clone()]).unwrap();
        assert_eq!(
            c.certificate_pem,
            format!("{}{}", norm(&p.leaf), norm(&p.sub))
        );
        assert_eq!(c.ca_pem, norm(&p.sub));
        let c = split_chain(std::slice::from_ref(&p.leaf)).unwrap();
        assert_eq!(c.ca_pem, "");
    }

    #[test]
    fn broken_chain_names_the_missing_issuer() {
        let p = pki();
        assert_eq!(
            split_chain(&[p.leaf.clone(), p.root.clone()]).unwrap_err().to_string(),
            "certificate chain is malformed or broken: no certificate among the 2 returned issued CN=leaf.example.com (its issuer is CN=Sub-CA); the CA chain Command returns lacks that certificate"
        );
        let other = pki();
        let e = split_chain(&[
            p.leaf.clone(),
            p.sub.clone(),
            p.root.clone(),
            other.root.clone(),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "certificate chain is malformed or broken: the certificates belong to 2 separate chains, ending in CN=leaf.example.com, CN=Root-CA"
        );
    }

    #[test]
    fn broken_chain_and_bad_pem() {
        let p = pki();
        assert!(matches!(
            split_chain(&[p.leaf.clone(), p.root.clone()]),
            Err(PkiError::BrokenChain(_))
        ));
        assert_eq!(split_chain(&["junk".into()]), Err(PkiError::CertificatePem));
        assert_eq!(split_chain(&[]), Err(PkiError::Empty));
    }

    fn der_of(pem: &str) -> Vec<u8> {
        parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    #[test]
    fn truncated_certificates_are_errors_not_panics() {
        let p = pki();
        let leaf = der_of(&p.leaf);
        for n in 0..leaf.len() {
            let cut = to_pem("CERTIFICATE", &leaf[..n]);
            assert!(
                split_chain(&[cut, p.sub.clone()]).is_err(),
                "truncated at {n}"
            );
        }
    }

    #[test]
    fn corrupted_certificates_never_panic() {
        let p = pki();
        let sub = der_of(&p.sub);
        for i in 0..sub.len() {
            let mut bad = sub.clone();
            bad[i] ^= 0xff;
            // Any outcome but a panic: a flip in the signature still parses, and breaks the chain.
            let _ = split_chain(&[p.leaf.clone(), to_pem("CERTIFICATE", &bad), p.root.clone()]);
        }
    }

    #[test]
    fn hostile_pem_text_is_refused() {
        let p = pki();
        let body = p
            .leaf
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        for junk in [
            String::new(),
            "-----BEGIN CERTIFICATE-----".to_string(),
            format!("-----BEGIN CERTIFICATE-----\n{body}"),
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_string(),
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                "A".repeat(100_000)
            ),
            "-----BEGIN CERTIFICATE-----\n\u{feff}\u{1F600}\n-----END CERTIFICATE-----\n"
                .to_string(),
            "-----BEGIN -----\n-----END -----\n".to_string(),
            "-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n".repeat(1000),
        ] {
            assert!(
                split_chain(std::slice::from_ref(&junk)).is_err(),
                "{:.80}",
                junk
            );
        }
    }

    #[test]
    fn long_multibyte_subjects_are_clipped_on_a_char_boundary() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "ü".repeat(300));
        let issuer_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(ca_params("Absent-CA"), issuer_key);
        let orphan = params.signed_by(&key, &issuer).unwrap().pem();
        let e = split_chain(&[orphan, pki().root]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{}…", "ü".repeat(MAX_NAME_CHARS - 3))),
            "{e}"
        );
        assert!(!e.contains(&"ü".repeat(MAX_NAME_CHARS)), "{e}");
    }
}
