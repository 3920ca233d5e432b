//! Event-time buckets of per-client cells, and what a window of buckets adds up to.
//!
//! A data slice (a service, a service x ASN, a service x country) keeps one map per 10 s bucket
//! from client to [`Cell`]. A window merges the last few buckets per client, so each client
//! counts once however many reports and batches it sent, then aggregates clients into their
//! networks, so many keys behind one /24 count as one network.

use std::collections::{BTreeMap, VecDeque};

use crate::model::Country;

use super::slice::group_label;
use super::stats::IdMap;

/// Per-group arrays: dns, tcp, tls, http, other.
pub(crate) const GROUP_SLOTS: usize = 5;

/// What one client contributed to one slice in one bucket (or a merged window).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cell {
    /// Requests attempted (from target counts).
    pub(crate) attempts: u64,
    /// Requests that failed (attempts minus successes).
    pub(crate) failures: u64,
    /// Reported failures per group, scaled up by the sampling rate.
    pub(crate) reported: [u64; GROUP_SLOTS],
    /// The client's network tag (the latest seen).
    pub(crate) net: u64,
    /// The client's ASN (the latest seen).
    pub(crate) asn: Option<u32>,
    /// The client's country (the latest seen).
    pub(crate) country: Option<Country>,
    /// Buckets this cell merges (1 in a bucket; 1..=window in a window).
    pub(crate) n: u32,
    /// Buckets of this cell holding partial counts (1 or 0 in a bucket): the client had just
    /// (re)appeared, so its first counts cover an unknown stretch and were sealed early by a
    /// failure as often as not. A window holding any is not the client's vote (see
    /// [`Cell::current`]).
    pub(crate) partial: u32,
}

impl Cell {
    /// Adds `other`'s counts and takes its network, ASN and country (not its `n`).
    pub(crate) fn absorb(&mut self, other: &Cell) {
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.failures = self.failures.saturating_add(other.failures);
        for (a, b) in self.reported.iter_mut().zip(other.reported) {
            *a = a.saturating_add(b);
        }
        self.net = other.net;
        self.asn = other.asn.or(self.asn);
        self.country = other.country.or(self.country);
    }

    fn subtract(&mut self, other: &Cell) {
        self.attempts = self.attempts.saturating_sub(other.attempts);
        self.failures = self.failures.saturating_sub(other.failures);
        for (a, b) in self.reported.iter_mut().zip(other.reported) {
            *a = a.saturating_sub(b);
        }
        self.n = self.n.saturating_sub(other.n);
        self.partial = self.partial.saturating_sub(other.partial);
    }

    fn merge(&mut self, other: &Cell) {
        self.n += other.n;
        self.partial += other.partial;
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.failures = self.failures.saturating_add(other.failures);
        for (a, b) in self.reported.iter_mut().zip(other.reported) {
            *a = a.saturating_add(b);
        }
        self.net = other.net;
        self.asn = other.asn.or(self.asn);
        self.country = other.country.or(self.country);
    }

    /// What this (merged) cell says as current evidence: itself, or, when it holds partial
    /// counts, no attempt counts at all (the client is active, its reports still count as
    /// failures, but it votes no ratio). A client that appears with a failure seals at once
    /// with the few attempts made so far, while one that appears without waits a report
    /// interval, so fresh keys' first windows show the failing ones alone, at ratios near 1
    /// (spikebench: 300 keys appearing over 50 /24s of one ASN at normal rates paged as 12
    /// failing clients on 12 networks of 18 active).
    pub(crate) fn current(&self) -> Cell {
        if self.partial == 0 {
            return *self;
        }
        Cell { attempts: 0, failures: 0, ..*self }
    }

    fn reported_total(&self) -> u64 {
        self.reported.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    /// The failure ratio this cell votes for output `index` (0 = all failures, from target
    /// counts; 1.. = the reported failures of one group); `None` without attempts.
    fn ratio(&self, index: usize) -> Option<f64> {
        if self.attempts == 0 {
            return None;
        }
        let failed = if index == 0 { self.failures } else { self.reported[index - 1] };
        Some(failed.min(self.attempts) as f64 / self.attempts as f64)
    }

    fn failing(&self, index: usize) -> bool {
        if index == 0 {
            self.failures > 0 || self.reported_total() > 0
        } else {
            self.reported[index - 1] > 0
        }
    }
}

/// Count, sum and sum of squares of per-unit failure ratios.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct UnitStats {
    pub(crate) n: u32,
    pub(crate) sum: f64,
    pub(crate) sum_sq: f64,
}

