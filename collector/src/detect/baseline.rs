//! Per-slice baselines: fast exponentially weighted averages of what a quiet window looks like,
//! plus 168 hour-of-week slots that remember the same hour of earlier weeks.

use serde::{Deserialize, Serialize};

use super::stats::ewma;
use super::window::SliceWindow;

const HOUR_MS: u64 = 3_600_000;
/// Hours in a week: one slot per hour of each weekday.
pub(crate) const SLOTS: usize = 168;
/// Weight of the newest week in a slot.
const SLOT_ALPHA: f64 = 0.5;

/// The slot (0..168, Monday 00:00 UTC = 0) that `ms` falls in.
pub(crate) fn hour_of_week(ms: u64) -> usize {
    let hours = ms / HOUR_MS;
    // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday = 0.
    let weekday = (hours / 24 + 3) % 7;
    (weekday * 24 + hours % 24) as usize
}

/// Mean and variances of one per-unit ratio (clients or networks).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct RatioBaseline {
    /// Mean per-unit failure ratio.
    pub(crate) mean: f64,
    /// Variance of one unit's ratio around the mean (cross-sectional).
    pub(crate) var_unit: f64,
    /// Variance of the window mean over time beyond sampling noise (overdispersion).
    pub(crate) var_time: f64,
    /// Windows folded in.
    pub(crate) weight: u32,
}

impl RatioBaseline {
    fn update(&mut self, n: f64, mean: f64, var_unit: f64, alpha: f64) {
        if n < 1.0 {
            return;
        }
        let resid = mean - self.mean;
        if self.weight > 0 {
            // What the window mean moved beyond what `n` units explain.
            let excess = (resid * resid - self.var_unit / n).max(0.0);
            ewma(&mut self.var_time, excess, alpha, self.weight.saturating_sub(1));
        }
        ewma(&mut self.mean, mean, alpha, self.weight);
        ewma(&mut self.var_unit, var_unit, alpha, self.weight);
        self.weight = self.weight.saturating_add(1);
    }

    /// z-score of a window mean over `n` units against this baseline (and `mean_floor`, a
    /// higher expected mean from the hour-of-week slot, if any).
    pub(crate) fn z(&self, n: f64, mean: f64, mean_floor: f64, min_var: f64) -> f64 {
        if n < 1.0 || self.weight == 0 {
            return 0.0;
        }
        let expected = self.mean.max(mean_floor);
        let var = self.var_unit.max(min_var) / n + self.var_time;
        (mean - expected) / var.sqrt()
    }
}

/// One hour-of-week slot, averaged over weeks.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Slot {
    pub(crate) ratio: f64,
    pub(crate) active_clients: f64,
    pub(crate) failing_clients: f64,
    pub(crate) weeks: u32,
}

/// Sums for the hour being recorded, folded into its slot when the hour ends.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct HourSums {
    hour: u64,
    ratio: f64,
    ratio_n: u32,
    active_clients: f64,
    failing_clients: f64,
    n: u32,
}

/// What a quiet window of one slice looks like.
///
/// Serialisable, so a collector restart keeps what it learned ([`super::DetectorSnapshot`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Baseline {
    /// Windows folded in (warm-up counts these).
    pub(crate) updates: u32,
    /// Per-client failure ratio.
    pub(crate) clients: RatioBaseline,
    /// Per-network failure ratio (each network's clients averaged first).
    pub(crate) nets: RatioBaseline,
    /// Distinct failing clients per window.
    pub(crate) failing_clients: f64,
    /// Distinct failing networks per window.
    pub(crate) failing_nets: f64,
    /// Distinct active clients per window.
    pub(crate) active_clients: f64,
    /// Distinct active networks per window.
    pub(crate) active_nets: f64,
    /// Share of the (per-network capped) clients that are broken (at least half their
    /// attempts failed) per window: the small-slice test's null rate.
    #[serde(default)]
    pub(crate) broken: f64,
    /// The long reference: the per-client ratio over hours ([`Baseline::update_slow`]), which
    /// a slow burn cannot drag along the way it drags the fast mean.
    #[serde(default)]
    pub(crate) slow: RatioBaseline,
    #[serde(with = "slots_serde")]
    slots: Option<Box<[Slot; SLOTS]>>,
    sums: HourSums,
}

/// The hour-of-week slots as a list (serde has no impls for arrays this long).
mod slots_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{SLOTS, Slot};

    pub(super) fn serialize<S: Serializer>(
        slots: &Option<Box<[Slot; SLOTS]>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        slots.as_ref().map(|b| b.as_slice()).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Box<[Slot; SLOTS]>>, D::Error> {
        let Some(list) = Option::<Vec<Slot>>::deserialize(d)? else { return Ok(None) };
        let len = list.len();
        let boxed: Box<[Slot]> = list.into_boxed_slice();
        boxed.try_into().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("expected {SLOTS} hour-of-week slots, got {len}"))
        })
    }
}

