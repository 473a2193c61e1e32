//! Writes a throwaway CA and a server certificate for `localhost`,
//! `127.0.0.1` and `::1` signed by it, for the end-to-end TLS tests:
//!
//! ```text
//! cargo run -p duplex-ws --example test_certs -- DIR
//! ```
//!
//! leaves `DIR/ca.pem`, `DIR/cert.pem` and `DIR/key.pem` (ECDSA P-256,
//! PKCS#8). A test uses them once; nothing here is secret.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: test_certs DIR");
        return ExitCode::from(2);
    };
    let ca = duplex_testing::pki::Ca::new("duplex e2e test CA");
    let leaf = ca.leaf(
        &["localhost", "127.0.0.1", "::1"],
        duplex_testing::pki::KeyKind::EcdsaP256,
    );
    let (cert, key) = leaf.write(&dir, duplex_testing::pki::KeyFormat::Pkcs8);
    let ca_path = dir.join("ca.pem");
    if let Err(e) = std::fs::write(&ca_path, ca.pem()) {
        eprintln!("{}: {e}", ca_path.display());
        return ExitCode::FAILURE;
    }
    println!(
        "{}\n{}\n{}",
        ca_path.display(),
        cert.display(),
        key.display()
    );
    ExitCode::SUCCESS
}
