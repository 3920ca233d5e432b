//! Who holds the connections of a listener, and which one to let go under pressure.
//!
//! A [`ConnTracker`] belongs to one connection budget (the public listeners share one, the admin
//! listener has its own). It counts open connections per source prefix (/24 for IPv4, /48 for
//! IPv6: [`SourcePrefix`]) and refuses a new one when its prefix already holds
//! `per_prefix_max`, so one network cannot take the whole budget.
//!
//! Each connection has a [`ConnState`] that records *request* activity: when the last request
//! started or ended and how many are in progress. Bytes that are not requests (HTTP/2 PING and
//! SETTINGS frames, a header trickled one byte at a time) do not count, so they cannot keep an
//! idle connection open. When the budget is full, [`ConnTracker::reap_idle`] picks an idle
//! connection (no request in progress) from the prefix holding the most connections, oldest
//! activity first, and tells it to close; dropping a connection with no request in progress
//! loses nothing that was acknowledged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::ratelimit::SourcePrefix;

/// `last_ms` value of a connection that has not started a request yet.
const NEVER: u64 = u64::MAX;

/// Request activity of one connection.
pub(crate) struct ConnState {
    prefix: SourcePrefix,
    start: Instant,
    /// Requests in progress.
    active: AtomicU32,
    /// When a request last started or ended, in ms since `start`; [`NEVER`] before the first.
    last_ms: AtomicU64,
    /// Set once the tracker chose this connection to close.
    reaped: AtomicBool,
    /// Woken when the tracker chose this connection to close.
    reap: Notify,
}

impl ConnState {
    fn new(prefix: SourcePrefix, start: Instant) -> ConnState {
        ConnState {
            prefix,
            start,
            active: AtomicU32::new(0),
            last_ms: AtomicU64::new(NEVER),
            reaped: AtomicBool::new(false),
            reap: Notify::new(),
        }
    }

    fn touch(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(NEVER - 1)
            .min(NEVER - 1);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request started; the guard marks its end when dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.touch(Instant::now());
        RequestGuard(self.clone())
    }

