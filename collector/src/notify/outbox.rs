//! The durable outbox: one sled entry per (receiver, event), in order per receiver.
//!
//! Key: the receiver name (`[A-Za-z0-9_-]+`, so never a 0 byte), a 0 byte, then a sequence
//! number (u64, big-endian) shared by all receivers. Value: JSON `{"enqueued_ms", "event"}`.
//! A prefix scan over `name ‖ 0` gives that receiver's entries oldest first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{NotifyConfig, NotifyError};
use crate::detect::{AlertEvent, AlertId};

/// One queued notification.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// When it was queued (ms since the epoch): it expires `give_up_after_ms` later.
    pub(crate) enqueued_ms: u64,
    /// What to send.
    pub(crate) event: AlertEvent,
}

/// What a prefix scan found at the head of a receiver's queue.
pub(crate) enum Head {
    /// The oldest entry.
    Entry(sled::IVec, Box<Entry>),
    /// The oldest entry does not decode (written by an incompatible version): drop it.
    Corrupt(sled::IVec, String),
}

/// Durable queue of notifications in a sled tree (the collector opens it as
/// `store.open_tree("outbox")`). Cheap to clone; clones share the tree.
#[derive(Clone)]
pub struct Outbox {
    tree: sled::Tree,
    /// The next sequence number. Held while an entry is inserted, so entries appear in
    /// sequence order and the sender never sees a later entry before an earlier one.
    next_seq: Arc<Mutex<u64>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("entries", &self.tree.len()).finish()
    }
}

fn prefix(receiver: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(receiver.len() + 1);
    p.extend_from_slice(receiver.as_bytes());
    p.push(0);
    p
}

/// The receiver name and sequence number of a key.
fn split_key(key: &[u8]) -> Option<(&str, u64)> {
    let zero = key.iter().position(|&b| b == 0)?;
    let seq = <[u8; 8]>::try_from(key.get(zero + 1..)?).ok()?;
    Some((std::str::from_utf8(&key[..zero]).ok()?, u64::from_be_bytes(seq)))
}