impl UnitStats {
    fn add(&mut self, r: f64) {
        self.n += 1;
        self.sum += r;
        self.sum_sq += r * r;
    }

    /// Mean ratio (0 when empty).
    pub(crate) fn mean(&self) -> f64 {
        if self.n == 0 { 0.0 } else { self.sum / f64::from(self.n) }
    }

    /// Population variance of the ratios (0 when empty).
    pub(crate) fn var(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_sq / f64::from(self.n) - m * m).max(0.0)
    }
}

/// What one window of one slice adds up to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct SliceWindow {
    /// Per-client ratios (clients with attempts).
    pub(crate) clients: UnitStats,
    /// Per-network ratios (each network's clients averaged first).
    pub(crate) nets: UnitStats,
    /// Distinct clients with any data.
    pub(crate) active_clients: u32,
    /// Distinct networks with any data.
    pub(crate) active_nets: u32,
    /// Distinct clients with a failure.
    pub(crate) failing_clients: u32,
    /// Distinct networks with a failing client.
    pub(crate) failing_nets: u32,
    /// Failing clients behind the network with the most of them: evidence that one /24 can
    /// carry alone, which the floors leave out.
    pub(crate) top_net_failing: u32,
    /// Per-client ratios with each network's say capped at [`NET_CAP`] clients (a network
    /// with more clients votes its clients' mean with weight `NET_CAP`): what the baseline
    /// learns, so one /24 full of keys cannot move it.
    pub(crate) capped: UnitStats,
    /// Failing clients with at most [`NET_CAP`] counted per network (what the baseline learns).
    pub(crate) failing_capped: u32,
    /// Broken clients (at least half their attempts failed) with at most [`NET_CAP`] counted
    /// per network: the small-slice test's count, which one /24 cannot inflate.
    pub(crate) broken_capped: u32,
    /// Distinct networks with a broken client.
    pub(crate) broken_nets: u32,
    /// Failing networks established in the slice (seen working before this window, see
    /// [`DataSlice::note_net`]): what an ASN or country slice's share of failing networks counts.
    pub(crate) failing_nets_known: u32,
    /// Networks with a broken client established in the slice: what the small-slice test's network gates count.
    pub(crate) broken_nets_known: u32,
}

/// Most networks whose tenure one data slice keeps (about 10 KiB). Established networks
/// matter only where a share of 2/3 of the slice's networks is below
/// [`super::DetectorConfig::min_networks_alone`] (under 30 networks) and for the small-slice
/// test (a dozen clients); beyond that, 20 failing networks fire whether established or not.
/// Networks seen first once it is full are never established, so a flood of /24s cannot push
/// out the slice's own.
pub(crate) const TENURE_CAP: usize = 256;

/// Most clients one network counts for in what a baseline learns ([`SliceWindow::capped`]).
pub(crate) const NET_CAP: u32 = 4;

/// Per-network sums while summarising a window.
#[derive(Default)]
pub(crate) struct NetAgg {
    sum: [f64; GROUP_SLOTS],
    sum_sq: [f64; GROUP_SLOTS],
    n: u32,
    failing: [u32; GROUP_SLOTS],
    broken: [u32; GROUP_SLOTS],
}

/// The buckets of one data slice, and their running merge over the current window.
#[derive(Debug, Default)]
pub(crate) struct DataSlice {
    /// Ascending by bucket index.
    buckets: VecDeque<(u64, IdMap<u64, Cell>)>,
    /// Buckets `win_from..win_to` merged per client, kept up to date as data arrives and as
    /// the window slides, so an evaluation does not merge every bucket again.
    window: IdMap<u64, Cell>,
    win_from: u64,
    win_to: u64,
    /// Receive time of the latest data, for idle eviction.
    pub(crate) last_data_ms: u64,
    /// Networks seen in this slice, as received (so nobody can backdate them).
    tenure: IdMap<u64, NetTenure>,
}

