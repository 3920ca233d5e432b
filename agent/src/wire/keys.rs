//! Keys and key ids. Secret keys never print: their `Debug` shows the public half only.

use core::fmt;
use core::str::FromStr;

use ring::signature::{self, Ed25519KeyPair, KeyPair};

use crate::entropy::Entropy;

/// A key or key id given as text was malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: expected {expected} hex digits, got {got:?}")]
pub struct KeyError {
    what: &'static str,
    expected: usize,
    got: String,
}

fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], KeyError> {
    let err = || KeyError { what, expected: N * 2, got: s.chars().take(80).collect() };
    let s = s.trim();
    if s.len() != N * 2 || !s.is_ascii() {
        return Err(err());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map_err(|_| err())?;
    }
    Ok(out)
}

pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str(&crate::text::hex(bytes))
}

macro_rules! hex_newtype {
    ($(#[$doc:meta])* $name:ident, $len:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = KeyError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex::<$len>($what, s).map($name)
            }
        }
    };
}

hex_newtype! {
    /// The id of a collector key: the first 8 bytes of
    /// SHA-256("vantage/v1 key id\0" || public key). Envelopes name the key they are sealed to.
    KeyId, 8, "key id"
}

hex_newtype! {
    /// A collector's X25519 public key (HPKE recipient key). One per deployment, shared by all
    /// its collectors; several may be live during rotation.
    CollectorPublicKey, 32, "collector public key"
}

hex_newtype! {
    /// An agent's Ed25519 public key: the identity of one install, created at opt-in.
    AgentPublicKey, 32, "agent public key"
}

impl CollectorPublicKey {
    /// The key id envelopes sealed to this key carry.
    pub fn key_id(&self) -> KeyId {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"vantage/v1 key id\0");
        ctx.update(&self.0);
        let digest = ctx.finish();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        KeyId(id)
    }
}

impl AgentPublicKey {
    /// True if `signature` is this key's Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// An install's Ed25519 signing key. Created at opt-in from fresh randomness; deleted when
/// consent is withdrawn (a new opt-in gets a new, unlinkable key).
pub struct AgentIdentity {
    // Wiped when the identity is dropped. (ring's key pair cannot be wiped; it holds the
    // expanded key for as long as the identity lives.)
    seed: zeroize::Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
}

impl AgentIdentity {
    /// A new identity from 32 bytes of `rng` (which must be cryptographically secure).
    pub fn generate(rng: &mut impl Entropy) -> AgentIdentity {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        AgentIdentity::from_secret_bytes(seed)
    }

    /// Restores an identity from its 32 secret seed bytes (as kept by the agent's store).
    pub fn from_secret_bytes(seed: [u8; 32]) -> AgentIdentity {
        // RFC 8032 accepts any 32-byte seed, so this cannot fail; ring only reports errors for
        // the checked variant that compares against a given public key.
        // Not `expect`: Debug-printing `KeyRejected` would link string escaping into the
        // WebAssembly module for a panic that cannot happen.
        let Ok(pair) = Ed25519KeyPair::from_seed_unchecked(&seed) else {
            unreachable!("every 32-byte string is a valid Ed25519 seed");
        };
        AgentIdentity { seed: zeroize::Zeroizing::new(seed), pair }
    }

    /// The 32 secret seed bytes, for the agent's own durable store only. Never log them.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key.
    pub fn public_key(&self) -> AgentPublicKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        AgentPublicKey(pk)
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    #[test]
    fn hex_round_trips_and_errors_name_the_key() {
        let pk: CollectorPublicKey =
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a".parse().unwrap();
        assert_eq!(pk.to_string().parse::<CollectorPublicKey>().unwrap(), pk);
        let err = "abc".parse::<CollectorPublicKey>().unwrap_err().to_string();
        assert!(err.contains("collector public key") && err.contains("64 hex digits"), "{err}");
        assert!("zz".repeat(8).parse::<KeyId>().is_err());
        assert!("é".repeat(16).parse::<KeyId>().is_err());
        let id = pk.key_id();
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
    }

    #[test]
    fn identity_signs_and_debug_hides_the_secret() {
        let mut rng = SeededEntropy::insecure_from_seed([9; 32]);
        let id = AgentIdentity::generate(&mut rng);
        let sig = id.sign(b"hello");
        assert!(id.public_key().verify(b"hello", &sig));
        assert!(!id.public_key().verify(b"hellO", &sig));
        let restored = AgentIdentity::from_secret_bytes(*id.secret_bytes());
        assert_eq!(restored.public_key(), id.public_key());
        let debug = format!("{id:?}");
        let secret_hex: String = id.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&secret_hex));
        assert!(debug.contains(&id.public_key().to_string()));
    }

    #[test]
    fn rfc8032_test_1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let id = AgentIdentity::from_secret_bytes(seed.try_into().unwrap());
        assert_eq!(
            id.public_key().to_string(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(id.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
