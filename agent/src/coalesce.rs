//! Coalescing: identical failures within a window become one report with a count.
//!
//! A client that retries a dead service, or many requests failing during one outage, would
//! otherwise send hundreds of reports that say the same thing. The [`Coalescer`] keeps one open
//! *group* per identity key (service, host, phase, error type, protocol, status, network type,
//! scope); every further identical report adds its `count` to the group's report. A group is
//! closed `window_ms` after it was opened and handed back by [`Coalescer::poll_ready`].
//!
//! ```text
//!  push(r, now) ──same key open?──yes──▶ count += r.count                        (None)
//!        │                 no
//!        ▼
//!   max_open groups open? ──yes──▶ close the oldest group, return it            (Some)
//!        │  no                       and open a new one for r
//!        ▼
//!   open a group, closes at now + window_ms ──poll_ready(now)──▶ Vec<Report>
//!                                          ──poll_timeout()───▶ when to poll next
//! ```
//!
//! Nothing is ever dropped here and nothing grows without bound: at most `max_open` groups are
//! held, counts never saturate silently (a group whose count would overflow `u32` is handed back
//! and a new group started), and [`Coalescer::flush_all`] empties it, for example at shutdown.
//!
//! Like the rest of the core, the coalescer has no clock: `now` comes in with every call, and
//! [`Coalescer::poll_timeout`] tells the runtime when to call [`Coalescer::poll_ready`] next, or
//! `None` when nothing is open, so an idle agent never wakes up.

use crate::report::{Host, Protocol, Report, ServiceId, UnixMillis};
use crate::taxonomy::{ErrorType, NetworkType, Phase, Scope};
use crate::vecmap::VecMap;

/// The default coalescing window: 60 000 ms (one minute).
pub const DEFAULT_WINDOW_MS: u64 = 60_000;

/// The default maximum number of open groups: 256.
pub const DEFAULT_MAX_OPEN: usize = 256;

/// What makes two reports "the same failure". Everything except id, observation time, elapsed
/// time and count.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    service: ServiceId,
    host: Host,
    phase: Phase,
    error_type: ErrorType,
    protocol: Protocol,
    status: Option<u16>,
    network: NetworkType,
    scope: Scope,
}

impl Key {
    fn of(report: &Report) -> Key {
        Key {
            service: report.service.clone(),
            host: report.host.clone(),
            phase: report.phase,
            error_type: report.error_type.clone(),
            protocol: report.protocol,
            status: report.status,
            network: report.network,
            scope: report.scope,
        }
    }
}

#[derive(Debug)]
struct Group {
    key: Key,
    /// The `now` at which the group was opened (not the report's `observed_at`).
    opened_at: UnixMillis,
    deadline: UnixMillis,
    report: Report,
}

impl Group {
    /// Closed once its window has passed, or when `now` is before its opening: the clock was
    /// stepped back, and holding the group until the clock catches up could take arbitrarily
    /// long. With this rule no group stays open for longer than one window of `now` values.
    fn is_closed(&self, now: UnixMillis) -> bool {
        now >= self.deadline || now < self.opened_at
    }
}

/// Merges identical failures seen within a window into one report with a count.
///
/// Defaults ([`Coalescer::default`]): a window of [`DEFAULT_WINDOW_MS`] (60 000 ms) and at most
/// [`DEFAULT_MAX_OPEN`] (256) open groups.
///
/// - The window of a group runs from the `now` at which its first report was pushed, for
///   `window_ms` milliseconds: a report pushed at `opened + window_ms - 1` still merges, one
///   pushed at `opened + window_ms` starts a new group (and the closed one is returned).
/// - A group keeps its first report's id, `observed_at`, elapsed time and every other field;
///   later reports only add their `count`.
/// - Reports are merged by key only. A report whose `observed_at` is far in the past (recorded
///   late, or replayed from a store) still merges into the open group for its key, and a group
///   it opens closes `window_ms` after it was pushed, not after it was observed. The merged
///   report's `observed_at` is therefore the first report's, which the collector uses for
///   event-time bucketing.
/// - Output is deterministic: whenever several groups are handed back at once they come in the
///   order they were opened.
/// - Internal maps are ordered, so the coalescer uses no hashing seeds either. Deadlines are
///   found by scanning the open groups (at most `max_open`).
#[derive(Debug)]
pub struct Coalescer {
    window_ms: u64,
    max_open: usize,
    next_seq: u64,
    /// Key -> the group's opening sequence number.
    by_key: VecMap<Key, u64>,
    /// Opening sequence number -> group: opening order, for eviction and output order (the
    /// sequence number is the tie-breaker that makes every output order deterministic).
    groups: VecMap<u64, Group>,
}

