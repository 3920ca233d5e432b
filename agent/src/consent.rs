//! Consent: the agent collects nothing until the user opts in, and forgets everything when they
//! opt out.
//!
//! [`Consent`] is a sans-IO state machine. Transitions return [`ConsentAction`]s that the
//! runtime carries out (write or delete the key, delete the buffer, stop sending); the machine
//! itself touches no storage. It holds the install's [`AgentIdentity`] while consent is granted
//! and only then.
//!
//! ```text
//!            new()                  grant(now, rng)
//!   ───────▶ Denied ─────────────────────────────────────────▶ Granted { since }
//!                                  new key, [PersistIdentity]     │   ▲     ▲
//!                                                                 │   │     │ restore(secret,
//!                 withdraw(now): [StopSending, DeleteBuffer,      │   │     │ since): no actions
//!                                 DeleteIdentity], key forgotten  ▼   │
//!                                                   Withdrawn { at } ─┘ grant(now, rng):
//!                                                                       a NEW, unlinkable key,
//!                                                                       [PersistIdentity]
//!
//!   grant when Granted, withdraw when Denied or Withdrawn: no change, no actions.
//! ```
//!
//! ## What happens to reports
//!
//! - **Before consent** (`Denied`, `Withdrawn`), [`Consent::admit`] refuses and `record()`
//!   keeps nothing: no report is built, written or counted. This is *not* a drop: nothing was
//!   collected, so there is no outcome to account for, and counting would itself be data about
//!   a user who has not agreed.
//! - **At withdrawal**, reports that were already collected (the durable buffer, the open
//!   coalescer groups) are deleted, and each ends with the outcome
//!   [`DropReason::ConsentWithdrawn`]: see [`record_withdrawn_drops`]. Those counts are for the
//!   agent's own accounting (its stats and metrics). They must not ride in a later batch: that
//!   batch would be signed with the next opt-in's key, and "N reports were dropped at
//!   withdrawal" would link the new key to the old one.

use crate::drops::{DropCounts, DropReason};
use crate::entropy::Entropy;
use crate::report::UnixMillis;
use crate::wire::AgentIdentity;

/// Where consent stands. Only [`ConsentState::Granted`] lets reports in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsentState {
    /// No consent has been given in this process (the default, also after a restart that found
    /// no persisted grant). Nothing is collected.
    Denied,
    /// Consent was given at `since`; the agent has an identity and may collect and send.
    Granted {
        /// When consent was given (or, after [`Consent::restore`], the persisted time).
        since: UnixMillis,
    },
    /// Consent was withdrawn at `at`, in this process. Behaves like `Denied`; kept apart only
    /// so the app can show when. Not persisted: after a restart the state is `Denied`.
    Withdrawn {
        /// When consent was withdrawn.
        at: UnixMillis,
    },
}

/// Something the runtime must do after a transition, in the order returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsentAction {
    /// Write the granted state durably: the identity's secret bytes
    /// ([`AgentIdentity::secret_bytes`] of [`Consent::identity`]) and `since`, so that
    /// [`Consent::restore`] can bring them back after a restart.
    PersistIdentity {
        /// When consent was given.
        since: UnixMillis,
    },
    /// Cancel uploads in flight and send nothing more: no envelope signed with the old key may
    /// leave the device after withdrawal.
    StopSending,
    /// Delete every report already collected: the durable buffer, open coalescer groups, and
    /// the pending drop and target counts of the next batch. Count the deleted reports with
    /// [`record_withdrawn_drops`].
    DeleteBuffer,
    /// Delete the persisted identity key and grant.
    DeleteIdentity,
}

/// What withdrawal asks of the runtime, in order. A runtime that finds leftovers at startup
/// without a persisted grant (for example after a crash in the middle of a withdrawal) can
/// carry these out again: each is idempotent.
pub const WITHDRAWAL_ACTIONS: [ConsentAction; 3] =
    [ConsentAction::StopSending, ConsentAction::DeleteBuffer, ConsentAction::DeleteIdentity];

/// The report was refused because consent is not granted. Nothing was collected: this is not
/// a drop and is not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("consent not granted: nothing is collected before the user opts in")]
#[non_exhaustive]
pub struct NotConsented;

// The identity lives inside the `Granted` variant, so "granted without a key" and "denied with a
// key" cannot be represented.
#[derive(Debug)]
enum Inner {
    Denied,
    Granted { since: UnixMillis, identity: AgentIdentity },
    Withdrawn { at: UnixMillis },
}

