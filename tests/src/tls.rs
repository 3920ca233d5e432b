//! Test certificates: a private CA and leaf certificates signed by it, generated per test run
//! with rcgen, in PEM (what the collector reads from files) and in rustls types.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate with its private key.
pub struct TestCert {
    /// Certificate chain in PEM: the leaf, then the CA.
    pub cert_pem: String,
    /// PKCS#8 private key in PEM.
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate CA key");
        TestCa { issuer: CertifiedIssuer::self_signed(params, key).expect("self-sign CA") }
    }

    /// The CA certificate in PEM, for trust stores (agent config, Chromium's NSS db).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A root store that trusts only this CA.
    pub fn root_store(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der()).expect("add test CA");
        roots
    }

    /// A currently valid leaf for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> TestCert {
        self.leaf_with(names, false)
    }

    /// A leaf for `names` that expired in 2001.
    pub fn expired_leaf(&self, names: &[&str]) -> TestCert {
        self.leaf_with(names, true)
    }

    fn leaf_with(&self, names: &[&str], expired: bool) -> TestCert {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("valid SANs");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        TestCert {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem()),
            key_pem: key.serialize_pem(),
        }
    }
}

impl TestCert {
    /// A self-signed certificate for `names` marked as a CA (`basicConstraints CA:TRUE`), as
    /// `openssl req -x509` makes by default: trusted as a root, it still fails as a server
    /// certificate (`CaUsedAsEndEntity`).
    pub fn self_signed_ca(names: &[&str]) -> TestCert {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("valid SANs");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("self-signed"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("generate key");
        let cert = params.self_signed(&key).expect("self-sign");
        TestCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// The chain as rustls certificates.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("PEM we generated parses")
    }

    /// The private key as a rustls key.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("PEM we generated parses")
    }

    /// A rustls server config (ring provider) serving this certificate, ALPN h2 and http/1.1.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let mut config = rustls::ServerConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(self.chain(), self.key())
        .expect("generated certificate and key match");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// Writes `cert.pem` and `key.pem` into `dir`, returning their paths.
    pub fn write_to(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
        std::fs::write(&key, &self.key_pem).expect("write key.pem");
        (cert, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_verifies_against_its_ca_only() {
        let ca = TestCa::new("vantage test CA");
        let leaf = ca.leaf(&["collector.test", "127.0.0.1"]);
        assert_eq!(leaf.chain().len(), 2);
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            ca.root_store().into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("collector.test").unwrap();
        let now = rustls::pki_types::UnixTime::now();
        use rustls::client::danger::ServerCertVerifier;
        verifier.verify_server_cert(&leaf.chain()[0], &leaf.chain()[1..], &name, &[], now).unwrap();
        let other = TestCa::new("other").leaf(&["collector.test"]);
        assert!(verifier.verify_server_cert(&other.chain()[0], &[], &name, &[], now).is_err());
    }
}