impl Baseline {
    /// Folds a quiet window in.
    ///
    /// Robust to crowded networks: the per-client ratio and the failing-client count are
    /// learned with each network's say capped ([`SliceWindow::capped`]), so keys behind one
    /// /24 (or a handful) cannot move what the next window is judged against.
    ///
    /// `learn_broken` is false for windows whose broken clients were already improbable
    /// (p < 0.1): the null rate of the small-slice test learns only ordinary windows, so one
    /// broken client in a slice of eight does not make the next five look ordinary.
    pub(crate) fn update(&mut self, w: &SliceWindow, now_ms: u64, alpha: f64, learn_broken: bool) {
        let c = &w.capped;
        self.clients.update(f64::from(c.n), c.mean(), c.var(), alpha);
        self.nets.update(f64::from(w.nets.n), w.nets.mean(), w.nets.var(), alpha);
        let u = self.updates;
        ewma(&mut self.failing_clients, f64::from(w.failing_capped), alpha, u);
        ewma(&mut self.failing_nets, f64::from(w.failing_nets), alpha, u);
        if c.n > 0 && learn_broken {
            let broken = f64::from(w.broken_capped) / f64::from(c.n);
            ewma(&mut self.broken, broken, alpha, u);
        }
        // Volume learns growth at most 2x (+5) per window, so a burst of extra keys (a flood,
        // a flush) cannot lift the baseline far enough to look like silence when it stops.
        let capped = |sample: u32, base: f64| {
            if u == 0 { f64::from(sample) } else { f64::from(sample).min(2.0 * base + 5.0) }
        };
        let (ac, an) = (
            capped(w.active_clients, self.active_clients),
            capped(w.active_nets, self.active_nets),
        );
        ewma(&mut self.active_clients, ac, alpha, u);
        ewma(&mut self.active_nets, an, alpha, u);
        self.updates = self.updates.saturating_add(1);
        self.record_hour(w, now_ms);
    }

    /// Folds a window into the long reference only (`alpha` small: hours). Called for the
    /// windows the long reference does not find odd, whether or not the fast baseline learns.
    pub(crate) fn update_slow(&mut self, w: &SliceWindow, alpha: f64) {
        let c = &w.capped;
        self.slow.update(f64::from(c.n), c.mean(), c.var(), alpha);
    }

    fn record_hour(&mut self, w: &SliceWindow, now_ms: u64) {
        let hour = now_ms / HOUR_MS;
        if self.sums.n > 0 && self.sums.hour != hour {
            let s = self.sums;
            let slots = self.slots.get_or_insert_with(|| Box::new([Slot::default(); SLOTS]));
            let slot = &mut slots[hour_of_week(s.hour * HOUR_MS)];
            let n = f64::from(s.n);
            let weeks = slot.weeks;
            if s.ratio_n > 0 {
                ewma(&mut slot.ratio, s.ratio / f64::from(s.ratio_n), SLOT_ALPHA, weeks);
            }
            ewma(&mut slot.active_clients, s.active_clients / n, SLOT_ALPHA, weeks);
            ewma(&mut slot.failing_clients, s.failing_clients / n, SLOT_ALPHA, weeks);
            slot.weeks = weeks.saturating_add(1);
            self.sums = HourSums::default();
        }
        self.sums.hour = hour;
        if w.capped.n > 0 {
            self.sums.ratio += w.capped.mean();
            self.sums.ratio_n += 1;
        }
        self.sums.active_clients += f64::from(w.active_clients);
        self.sums.failing_clients += f64::from(w.failing_capped);
        self.sums.n += 1;
    }

    /// The hour-of-week slot for `ms`, if a full earlier hour in that slot has been seen.
    pub(crate) fn slot(&self, ms: u64) -> Option<&Slot> {
        self.slots.as_ref().map(|s| &s[hour_of_week(ms)]).filter(|s| s.weeks > 0)
    }

    /// Expected distinct failing clients per window at `ms`: the slot's value when there is
    /// one, else the recent average.
    pub(crate) fn failing_clients_at(&self, ms: u64) -> f64 {
        self.slot(ms).map_or(self.failing_clients, |s| s.failing_clients.max(self.failing_clients))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::window::UnitStats;

    fn window(n: u32, mean: f64, active: u32, failing: u32) -> SliceWindow {
        let unit = UnitStats { n, sum: mean * f64::from(n), sum_sq: mean * mean * f64::from(n) };
        SliceWindow {
            clients: unit,
            nets: unit,
            active_clients: active,
            active_nets: active,
            failing_clients: failing,
            failing_nets: failing,
            top_net_failing: 0,
            capped: unit,
            failing_capped: failing,
            broken_capped: 0,
            broken_nets: 0,
            failing_nets_known: failing,
            broken_nets_known: 0,
        }
    }

    #[test]
    fn hour_of_week_starts_on_monday() {
        // 1970-01-05 00:00 UTC was a Monday.
        assert_eq!(hour_of_week(4 * 24 * HOUR_MS), 0);
        assert_eq!(hour_of_week(0), 3 * 24);
        assert_eq!(hour_of_week(4 * 24 * HOUR_MS + 7 * 24 * HOUR_MS - 1), 167);
    }

    #[test]
    fn baseline_tracks_the_mean_and_fills_slots_per_hour() {
        let mut b = Baseline::default();
        let start = 4 * 24 * HOUR_MS; // Monday 00:00
        for i in 0..400u64 {
            b.update(&window(100, 0.02, 100, 10), start + i * 10_000, 0.05, true);
        }
        assert!((b.clients.mean - 0.02).abs() < 1e-9);
        assert!((b.active_clients - 100.0).abs() < 1e-9);
        // The first hour (360 windows) has been folded into slot 0; slot 1 is still open.
        assert!(b.slot(start).is_some());
        assert!(b.slot(start + HOUR_MS).is_none());
        assert_eq!(b.slot(start + 7 * 24 * HOUR_MS).map(|s| s.weeks), Some(1));
        // A window at the mean scores zero; one far above scores high.
        assert!(b.clients.z(100.0, 0.02, 0.0, 1e-4).abs() < 1e-9);
        assert!(b.clients.z(100.0, 0.5, 0.0, 1e-4) > 20.0);
        // A higher slot mean raises the expectation.
        assert!(b.clients.z(100.0, 0.03, 0.03, 1e-4) <= 0.0);
    }
}
