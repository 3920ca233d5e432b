//! Collector key files: `keygen` creates a key pair on disk (the secret 0600, written once).
//!
//! Reading them back is [`Config`](crate::config::Config)'s job (`keys.private_key_files`).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom as _;

use crate::open::CollectorKey;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why `keygen` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// A key file is already there; keygen never overwrites one.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random,
}

/// What `keygen` made.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// The secret key file (mode 0600).
    pub key_file: PathBuf,
    /// The public key file.
    pub pub_file: PathBuf,
    /// The new key (its `Debug` shows the key id only).
    pub key: CollectorKey,
}

/// Creates a new collector key from the OS random source and writes `dir/collector.key`
/// (hex secret, mode 0600, created exclusively) and `dir/collector.pub` (hex public key).
pub fn keygen(dir: &Path) -> Result<GeneratedKey, KeygenError> {
    let io = |path: &Path, e: std::io::Error| KeygenError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let key_file = dir.join("collector.key");
    let pub_file = dir.join("collector.pub");
    for f in [&key_file, &pub_file] {
        if f.exists() {
            return Err(KeygenError::Exists(f.clone()));
        }
    }
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut seed).map_err(|_| KeygenError::Random)?;
    let key = CollectorKey::from_seed(seed);
    seed.fill(0);
    // Hex of the secret in a fixed buffer that is wiped after writing.
    let mut secret_hex = [0u8; 65];
    let mut secret = key.secret_bytes();
    for (i, b) in secret.iter().enumerate() {
        secret_hex[2 * i] = HEX[usize::from(b >> 4)];
        secret_hex[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    secret_hex[64] = b'\n';
    secret.fill(0);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .and_then(|mut f| f.write_all(&secret_hex).and_then(|()| f.sync_all()));
    secret_hex.fill(0);
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeygenError::Exists(key_file.clone()),
        _ => io(&key_file, e),
    })?;
    let public = format!("{}\n", key.public_key());
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&pub_file)
        .and_then(|mut f| f.write_all(public.as_bytes()))
        .map_err(|e| io(&pub_file, e))?;
    Ok(GeneratedKey { key_file, pub_file, key })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keygen_writes_a_private_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let generated = keygen(&out).unwrap();
        let mode = std::fs::metadata(&generated.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let hex = std::fs::read_to_string(&generated.key_file).unwrap();
        let secret = crate::config::decode_hex32(hex.trim()).unwrap();
        let back = CollectorKey::from_secret_bytes(&secret);
        assert_eq!(back.public_key(), generated.key.public_key());
        let public = std::fs::read_to_string(&generated.pub_file).unwrap();
        assert_eq!(public.trim(), generated.key.public_key().to_string());
        assert!(matches!(keygen(&out), Err(KeygenError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&generated.key_file).unwrap(), hex);
        // Two runs give two different keys.
        let other = keygen(&dir.path().join("other")).unwrap();
        assert_ne!(other.key.key_id(), generated.key.key_id());
    }
}