/// The consent state machine; denied by default. See the [module docs](self) for the diagram.
///
/// `Debug` shows the state and the public key only, never the secret key.
#[derive(Debug)]
pub struct Consent {
    inner: Inner,
}

impl Default for Consent {
    /// Denied.
    fn default() -> Self {
        Consent::new()
    }
}

impl Consent {
    /// Denied: nothing is collected until [`grant`](Self::grant).
    pub fn new() -> Consent {
        Consent { inner: Inner::Denied }
    }

    /// Consent that was granted at `since` with the identity whose secret bytes the runtime
    /// persisted (after a [`ConsentAction::PersistIdentity`]). Returns no actions: the state is
    /// already on disk.
    pub fn restore(identity_secret: [u8; 32], since: UnixMillis) -> Consent {
        let identity = AgentIdentity::from_secret_bytes(identity_secret);
        Consent { inner: Inner::Granted { since, identity } }
    }

    /// The user opts in at `now`.
    ///
    /// From `Denied` or `Withdrawn`: creates a new identity from `rng` (which must be
    /// cryptographically secure), unrelated to any earlier one, and returns
    /// `[PersistIdentity { since: now }]`. When already granted: nothing changes (same key, same
    /// `since`) and no actions are returned.
    #[must_use = "the runtime must carry out the returned actions"]
    pub fn grant(&mut self, now: UnixMillis, rng: &mut impl Entropy) -> Vec<ConsentAction> {
        if self.is_granted() {
            return Vec::new();
        }
        let identity = AgentIdentity::generate(rng);
        self.inner = Inner::Granted { since: now, identity };
        vec![ConsentAction::PersistIdentity { since: now }]
    }

    /// The user opts out at `now`.
    ///
    /// From `Granted`: forgets the identity and returns [`WITHDRAWAL_ACTIONS`]
    /// (`[StopSending, DeleteBuffer, DeleteIdentity]`), to be done in that order. From `Denied`
    /// or `Withdrawn`: nothing changes and no actions are returned.
    ///
    /// The identity's memory is released but not overwritten; the persisted copy is what
    /// `DeleteIdentity` removes.
    #[must_use = "the runtime must carry out the returned actions"]
    pub fn withdraw(&mut self, now: UnixMillis) -> Vec<ConsentAction> {
        if !self.is_granted() {
            return Vec::new();
        }
        self.inner = Inner::Withdrawn { at: now };
        WITHDRAWAL_ACTIONS.to_vec()
    }

    /// The current state.
    pub fn state(&self) -> ConsentState {
        match self.inner {
            Inner::Denied => ConsentState::Denied,
            Inner::Granted { since, .. } => ConsentState::Granted { since },
            Inner::Withdrawn { at } => ConsentState::Withdrawn { at },
        }
    }

    /// True when consent is granted.
    pub fn is_granted(&self) -> bool {
        matches!(self.inner, Inner::Granted { .. })
    }

    /// The install's identity, while consent is granted.
    pub fn identity(&self) -> Option<&AgentIdentity> {
        match &self.inner {
            Inner::Granted { identity, .. } => Some(identity),
            Inner::Denied | Inner::Withdrawn { .. } => None,
        }
    }

    /// The gate at the top of `record()`: `Ok` when consent is granted. On `Err` the caller
    /// keeps nothing (no report, no count, no write): see [`NotConsented`].
    pub fn admit(&self) -> Result<(), NotConsented> {
        if self.is_granted() { Ok(()) } else { Err(NotConsented) }
    }
}