/// When a network's data for a slice arrived (receive times, ms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NetTenure {
    /// Its first data.
    first_ms: u64,
    /// Its first counts with a success (`u64::MAX`: none yet): when it was seen working.
    ok_ms: u64,
    /// Its latest data.
    last_ms: u64,
}

/// Which networks are the slice's own in a window (see [`summarise`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Established {
    /// Networks seen working (a success) at or before this receive time.
    pub(crate) ok_by_ms: u64,
    /// And networks with any data at or before this one (after a restore, which forgets
    /// networks: the ones that report within the first report intervals were there before).
    pub(crate) seen_by_ms: u64,
}

impl Established {
    fn holds(&self, t: &NetTenure) -> bool {
        t.ok_ms <= self.ok_by_ms || t.first_ms <= self.seen_by_ms
    }
}

impl DataSlice {
    /// Adds `delta` (counts, network, ASN, country) to `client`'s cell in `bucket`.
    pub(crate) fn add(&mut self, bucket: u64, client: u64, delta: &Cell) {
        let cell = self.cell(bucket, client);
        let fresh = cell.n == 0;
        let newly_partial = delta.partial > 0 && cell.partial == 0;
        cell.n = 1;
        cell.partial |= u32::from(newly_partial);
        cell.absorb(delta);
        if bucket >= self.win_from && bucket < self.win_to {
            let w = self.window.entry(client).or_default();
            w.n += u32::from(fresh);
            w.partial += u32::from(newly_partial);
            w.absorb(delta);
        }
    }

    /// Notes that `net` sent data for this slice at `received_ms`, `ok` when it was counts
    /// with a success; a network not seen for `forget_ms` starts over.
    pub(crate) fn note_net(&mut self, net: u64, received_ms: u64, ok: bool, forget_ms: u64) {
        let room = self.tenure.len() < TENURE_CAP;
        let ok_ms = if ok { received_ms } else { u64::MAX };
        match self.tenure.get_mut(&net) {
            Some(t) => {
                if t.last_ms.saturating_add(forget_ms) < received_ms {
                    *t = NetTenure { first_ms: received_ms, ok_ms, last_ms: received_ms };
                }
                t.ok_ms = t.ok_ms.min(ok_ms);
                t.last_ms = t.last_ms.max(received_ms);
            }
            None if room => {
                self.tenure
                    .insert(net, NetTenure { first_ms: received_ms, ok_ms, last_ms: received_ms });
            }
            None => {}
        }
    }

    /// Forgets networks whose latest data arrived before `before_ms`.
    pub(crate) fn forget_nets(&mut self, before_ms: u64) {
        self.tenure.retain(|_, t| t.last_ms >= before_ms);
    }

    /// The networks' tenure, for [`summarise`].
    pub(crate) fn tenure(&self) -> &IdMap<u64, NetTenure> {
        &self.tenure
    }

    /// The running window (as the last [`DataSlice::slide`] left it).
    pub(crate) fn window(&self) -> &IdMap<u64, Cell> {
        &self.window
    }

    /// Moves the running window to buckets `from..to` and returns it.
    pub(crate) fn slide(&mut self, from: u64, to: u64) -> &IdMap<u64, Cell> {
        let overlaps = from >= self.win_from && from <= self.win_to && to >= self.win_to;
        if !overlaps || self.window.is_empty() {
            let mut window = std::mem::take(&mut self.window);
            self.merge_window(from, to, &mut window);
            self.window = window;
        } else {
            for (b, cells) in &self.buckets {
                if *b >= self.win_from && *b < from {
                    for (client, c) in cells {
                        if let Some(w) = self.window.get_mut(client) {
                            w.subtract(c);
                            if w.n == 0 {
                                self.window.remove(client);
                            }
                        }
                    }
                } else if *b >= self.win_to && *b < to {
                    for (client, c) in cells {
                        self.window.entry(*client).or_default().merge(c);
                    }
                }
            }
        }
        self.win_from = from;
        self.win_to = to;
        &self.window
    }