impl Outbox {
    /// Wraps `tree`; continues the sequence after the entries already in it.
    pub fn open(tree: sled::Tree) -> Outbox {
        let next = tree
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| split_key(&k).map(|(_, seq)| seq))
            .max()
            .map_or(0, |s| s + 1);
        Outbox { tree, next_seq: Arc::new(Mutex::new(next)) }
    }

    /// Queues `event` once for every receiver that wants it: none for an inhibited alert;
    /// for a retrospective, receivers with `send_retrospective`; for a resolved, receivers
    /// with `send_resolved`. Durable (flushed) before it returns. Returns the number of
    /// entries queued.
    pub fn enqueue(
        &self,
        config: &NotifyConfig,
        event: &AlertEvent,
        now_ms: u64,
    ) -> Result<usize, NotifyError> {
        if !event.alert().notifies() {
            return Ok(0);
        }
        let wanted: Vec<&str> = config
            .receivers
            .iter()
            .filter(|r| match event {
                AlertEvent::Fired(_) => true,
                AlertEvent::Resolved(_) => r.send_resolved,
                AlertEvent::Retrospective(_) => r.send_retrospective,
                // Inhibited by construction (returned above); never a notification.
                AlertEvent::Regrouped(_) => false,
            })
            .map(|r| r.name.as_str())
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let value = serde_json::to_vec(&Entry { enqueued_ms: now_ms, event: event.clone() })
            .map_err(|e| NotifyError::Encode(e.to_string()))?;
        {
            let mut next = self.next_seq.lock().unwrap_or_else(PoisonError::into_inner);
            for name in &wanted {
                let mut key = prefix(name);
                key.extend_from_slice(&next.to_be_bytes());
                self.tree
                    .insert(key, value.as_slice())
                    .map_err(|e| NotifyError::Store(format!("inserting an entry: {e}")))?;
                *next += 1;
            }
        }
        self.tree.flush().map_err(|e| NotifyError::Store(format!("flushing: {e}")))?;
        Ok(wanted.len())
    }

    /// Entries waiting, over all receivers.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The oldest entry of `receiver`.
    pub(crate) fn head(&self, receiver: &str) -> Result<Option<Head>, NotifyError> {
        match self.tree.scan_prefix(prefix(receiver)).next() {
            None => Ok(None),
            Some(Err(e)) => Err(NotifyError::Store(format!("reading: {e}"))),
            Some(Ok((key, value))) => Ok(Some(match serde_json::from_slice::<Entry>(&value) {
                Ok(entry) => Head::Entry(key, Box::new(entry)),
                Err(e) => Head::Corrupt(key, e.to_string()),
            })),
        }
    }

    /// Removes a delivered or dropped entry (and flushes: it must not be sent again).
    pub(crate) fn remove(&self, key: &[u8]) -> Result<(), NotifyError> {
        self.tree.remove(key).map_err(|e| NotifyError::Store(format!("removing: {e}")))?;
        self.tree.flush().map_err(|e| NotifyError::Store(format!("flushing: {e}")))?;
        Ok(())
    }

    /// Entries waiting for `receiver`.
    pub(crate) fn pending(&self, receiver: &str) -> usize {
        self.tree.scan_prefix(prefix(receiver)).count()
    }

    /// Ids of the alerts with an entry waiting for `receiver`.
    pub(crate) fn pending_ids(&self, receiver: &str) -> HashSet<AlertId> {
        self.tree
            .scan_prefix(prefix(receiver))
            .values()
            .filter_map(Result::ok)
            .filter_map(|v| serde_json::from_slice::<Entry>(&v).ok())
            .map(|e| e.event.alert().id)
            .collect()
    }

    /// Removes the entries of receivers not in `known` (removed from the config); returns how
    /// many went, per receiver name.
    pub(crate) fn remove_unknown(&self, known: &[&str]) -> Vec<(String, usize)> {
        let mut gone: Vec<(String, usize)> = Vec::new();
        let keys: Vec<sled::IVec> = self.tree.iter().keys().filter_map(Result::ok).collect();
        for key in keys {
            let name = split_key(&key).map_or("<unreadable key>", |(n, _)| n);
            if known.contains(&name) {
                continue;
            }
            if self.tree.remove(&key).is_ok() {
                match gone.iter_mut().find(|(n, _)| n == name) {
                    Some((_, count)) => *count += 1,
                    None => gone.push((name.to_owned(), 1)),
                }
            }
        }
        if !gone.is_empty() {
            let _ = self.tree.flush();
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Alert, AlertKind, AlertState, SliceDim, SliceKey};
    use crate::notify::{ReceiverConfig, ReceiverKind};

    fn alert(id: u64, inhibited: bool) -> Alert {
        Alert {
            id: AlertId(id),
            slice: SliceKey::new("shop", SliceDim::Asn(64500)),
            kind: AlertKind::Failures,
            state: AlertState::Firing,
            start_ms: 1,
            end_ms: None,
            raised_at_ms: 2,
            inhibited_by: inhibited.then_some(AlertId(99)),
            score: 1.0,
            observed_ratio: 0.5,
            baseline_ratio: 0.01,
            clients: 5,
            networks: 5,
            active_clients: 10,
            breakdown: Default::default(),
            top_asns: vec![],
            top_countries: vec![],
            supersedes: None,
        }
    }

    fn config() -> NotifyConfig {
        let mut quiet = ReceiverConfig::new("quiet", ReceiverKind::Webhook, "http://127.0.0.1:1/");
        quiet.send_resolved = false;
        NotifyConfig {
            receivers: vec![
                ReceiverConfig::new("am", ReceiverKind::Alertmanager, "http://127.0.0.1:1"),
                ReceiverConfig::new("hook", ReceiverKind::Webhook, "http://127.0.0.1:1/"),
                quiet,
            ],
            ..NotifyConfig::default()
        }
    }

    fn head_id(outbox: &Outbox, receiver: &str) -> Option<(u64, &'static str)> {
        match outbox.head(receiver).unwrap()? {
            Head::Entry(_, e) => Some((
                e.event.alert().id.0,
                match e.event {
                    AlertEvent::Fired(_) => "fired",
                    AlertEvent::Resolved(_) => "resolved",
                    AlertEvent::Retrospective(_) => "retrospective",
                    AlertEvent::Regrouped(_) => "regrouped",
                },
            )),
            Head::Corrupt(..) => None,
        }
    }

    #[test]
    fn fans_out_by_receiver_wishes_and_keeps_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = config();
        {
            let db = sled::open(dir.path()).unwrap();
            let outbox = Outbox::open(db.open_tree("outbox").unwrap());
            assert_eq!(outbox.enqueue(&c, &AlertEvent::Fired(alert(1, true)), 10).unwrap(), 0);
            assert_eq!(outbox.enqueue(&c, &AlertEvent::Fired(alert(1, false)), 10).unwrap(), 3);
            let mut resolved = alert(1, false);
            resolved.state = AlertState::Resolved;
            assert_eq!(outbox.enqueue(&c, &AlertEvent::Resolved(resolved), 11).unwrap(), 2);
            assert_eq!(
                outbox.enqueue(&c, &AlertEvent::Retrospective(alert(2, false)), 12).unwrap(),
                2,
                "alertmanager skips retrospectives by default"
            );
            assert_eq!(outbox.len(), 7);
            assert_eq!(outbox.pending("am"), 2);
            assert_eq!(outbox.pending("quiet"), 2);
        }
        // Reopened as the store does: the dropped `Db`'s threads may hold its lock a moment.
        let db = crate::store::open_sled(dir.path(), 8 << 20).unwrap();
        let outbox = Outbox::open(db.open_tree("outbox").unwrap());
        assert_eq!(outbox.len(), 7);
        assert_eq!(head_id(&outbox, "am"), Some((1, "fired")));
        let Some(Head::Entry(key, _)) = outbox.head("am").unwrap() else { panic!("an entry") };
        outbox.remove(&key).unwrap();
        assert_eq!(head_id(&outbox, "am"), Some((1, "resolved")));
        assert_eq!(head_id(&outbox, "quiet"), Some((1, "fired")));
        assert_eq!(outbox.pending_ids("hook"), HashSet::from([AlertId(1), AlertId(2)]));

        // New entries continue the sequence after the reopened ones.
        outbox.enqueue(&c, &AlertEvent::Fired(alert(3, false)), 13).unwrap();
        let Some(Head::Entry(key, _)) = outbox.head("am").unwrap() else { panic!("an entry") };
        outbox.remove(&key).unwrap();
        assert_eq!(head_id(&outbox, "am"), Some((3, "fired")));

        let gone = outbox.remove_unknown(&["am", "hook"]);
        assert_eq!(gone, vec![("quiet".to_owned(), 3)]);
        assert_eq!(outbox.pending("quiet"), 0);
        assert_eq!(outbox.pending("hook"), 4);
    }

    #[test]
    fn corrupt_entries_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("outbox").unwrap();
        let mut key = prefix("hook");
        key.extend_from_slice(&7u64.to_be_bytes());
        tree.insert(key, b"not json".as_slice()).unwrap();
        let outbox = Outbox::open(tree);
        assert!(matches!(outbox.head("hook").unwrap(), Some(Head::Corrupt(..))));
        outbox.enqueue(&config(), &AlertEvent::Fired(alert(1, false)), 1).unwrap();
        // The sequence continued after the existing key 7.
        let keys: Vec<u64> =
            outbox.tree.iter().keys().map(|k| split_key(&k.unwrap()).unwrap().1).collect();
        assert_eq!(keys.iter().max(), Some(&10));
    }
}
