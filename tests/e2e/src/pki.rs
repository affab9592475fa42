//! Throw-away PKI: the control plane's CA, serving and admin certs, SA keys, and test CSRs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Files of the control plane's PKI, so flags and kubeconfigs can point at them.
#[derive(Debug, Clone)]
pub struct ControlPlanePki {
    /// CA certificate (trust anchor for the apiserver and for client certs).
    pub ca_crt: PathBuf,
    /// CA certificate PEM, to embed in kubeconfigs.
    pub ca_pem: String,
    /// kube-apiserver serving certificate (IP SAN 127.0.0.1, DNS localhost).
    pub apiserver_crt: PathBuf,
    /// Its private key.
    pub apiserver_key: PathBuf,
    /// Admin client certificate PEM (O=system:masters), to embed in the admin kubeconfig.
    pub admin_crt_pem: String,
    /// Its private key PEM.
    pub admin_key_pem: String,
    /// Service-account token signing key (private).
    pub sa_key: PathBuf,
    /// Service-account token verification key (public).
    pub sa_pub: PathBuf,
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

impl ControlPlanePki {
    /// Generates CA, apiserver serving cert, admin client cert and SA key pair into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = dn("e2e-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let server_key = KeyPair::generate()?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server.distinguished_name = dn("kube-apiserver", None);
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name = dn("e2e-admin", Some("system:masters"));
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        let pki = Self {
            ca_crt: dir.join("ca.crt"),
            ca_pem: ca_cert.pem(),
            apiserver_crt: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_crt_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        write(&pki.ca_crt, &pki.ca_pem)?;
        write(&dir.join("ca.key"), &ca_key.serialize_pem())?;
        write(&pki.apiserver_crt, &server_cert.pem())?;
        write(&pki.apiserver_key, &server_key.serialize_pem())?;
        write(&dir.join("admin.crt"), &pki.admin_crt_pem)?;
        write(&dir.join("admin.key"), &pki.admin_key_pem)?;
        write(&pki.sa_key, &sa_key.serialize_pem())?;
        write(&pki.sa_pub, &sa_key.public_key_pem())?;
        Ok(pki)
    }
}

/// A PKCS#10 CSR (PEM and DER) with CN `cn` and DNS SANs, for CertificateRequests and for
/// matching enrollments in the simulator by the DER's SHA-256.
pub fn make_csr(cn: &str, dns_sans: &[&str]) -> Result<(String, Vec<u8>)> {
    let (pem, der, _key) = make_csr_with_key(cn, dns_sans)?;
    Ok((pem, der))
}

/// Like [`make_csr`] but also returns the private key PEM, for tests that check key matching.
pub fn make_csr_with_key(cn: &str, dns_sans: &[&str]) -> Result<(String, Vec<u8>, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        dns_sans
            .iter()
            .map(|s| (*s).to_string())
            .collect::<Vec<_>>(),
    )?;
    params.distinguished_name = dn(cn, None);
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, csr.der().to_vec(), key.serialize_pem()))
}