    /// Requests in progress.
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Restarts the idle clock (after the connection was asked to close, so it gets a fresh
    /// grace period).
    pub(crate) fn restart_clock(&self, now: Instant) {
        self.touch(now);
    }

    /// When request activity last happened; `None` before the first request.
    fn last(&self) -> Option<Instant> {
        match self.last_ms.load(Ordering::Relaxed) {
            NEVER => None,
            ms => Some(self.start + Duration::from_millis(ms)),
        }
    }

    /// When the connection counts as idle for too long: `first` after the start if no request
    /// came yet, `idle` after the last request activity otherwise. While a request is in
    /// progress the time is only a point to look again.
    pub(crate) fn idle_deadline(&self, first: Duration, idle: Duration) -> Instant {
        match self.last() {
            None => self.start + first,
            Some(last) => last + idle,
        }
    }

    /// True when no request is in progress and the deadline has passed.
    pub(crate) fn idle_expired(&self, first: Duration, idle: Duration, now: Instant) -> bool {
        self.active() == 0 && now >= self.idle_deadline(first, idle)
    }

    /// Resolves once the tracker asked this connection to close.
    pub(crate) async fn reaped(&self) {
        self.reap.notified().await;
    }
}

/// Marks the end of a request when dropped.
pub(crate) struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch(Instant::now());
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Inner {
    next_id: u64,
    per_prefix: HashMap<SourcePrefix, usize>,
    conns: HashMap<u64, Arc<ConnState>>,
}

/// Open connections of one budget, by source prefix. See the [module docs](self).
pub(crate) struct ConnTracker {
    per_prefix_max: usize,
    inner: Mutex<Inner>,
}

/// A connection's place in its prefix's share; dropping it frees the place.
pub(crate) struct Registration {
    tracker: Arc<ConnTracker>,
    id: u64,
    state: Arc<ConnState>,
}

impl Registration {
    /// The connection's request activity.
    pub(crate) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    /// The connection holds a place in the budget and is served: from now on it may be
    /// reaped. (One still waiting for a place is never chosen.)
    pub(crate) fn serving(&self) {
        let mut inner = self.tracker.lock();
        inner.conns.insert(self.id, self.state.clone());
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.tracker.lock();
        inner.conns.remove(&self.id);
        if let Some(n) = inner.per_prefix.get_mut(&self.state.prefix) {
            *n -= 1;
            if *n == 0 {
                inner.per_prefix.remove(&self.state.prefix);
            }
        }
    }
}

impl ConnTracker {
    /// A tracker allowing at most `per_prefix_max` connections per source prefix.
    pub(crate) fn new(per_prefix_max: usize) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            per_prefix_max: per_prefix_max.max(1),
            inner: Mutex::new(Inner {
                next_id: 0,
                per_prefix: HashMap::new(),
                conns: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update of plain counters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection from `peer`; `None` if its prefix already holds the maximum.
    pub(crate) fn register(self: &Arc<Self>, peer: IpAddr, now: Instant) -> Option<Registration> {
        let prefix = SourcePrefix::of(peer);
        let mut inner = self.lock();
        let count = inner.per_prefix.entry(prefix).or_insert(0);
        if *count >= self.per_prefix_max {
            return None;
        }
        *count += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let state = Arc::new(ConnState::new(prefix, now));
        Some(Registration { tracker: self.clone(), id, state })
    }

    /// Asks one idle connection to close: among those with no request in progress (and not
    /// already asked), one from the prefix holding the most connections, the one with the
    /// oldest request activity. False if every connection is busy. O(open connections).
    pub(crate) fn reap_idle(&self) -> bool {
        let inner = self.lock();
        let victim = inner
            .conns
            .values()
            .filter(|c| c.active() == 0 && !c.reaped.load(Ordering::Relaxed))
            .max_by_key(|c| {
                let held = inner.per_prefix.get(&c.prefix).copied().unwrap_or(0);
                // Never-used connections are the oldest of all.
                let last = c.last().unwrap_or(c.start);
                (held, std::cmp::Reverse(last))
            });
        match victim {
            Some(c) => {
                c.reaped.store(true, Ordering::Relaxed);
                c.reap.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections open from `peer`'s prefix.
    #[cfg(test)]
    fn held_by(&self, peer: IpAddr) -> usize {
        self.lock().per_prefix.get(&SourcePrefix::of(peer)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_prefix_holds_at_most_its_share_and_gets_it_back_on_close() {
        let t = ConnTracker::new(2);
        let now = Instant::now();
        let a = t.register(ip("192.0.2.1"), now).unwrap();
        let _b = t.register(ip("192.0.2.77"), now).unwrap();
        assert!(t.register(ip("192.0.2.9"), now).is_none(), "third from the same /24");
        assert!(t.register(ip("::ffff:192.0.2.9"), now).is_none(), "mapped IPv4 counts as IPv4");
        let _c = t.register(ip("198.51.100.1"), now).unwrap();
        assert_eq!(t.held_by(ip("192.0.2.200")), 2);
        drop(a);
        assert_eq!(t.held_by(ip("192.0.2.200")), 1);
        assert!(t.register(ip("192.0.2.9"), now).is_some());
    }

    #[tokio::test]
    async fn reaping_takes_an_idle_connection_of_the_biggest_prefix_never_a_busy_one() {
        let t = ConnTracker::new(10);
        let now = Instant::now();
        let legit = t.register(ip("198.51.100.1"), now).unwrap();
        let hog: Vec<_> = (0..3).map(|i| t.register(ip(&format!("192.0.2.{i}")), now)).collect();
        let hog: Vec<_> = hog.into_iter().map(Option::unwrap).collect();
        // Still waiting for a place: never reaped.
        let _waiting = t.register(ip("192.0.2.9"), now).unwrap();
        legit.serving();
        hog.iter().for_each(Registration::serving);
        // Two of the hog's connections are busy; the third is idle.
        let _g0 = hog[0].state().request_started();
        let _g1 = hog[1].state().request_started();
        assert!(t.reap_idle());
        tokio::time::timeout(Duration::from_secs(1), hog[2].state().reaped()).await.unwrap();
        // Next: the legit idle connection (the hog has nothing idle left).
        assert!(t.reap_idle());
        tokio::time::timeout(Duration::from_secs(1), legit.state().reaped()).await.unwrap();
        // Everything left is busy.
        assert!(!t.reap_idle());
    }

    #[test]
    fn only_requests_count_as_activity() {
        let t = ConnTracker::new(10);
        let t0 = Instant::now();
        let r = t.register(ip("192.0.2.1"), t0).unwrap();
        let s = r.state();
        let (first, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        // No request yet: the short first-request deadline.
        assert_eq!(s.idle_deadline(first, idle), t0 + first);
        assert!(s.idle_expired(first, idle, t0 + first));
        let guard = s.request_started();
        // Busy connections never expire.
        assert!(!s.idle_expired(first, idle, t0 + Duration::from_secs(3600)));
        drop(guard);
        let last = s.last().unwrap();
        assert_eq!(s.idle_deadline(first, idle), last + idle);
        assert!(!s.idle_expired(first, idle, last + Duration::from_secs(59)));
        assert!(s.idle_expired(first, idle, last + idle));
    }
}