impl Default for Coalescer {
    /// A window of 60 000 ms and at most 256 open groups.
    fn default() -> Self {
        Coalescer::new(DEFAULT_WINDOW_MS, DEFAULT_MAX_OPEN)
    }
}

impl Coalescer {
    /// A coalescer with a window of `window_ms` milliseconds (default 60 000) that holds at most
    /// `max_open` groups (default 256).
    ///
    /// `window_ms == 0` closes every group at the next [`poll_ready`](Self::poll_ready) with the
    /// same or a later `now`; only reports pushed before that merge. `max_open == 0` turns
    /// coalescing off: [`push`](Self::push) hands every report straight back.
    pub fn new(window_ms: u64, max_open: usize) -> Coalescer {
        Coalescer { window_ms, max_open, next_seq: 0, by_key: VecMap::new(), groups: VecMap::new() }
    }

    /// The window, in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// The most groups held open at once.
    pub fn max_open(&self) -> usize {
        self.max_open
    }

    /// Adds `report`, seen at `now`.
    ///
    /// Returns a report that is ready to be sent right away, if any:
    /// - the open group for the same key if its window has closed by `now` (the runtime had not
    ///   polled yet) or if adding `report.count()` would overflow its `u32` count; `report` then
    ///   opens a new group;
    /// - the oldest group, when `report` needs a new group and `max_open` groups are open;
    /// - `report` itself when `max_open` is 0.
    ///
    /// Otherwise `None`: the report was merged into an open group or opened a new one. Call
    /// [`poll_timeout`](Self::poll_timeout) afterwards, since a new group may close earliest.
    #[must_use = "a returned report is ready to send and is no longer held by the coalescer"]
    pub fn push(&mut self, report: Report, now: UnixMillis) -> Option<Report> {
        let key = Key::of(&report);
        if let Some(&seq) = self.by_key.get(&key) {
            if let Some(group) = self.groups.get_mut(&seq) {
                let fits = group.report.count.checked_add(report.count).is_some();
                if fits && !group.is_closed(now) {
                    group.report.add_occurrences(report.count);
                    return None;
                }
            }
            let closed = self.close(seq);
            self.open(key, report, now);
            return closed;
        }
        if self.max_open == 0 {
            return Some(report);
        }
        let evicted = if self.groups.len() >= self.max_open {
            let oldest = self.groups.first().map(|(&seq, _)| seq);
            oldest.and_then(|seq| self.close(seq))
        } else {
            None
        };
        self.open(key, report, now);
        evicted
    }