    /// The cell of `client` in `bucket`, created empty (`n` = 0) when missing.
    fn cell(&mut self, bucket: u64, client: u64) -> &mut Cell {
        let pos = match self.buckets.iter().rposition(|(b, _)| *b <= bucket) {
            Some(i) if self.buckets[i].0 == bucket => i,
            Some(i) => {
                self.buckets.insert(i + 1, (bucket, IdMap::default()));
                i + 1
            }
            None => {
                self.buckets.push_front((bucket, IdMap::default()));
                0
            }
        };
        self.buckets[pos].1.entry(client).or_default()
    }

    /// Drops buckets before `bucket`.
    pub(crate) fn drop_before(&mut self, bucket: u64) {
        while self.buckets.front().is_some_and(|(b, _)| *b < bucket) {
            self.buckets.pop_front();
        }
    }

    /// True when no bucket holds data.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Merges buckets `from..to` per client into `out` (cleared first).
    pub(crate) fn merge_window(&self, from: u64, to: u64, out: &mut IdMap<u64, Cell>) {
        out.clear();
        for (_, cells) in self.buckets.iter().filter(|(b, _)| *b >= from && *b < to) {
            for (client, cell) in cells {
                out.entry(*client).or_default().merge(cell);
            }
        }
    }
}

/// Sums a merged window into `outputs` slice windows: index 0 is the data slice itself; for a
/// service, 1..=4 are its failure groups (dns, tcp, tls, http).
/// `nets` is scratch space (cleared first). A network is established (counted in
/// [`SliceWindow::failing_nets_known`] and [`SliceWindow::broken_nets_known`]) when `tenure`
/// says it was seen as `established` asks.
pub(crate) fn summarise(
    merged: &IdMap<u64, Cell>,
    outputs: usize,
    nets: &mut IdMap<u64, NetAgg>,
    tenure: &IdMap<u64, NetTenure>,
    established: Established,
) -> Vec<SliceWindow> {
    let outputs = outputs.clamp(1, GROUP_SLOTS);
    let mut windows = vec![SliceWindow::default(); outputs];
    nets.clear();
    for cell in merged.values() {
        let cell = &cell.current();
        let net = nets.entry(cell.net).or_default();
        if cell.attempts > 0 {
            net.n += 1;
        }
        let quiet = cell.failures == 0 && cell.reported_total() == 0;
        for (i, w) in windows.iter_mut().enumerate() {
            if quiet {
                // The common case: a client with nothing failing votes 0 everywhere.
                if cell.attempts > 0 {
                    w.clients.n += 1;
                }
                continue;
            }
            if let Some(r) = cell.ratio(i) {
                w.clients.add(r);
                net.sum[i] += r;
                net.sum_sq[i] += r * r;
                if r >= 0.5 {
                    net.broken[i] += 1;
                }
            }
            if cell.failing(i) {
                w.failing_clients += 1;
                net.failing[i] += 1;
            }
        }
    }
    for (tag, net) in nets.iter() {
        let known = tenure.get(tag).is_some_and(|t| established.holds(t));
        for (i, w) in windows.iter_mut().enumerate() {
            if net.n > 0 {
                w.nets.add(net.sum[i] / f64::from(net.n));
                let kept = net.n.min(NET_CAP);
                let scale = f64::from(kept) / f64::from(net.n);
                w.capped.n += kept;
                w.capped.sum += scale * net.sum[i];
                w.capped.sum_sq += scale * net.sum_sq[i];
            }
            w.failing_capped += net.failing[i].min(NET_CAP);
            w.broken_capped += net.broken[i].min(NET_CAP);
            w.broken_nets += u32::from(net.broken[i] > 0);
            w.broken_nets_known += u32::from(known && net.broken[i] > 0);
            w.failing_nets_known += u32::from(known && net.failing[i] > 0);
            if net.failing[i] > 0 {
                w.failing_nets += 1;
                w.top_net_failing = w.top_net_failing.max(net.failing[i]);
            }
        }
    }
    for w in &mut windows {
        w.active_clients = merged.len() as u32;
        w.active_nets = nets.len() as u32;
    }
    windows
}

/// Who is failing in a window: failure breakdown and top ASNs and countries.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Description {
    pub(crate) breakdown: BTreeMap<String, u64>,
    pub(crate) top_asns: Vec<(u32, u64)>,
    pub(crate) top_countries: Vec<(String, u64)>,
}

/// How many entries the top lists keep.
pub(crate) const TOP: usize = 5;