/// Counts `buffered` reports deleted at withdrawal (after [`ConsentAction::DeleteBuffer`]) as
/// [`DropReason::ConsentWithdrawn`] in `drops`.
///
/// Use a `DropCounts` for the agent's own accounting, not the one that rides in the next batch:
/// see the [module docs](self).
pub fn record_withdrawn_drops(drops: &mut DropCounts, buffered: u64) {
    drops.add(DropReason::ConsentWithdrawn, buffered);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    fn rng(seed: u8) -> SeededEntropy {
        SeededEntropy::insecure_from_seed([seed; 32])
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn denied_by_default_and_admits_nothing() {
        for c in [Consent::new(), Consent::default()] {
            assert_eq!(c.state(), ConsentState::Denied);
            assert!(!c.is_granted());
            assert!(c.identity().is_none());
            assert_eq!(c.admit(), Err(NotConsented));
        }
        assert!(NotConsented.to_string().contains("consent not granted"));
    }

    #[test]
    fn grant_creates_an_identity_and_asks_to_persist_it() {
        let mut c = Consent::new();
        let actions = c.grant(UnixMillis(1_000), &mut rng(1));
        assert_eq!(actions, [ConsentAction::PersistIdentity { since: UnixMillis(1_000) }]);
        assert_eq!(c.state(), ConsentState::Granted { since: UnixMillis(1_000) });
        assert!(c.is_granted());
        assert_eq!(c.admit(), Ok(()));
        assert!(c.identity().is_some());
    }

    #[test]
    fn granting_twice_is_idempotent() {
        let mut c = Consent::new();
        let _ = c.grant(UnixMillis(1_000), &mut rng(1));
        let key = c.identity().map(AgentIdentity::public_key);
        assert!(c.grant(UnixMillis(2_000), &mut rng(2)).is_empty());
        assert_eq!(c.identity().map(AgentIdentity::public_key), key);
        assert_eq!(c.state(), ConsentState::Granted { since: UnixMillis(1_000) });
    }

    #[test]
    fn withdraw_stops_sending_then_deletes_buffer_and_identity() {
        let mut c = Consent::new();
        let _ = c.grant(UnixMillis(1_000), &mut rng(1));
        let actions = c.withdraw(UnixMillis(5_000));
        assert_eq!(
            actions,
            [
                ConsentAction::StopSending,
                ConsentAction::DeleteBuffer,
                ConsentAction::DeleteIdentity
            ]
        );
        assert_eq!(c.state(), ConsentState::Withdrawn { at: UnixMillis(5_000) });
        assert!(c.identity().is_none());
        assert_eq!(c.admit(), Err(NotConsented));
    }

    #[test]
    fn withdrawing_without_consent_does_nothing() {
        let mut c = Consent::new();
        assert!(c.withdraw(UnixMillis(1)).is_empty());
        assert_eq!(c.state(), ConsentState::Denied);
        let _ = c.grant(UnixMillis(2), &mut rng(1));
        let _ = c.withdraw(UnixMillis(3));
        assert!(c.withdraw(UnixMillis(4)).is_empty());
        assert_eq!(c.state(), ConsentState::Withdrawn { at: UnixMillis(3) });
    }

    #[test]
    fn a_new_grant_after_withdrawal_gets_a_new_key() {
        let mut r = rng(1);
        let mut c = Consent::new();
        let _ = c.grant(UnixMillis(1), &mut r);
        let first = c.identity().map(AgentIdentity::public_key).expect("granted");
        let _ = c.withdraw(UnixMillis(2));
        let actions = c.grant(UnixMillis(3), &mut r);
        assert_eq!(actions, [ConsentAction::PersistIdentity { since: UnixMillis(3) }]);
        let second = c.identity().map(AgentIdentity::public_key).expect("granted again");
        assert_ne!(first, second);
        assert_eq!(c.state(), ConsentState::Granted { since: UnixMillis(3) });
    }

    #[test]
    fn restore_brings_back_the_persisted_grant() {
        let mut c = Consent::new();
        let _ = c.grant(UnixMillis(7), &mut rng(1));
        let id = c.identity().expect("granted");
        let (secret, public) = (*id.secret_bytes(), id.public_key());
        let restored = Consent::restore(secret, UnixMillis(7));
        assert_eq!(restored.state(), ConsentState::Granted { since: UnixMillis(7) });
        assert_eq!(restored.identity().map(AgentIdentity::public_key), Some(public));
        assert_eq!(restored.admit(), Ok(()));
        // A restored grant withdraws like any other.
        let mut restored = restored;
        assert_eq!(restored.withdraw(UnixMillis(8)), WITHDRAWAL_ACTIONS);
    }

    #[test]
    fn debug_never_prints_the_secret_key() {
        let mut c = Consent::new();
        let _ = c.grant(UnixMillis(1), &mut rng(9));
        let id = c.identity().expect("granted");
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains(&hex(id.secret_bytes())), "{debug}");
        assert!(debug.contains(&id.public_key().to_string()), "{debug}");
    }

    #[test]
    fn withdrawn_reports_are_counted_with_their_reason() {
        let mut drops = DropCounts::new();
        record_withdrawn_drops(&mut drops, 0);
        assert!(drops.is_empty());
        record_withdrawn_drops(&mut drops, 12);
        assert_eq!(drops.count(DropReason::ConsentWithdrawn), 12);
        assert_eq!(drops.total(), 12);
    }
}