    /// Closes and returns every group whose window has passed at `now` (its opening time plus
    /// `window_ms` is at or before `now`), in the order they were opened. Groups opened after
    /// `now` (the clock was stepped back) are closed too, so none is held longer than a window.
    pub fn poll_ready(&mut self, now: UnixMillis) -> Vec<Report> {
        // deadline > now + window  <=>  opened after now.
        let latest = now.plus_ms(self.window_ms);
        let seqs: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.deadline <= now || g.deadline > latest)
            .map(|(&seq, _)| seq)
            .collect();
        seqs.into_iter().filter_map(|seq| self.close(seq)).collect()
    }

    /// When the next group closes, so the runtime can sleep until exactly then; `None` when no
    /// group is open (nothing to wake up for).
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.groups.values().map(|g| g.deadline).min()
    }

    /// Closes and returns every open group, in the order they were opened (for shutdown, or
    /// before a flush the runtime wants to include everything in).
    pub fn flush_all(&mut self) -> Vec<Report> {
        self.by_key.clear();
        std::mem::take(&mut self.groups).into_iter().map(|(_, group)| group.report).collect()
    }

    /// The number of open groups (at most `max_open`).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// True when no group is open.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn open(&mut self, key: Key, report: Report, now: UnixMillis) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let deadline = now.plus_ms(self.window_ms);
        self.by_key.insert(key.clone(), seq);
        self.groups.insert(seq, Group { key, opened_at: now, deadline, report });
    }

    fn close(&mut self, seq: u64) -> Option<Report> {
        let group = self.groups.remove(&seq)?;
        self.by_key.remove(&group.key);
        Some(group.report)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::entropy::SeededEntropy;
    use crate::report::ReportId;

    fn report(host: &str, error_type: ErrorType, count: u32, id: u8) -> Report {
        Report::builder("svc", host, error_type)
            .count(count)
            .build_with_id(ReportId([id; 16]), UnixMillis(500))
            .expect("test reports are valid")
    }

    fn refused(count: u32, id: u8) -> Report {
        report("a.example", ErrorType::TcpRefused, count, id)
    }

    fn hosts(reports: &[Report]) -> Vec<&str> {
        reports.iter().map(|r| r.host().as_str()).collect()
    }

    #[test]
    fn identical_reports_merge_and_keep_the_first_id_and_time() {
        let mut c = Coalescer::new(1_000, 8);
        assert!(c.push(refused(1, 1), UnixMillis(10_000)).is_none());
        let mut later = refused(3, 2);
        later.observed_at = UnixMillis(9_999);
        assert!(c.push(later, UnixMillis(10_500)).is_none());
        assert_eq!(c.len(), 1);
        let out = c.flush_all();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count(), 4);
        assert_eq!(out[0].id(), ReportId([1; 16]));
        assert_eq!(out[0].observed_at(), UnixMillis(500));
        assert!(c.is_empty());
    }

    #[test]
    fn reports_observed_long_ago_still_merge_by_key() {
        let mut c = Coalescer::new(1_000, 8);
        let mut old = refused(1, 1);
        old.observed_at = UnixMillis(0);
        assert!(c.push(old, UnixMillis(5_000_000)).is_none());
        assert!(c.push(refused(1, 2), UnixMillis(5_000_100)).is_none());
        // The window runs from the push, not from the old observation.
        assert_eq!(c.poll_timeout(), Some(UnixMillis(5_001_000)));
        assert!(c.poll_ready(UnixMillis(5_000_999)).is_empty());
        let out = c.poll_ready(UnixMillis(5_001_000));
        assert_eq!((out[0].count(), out[0].observed_at()), (2, UnixMillis(0)));
    }

    #[test]
    fn window_closes_exactly_at_its_end() {
        let mut c = Coalescer::new(1_000, 8);
        assert!(c.push(refused(1, 1), UnixMillis(10_000)).is_none());
        assert!(c.push(refused(1, 2), UnixMillis(10_999)).is_none());
        assert!(c.poll_ready(UnixMillis(10_999)).is_empty());
        let out = c.poll_ready(UnixMillis(11_000));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].count(), 2);
        assert!(c.is_empty());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn push_at_window_end_hands_back_the_closed_group_and_opens_a_new_one() {
        let mut c = Coalescer::new(1_000, 8);
        assert!(c.push(refused(2, 1), UnixMillis(10_000)).is_none());
        let closed = c.push(refused(1, 2), UnixMillis(11_000)).expect("window closed at 11_000");
        assert_eq!((closed.id(), closed.count()), (ReportId([1; 16]), 2));
        assert_eq!(c.len(), 1);
        assert_eq!(c.poll_timeout(), Some(UnixMillis(12_000)));
        let out = c.flush_all();
        assert_eq!((out[0].id(), out[0].count()), (ReportId([2; 16]), 1));
    }

    #[test]
    fn different_keys_stay_separate() {
        let mut rng = SeededEntropy::insecure_from_seed([1; 32]);
        let now = UnixMillis(1_000);
        let base = || Report::builder("svc", "a.example", ErrorType::HttpError);
        let variants = [
            base(),
            Report::builder("other", "a.example", ErrorType::HttpError),
            Report::builder("svc", "b.example", ErrorType::HttpError),
            Report::builder("svc", "a.example", ErrorType::HttpProtocolError),
            Report::builder("svc", "a.example", ErrorType::Other("http.new_thing".into())),
            base().status(503),
            base().status(502),
            base().protocol(Protocol::H2),
            base().network(NetworkType::Cellular),
            base().scope(Scope::Path),
            Report::builder("svc", "a.example", ErrorType::TcpReset).phase(Phase::Application),
            Report::builder("svc", "a.example", ErrorType::TcpReset),
        ];
        let mut c = Coalescer::new(60_000, 64);
        for builder in variants.iter().cloned() {
            let r = builder.build(&mut rng, now).expect("valid");
            assert!(c.push(r, now).is_none());
        }
        assert_eq!(c.len(), variants.len());
        // Elapsed time is not part of the key.
        let r = base().elapsed_ms(77).build(&mut rng, now).expect("valid");
        assert!(c.push(r, now).is_none());
        assert_eq!(c.len(), variants.len());
        assert_eq!(c.flush_all()[0].count(), 2);
    }

    #[test]
    fn max_open_evicts_the_oldest_group_first() {
        let mut c = Coalescer::new(60_000, 3);
        for (i, host) in ["a.example", "b.example", "c.example"].into_iter().enumerate() {
            let r = report(host, ErrorType::TcpRefused, 1, 0);
            assert!(c.push(r, UnixMillis(i as u64)).is_none());
        }
        // Merging into an open group never evicts, even at capacity.
        assert!(c.push(report("a.example", ErrorType::TcpRefused, 1, 0), UnixMillis(9)).is_none());
        let out = c.push(report("d.example", ErrorType::TcpRefused, 1, 0), UnixMillis(10));
        let evicted = out.expect("full: the oldest group goes");
        assert_eq!((evicted.host().as_str(), evicted.count()), ("a.example", 2));
        let out = c.push(report("e.example", ErrorType::TcpRefused, 1, 0), UnixMillis(11));
        assert_eq!(out.map(|r| r.host().as_str().to_owned()).as_deref(), Some("b.example"));
        assert_eq!(c.len(), 3);
        assert_eq!(hosts(&c.flush_all()), ["c.example", "d.example", "e.example"]);
    }

    #[test]
    fn max_open_zero_passes_reports_through() {
        let mut c = Coalescer::new(60_000, 0);
        let out = c.push(refused(1, 1), UnixMillis(0)).expect("coalescing is off");
        assert_eq!(out.id(), ReportId([1; 16]));
        assert!(c.is_empty());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn poll_timeout_is_none_when_empty_and_tracks_the_earliest_group() {
        let mut c = Coalescer::default();
        assert_eq!((c.window_ms(), c.max_open()), (60_000, 256));
        assert_eq!(c.poll_timeout(), None);
        assert!(c.poll_ready(UnixMillis(u64::MAX)).is_empty());
        assert!(
            c.push(report("a.example", ErrorType::TcpRefused, 1, 0), UnixMillis(100)).is_none()
        );
        assert!(
            c.push(report("b.example", ErrorType::TcpRefused, 1, 0), UnixMillis(200)).is_none()
        );
        assert_eq!(c.poll_timeout(), Some(UnixMillis(60_100)));
        assert_eq!(hosts(&c.poll_ready(UnixMillis(60_100))), ["a.example"]);
        assert_eq!(c.poll_timeout(), Some(UnixMillis(60_200)));
        assert_eq!(hosts(&c.poll_ready(UnixMillis(60_200))), ["b.example"]);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_clock_stepped_back_does_not_hold_groups_open() {
        let mut c = Coalescer::new(1_000, 8);
        assert!(
            c.push(report("a.example", ErrorType::TcpRefused, 1, 0), UnixMillis(50_000)).is_none()
        );
        // The clock jumps back an hour: the group opened "in the future" closes at once.
        assert!(
            c.push(report("b.example", ErrorType::TcpRefused, 1, 0), UnixMillis(10_000)).is_none()
        );
        assert_eq!(hosts(&c.poll_ready(UnixMillis(10_001))), ["a.example"]);
        assert_eq!(c.poll_timeout(), Some(UnixMillis(11_000)));
        // A push to the stale group also hands it back.
        assert!(
            c.push(report("a.example", ErrorType::TcpRefused, 1, 0), UnixMillis(10_002)).is_none()
        );
        let out = c.push(report("a.example", ErrorType::TcpRefused, 1, 0), UnixMillis(9_000));
        assert_eq!(out.map(|r| r.count()), Some(1));
    }

    #[test]
    fn counts_never_saturate_silently() {
        let mut c = Coalescer::new(1_000, 8);
        assert!(c.push(refused(u32::MAX - 1, 1), UnixMillis(0)).is_none());
        assert!(c.push(refused(1, 2), UnixMillis(1)).is_none());
        let full = c.push(refused(5, 3), UnixMillis(2)).expect("u32 count would overflow");
        assert_eq!((full.id(), full.count()), (ReportId([1; 16]), u32::MAX));
        let rest = c.flush_all();
        assert_eq!((rest[0].id(), rest[0].count()), (ReportId([3; 16]), 5));
    }

    #[test]
    fn output_order_is_opening_order() {
        let run = || {
            let mut c = Coalescer::new(1_000, 64);
            for (i, host) in ["z.example", "a.example", "m.example", "b.example"].iter().enumerate()
            {
                let r = report(host, ErrorType::TcpTimedOut, 1, 0);
                assert!(c.push(r, UnixMillis(100 + i as u64 % 2)).is_none());
            }
            c.poll_ready(UnixMillis(2_000)).iter().map(|r| r.host().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(run(), ["z.example", "a.example", "m.example", "b.example"]);
        assert_eq!(run(), run());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push { target: u8, count: u32, advance: u64 },
        Poll { advance: u64 },
        StepBack { by: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..6, prop_oneof![1u32..10, Just(u32::MAX)], 0u64..400)
                .prop_map(|(target, count, advance)| Op::Push { target, count, advance }),
            2 => (0u64..2_000).prop_map(|advance| Op::Poll { advance }),
            1 => (0u64..5_000).prop_map(|by| Op::StepBack { by }),
        ]
    }

    /// Pushes, polls and clock steps; checks the invariants after every step and that the
    /// occurrences that came out equal those that went in.
    fn check_ops(ops: &[Op], window: u64, max_open: usize) -> Result<(), TestCaseError> {
        let mut c = Coalescer::new(window, max_open);
        let mut now = UnixMillis(10_000);
        let mut count_in = 0u128;
        let mut out: Vec<Report> = Vec::new();
        for (n, op) in (0u32..).zip(ops) {
            match *op {
                Op::Push { target, count, advance } => {
                    now = now.plus_ms(advance);
                    let mut id = [0u8; 16];
                    id[..4].copy_from_slice(&n.to_be_bytes());
                    let r =
                        Report::builder("svc", &format!("h{target}.example"), ErrorType::TcpReset)
                            .count(count)
                            .build_with_id(ReportId(id), now)
                            .expect("valid");
                    count_in += u128::from(count);
                    out.extend(c.push(r, now));
                }
                Op::Poll { advance } => {
                    now = now.plus_ms(advance);
                    out.extend(c.poll_ready(now));
                    if let Some(t) = c.poll_timeout() {
                        prop_assert!(t > now && t.since(now) <= window, "{t:?} at {now:?}");
                    }
                }
                Op::StepBack { by } => now = UnixMillis(now.0.saturating_sub(by)),
            }
            prop_assert!(c.len() <= max_open);
            prop_assert_eq!(c.is_empty(), c.poll_timeout().is_none());
        }
        out.extend(c.flush_all());
        prop_assert!(c.is_empty());
        prop_assert_eq!(c.poll_timeout(), None);
        let count_out: u128 = out.iter().map(|r| u128::from(r.count())).sum();
        prop_assert_eq!(count_in, count_out);
        let unique: BTreeSet<_> = out.iter().map(Report::id).collect();
        prop_assert_eq!(unique.len(), out.len());
        Ok(())
    }

    proptest! {
        #[test]
        fn every_occurrence_comes_out_exactly_once(
            ops in proptest::collection::vec(op(), 0..200),
            window in 0u64..1_500,
            max_open in 0usize..5,
        ) {
            check_ops(&ops, window, max_open)?;
        }
    }
}