/// Describes the failing clients of output `index` (see [`summarise`]) of a merged window.
/// The top ASNs and countries are ranked by how much of the failure they carry (each failing
/// client weighs its own failure ratio, 1 without counts), so a big country with its usual
/// scattered failures does not outrank the ones whose clients all fail; the numbers shown are
/// failing clients.
pub(crate) fn describe(merged: &IdMap<u64, Cell>, index: usize) -> Description {
    let mut d = Description::default();
    let mut asns: IdMap<u32, (f64, u64)> = IdMap::default();
    let mut countries: IdMap<Country, (f64, u64)> = IdMap::default();
    for cell in merged.values().map(Cell::current).filter(|c| c.failing(index)) {
        for (g, n) in cell.reported.iter().enumerate() {
            if *n > 0 && (index == 0 || g == index - 1) {
                *d.breakdown.entry(group_label(g).to_owned()).or_default() += n;
            }
        }
        if index == 0 && cell.reported_total() == 0 && cell.failures > 0 {
            // Failures counted in target counts but not (yet) reported individually.
            *d.breakdown.entry("unreported".to_owned()).or_default() += cell.failures;
        }
        let mass = cell.ratio(index).map_or(1.0, |r| r.clamp(0.0, 1.0));
        if let Some(asn) = cell.asn {
            let e = asns.entry(asn).or_default();
            *e = (e.0 + mass, e.1 + 1);
        }
        if let Some(c) = cell.country {
            let e = countries.entry(c).or_default();
            *e = (e.0 + mass, e.1 + 1);
        }
    }
    d.top_asns = top_by_mass(asns);
    d.top_countries =
        top_by_mass(countries).into_iter().map(|(c, n)| (c.as_str().to_owned(), n)).collect();
    d
}

/// The `TOP` keys carrying the most failure mass, heaviest first (ties by count, then key),
/// with their counts.
fn top_by_mass<K: Ord + Copy>(counts: IdMap<K, (f64, u64)>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, (f64, u64))> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(b.1.1.cmp(&a.1.1)).then(a.0.cmp(&b.0)));
    v.truncate(TOP);
    v.into_iter().map(|(k, (_, n))| (k, n)).collect()
}

