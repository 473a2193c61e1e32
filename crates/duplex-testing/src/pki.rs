//! Certificates made at run time for the TLS tests (rcgen): a CA and leaf
//! certificates it signs, with ECDSA, Ed25519 or RSA keys written as PKCS#8,
//! PKCS#1 or SEC1 PEM.
//!
//! Used by duplex-ws's TLS and HTTP/2 tests, its `test_certs` example
//! (which the e2e scripts run) and the CLI's TLS tests.

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

/// ring cannot generate RSA keys, so the RSA leaf uses this fixed test key
/// (see `data/README.md`); its certificates are still made here.
const RSA_TEST_KEY: &str = include_str!("../data/rsa-2048.key.pem");

/// The kind of a leaf's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048 bits (the fixed key of `data/`).
    Rsa2048,
}

/// How a private key is written to PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `BEGIN PRIVATE KEY`, any key kind.
    Pkcs8,
    /// `BEGIN RSA PRIVATE KEY`.
    Pkcs1,
    /// `BEGIN EC PRIVATE KEY`.
    Sec1,
}

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key.
    pub key: KeyPair,
}

impl Ca {
    /// A self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// Its certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Its certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str], kind: KeyKind) -> Leaf {
        self.leaf_with(names, kind, |_| {})
    }

    /// A server certificate, with `tweak` applied to its parameters (dates…).
    pub fn leaf_with(
        &self,
        names: &[&str],
        kind: KeyKind,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "duplex test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        tweak(&mut params);
        let key = match kind {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
            KeyKind::Rsa2048 => KeyPair::from_pem(RSA_TEST_KEY),
        }
        .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key,
        }
    }
}

impl Leaf {
    /// The private key as PEM in `format`. PKCS#1 and SEC1 are the key
    /// inside the PKCS#8 wrapper (RFC 5208 §5: `privateKey OCTET STRING`).
    pub fn key_pem(&self, format: KeyFormat) -> String {
        let pkcs8 = self.key.serialize_der();
        match format {
            KeyFormat::Pkcs8 => pem("PRIVATE KEY", &pkcs8),
            KeyFormat::Pkcs1 => pem("RSA PRIVATE KEY", pkcs8_inner_key(&pkcs8)),
            KeyFormat::Sec1 => pem("EC PRIVATE KEY", pkcs8_inner_key(&pkcs8)),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, format: KeyFormat) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, self.key_pem(format)).unwrap();
        (cert, key)
    }
}

/// A fresh, empty directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("duplex-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, header) = match input[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let octets = (n & 0x7f) as usize;
            let len = input[2..2 + octets]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + octets)
        }
    };
    (tag, &input[header..header + len], &input[header + len..])
}

/// The `privateKey` of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_inner_key(pkcs8: &[u8]) -> &[u8] {
    let (_, info, _) = der_element(pkcs8);
    let (_, _version, rest) = der_element(info);
    let (_, _algorithm, rest) = der_element(rest);
    let (tag, key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key
}