/// The `TOP` largest counts, largest first, ties by key.
pub(crate) fn top<K: Ord + Copy>(counts: IdMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(TOP);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_established_once_seen_working_and_a_flood_cannot_push_them_out() {
        let mut s = DataSlice::default();
        let hour = 3_600_000;
        // The slice's own network, working at t = 1000; a visitor failing from t = 1000 on.
        s.note_net(1, 1_000, true, hour);
        s.note_net(2, 1_000, false, hour);
        s.note_net(2, 50_000, false, hour);
        let est = |by: u64| Established { ok_by_ms: by, seen_by_ms: 0 };
        let known = |s: &DataSlice, net: u64, by: u64| {
            s.tenure().get(&net).is_some_and(|t| est(by).holds(t))
        };
        assert!(!known(&s, 1, 999) && known(&s, 1, 1_000));
        assert!(!known(&s, 2, u64::MAX - 1), "never seen working");
        // After a restore's amnesty, anything seen by then counts.
        let amnesty = Established { ok_by_ms: 0, seen_by_ms: 1_000 };
        assert!(amnesty.holds(s.tenure().get(&2).unwrap()));
        // A flood of new /24s fills the table but pushes out nobody.
        for net in 100..1_000 {
            s.note_net(net, 60_000, true, hour);
        }
        assert_eq!(s.tenure().len(), TENURE_CAP);
        assert!(known(&s, 1, 60_000));
        assert!(s.tenure().get(&999).is_none());
        // Quiet for longer than `forget_ms`: it starts over (seen working again only now).
        s.note_net(1, 1_000 + 2 * hour, false, hour);
        assert!(!known(&s, 1, 1_000 + 2 * hour));
        // Forgotten by the sweep.
        s.forget_nets(60_001);
        assert_eq!(s.tenure().len(), 1);
    }

    fn cell(attempts: u64, failures: u64, net: u64) -> Cell {
        Cell { attempts, failures, net, ..Cell::default() }
    }

    #[test]
    fn buckets_stay_sorted_and_windows_merge_per_client() {
        let mut s = DataSlice::default();
        let attempts = Cell { attempts: 10, ..Cell::default() };
        s.add(5, 1, &attempts);
        s.add(3, 1, &attempts);
        s.add(4, 2, &attempts);
        s.add(5, 1, &Cell { failures: 10, ..Cell::default() });
        let order: Vec<u64> = s.buckets.iter().map(|(b, _)| *b).collect();
        assert_eq!(order, vec![3, 4, 5]);
        let mut merged = IdMap::default();
        s.merge_window(4, 6, &mut merged);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[&1].attempts, 10);
        assert_eq!(merged[&1].failures, 10);
        assert_eq!(merged[&1].n, 1);
        // The running window matches a fresh merge as it slides and as data arrives.
        let same = |a: &IdMap<u64, Cell>, b: &IdMap<u64, Cell>| {
            a.len() == b.len()
                && a.iter().all(|(k, c)| {
                    b.get(k).is_some_and(|d| {
                        (c.attempts, c.failures, c.n) == (d.attempts, d.failures, d.n)
                    })
                })
        };
        let w = s.slide(3, 5).clone();
        s.merge_window(3, 5, &mut merged);
        assert!(same(&w, &merged));
        s.add(4, 3, &attempts);
        s.add(4, 1, &attempts);
        let w = s.slide(4, 6).clone();
        s.merge_window(4, 6, &mut merged);
        assert!(same(&w, &merged), "{w:?} {merged:?}");
        assert_eq!(w[&1].n, 2);
        s.drop_before(5);
        assert_eq!(s.buckets.len(), 1);
    }

    #[test]
    fn clients_vote_once_and_networks_weigh_as_one() {
        let mut merged = IdMap::default();
        // 10 healthy clients on 10 networks.
        for c in 0..10u64 {
            merged.insert(c, cell(10, 0, c));
        }
        // 100 failing keys behind one network, one in a 1000x retry loop.
        for c in 100..200u64 {
            merged.insert(c, cell(10, 10, 999));
        }
        merged.get_mut(&100).unwrap().attempts = 10_000;
        merged.get_mut(&100).unwrap().failures = 10_000;
        let w =
            summarise(&merged, 1, &mut IdMap::default(), &IdMap::default(), Established::default())
                [0];
        assert_eq!(w.active_clients, 110);
        assert_eq!(w.failing_clients, 100);
        assert_eq!(w.active_nets, 11);
        assert_eq!(w.failing_nets, 1);
        assert_eq!(w.top_net_failing, 100);
        assert!((w.clients.mean() - 100.0 / 110.0).abs() < 1e-9);
        // Per network: ten at 0, one at 1.
        assert!((w.nets.mean() - 1.0 / 11.0).abs() < 1e-9);
        // What a baseline learns: the crowded network counts as NET_CAP clients.
        let cap = f64::from(NET_CAP);
        assert_eq!(w.capped.n, 10 + NET_CAP);
        assert!((w.capped.mean() - cap / (10.0 + cap)).abs() < 1e-9, "{:?}", w.capped);
        assert_eq!(w.failing_capped, NET_CAP);
    }

    #[test]
    fn groups_use_reported_failures_against_all_attempts() {
        let mut merged = IdMap::default();
        let mut c = cell(10, 5, 1);
        c.reported[1] = 5; // tcp
        c.asn = Some(64500);
        c.country = Country::parse("de");
        merged.insert(1, c);
        merged.insert(2, cell(10, 0, 2));
        let w =
            summarise(&merged, 5, &mut IdMap::default(), &IdMap::default(), Established::default());
        assert_eq!(w.len(), 5);
        assert!((w[0].clients.mean() - 0.25).abs() < 1e-9);
        assert_eq!(w[2].failing_clients, 1);
        assert!((w[2].clients.mean() - 0.25).abs() < 1e-9);
        assert_eq!(w[1].failing_clients, 0);
        let d = describe(&merged, 0);
        assert_eq!(d.breakdown.get("tcp"), Some(&5));
        assert_eq!(d.top_asns, vec![(64500, 1)]);
        assert_eq!(d.top_countries, vec![("DE".to_owned(), 1)]);
    }
}
