//! Incidents: which incident a new alert joins, what an incident's firing alerts explain,
//! and the re-heading when a wider alert takes one over (the rules themselves are applied
//! where alerts are installed, in `detector.rs`).

#![allow(clippy::wildcard_imports, reason = "the detector's own parent module")]

use super::*;

impl Detector {
    /// The incident a new alert of `c`'s service and kind belongs to: the incident of an alert
    /// of the same service and kind still firing (on any of its slices), or of one that
    /// resolved less than [`DetectorConfig::incident_cooldown_ms`] ago. An incident is named
    /// by the alert that heads it (the one that paged, or the wider one that took it over),
    /// returned with that head's breadth when known.
    pub(super) fn incident_of(&self, c: &Candidate, now_ms: u64) -> Option<(AlertId, Option<u8>)> {
        let sd = self.services.get(&c.service);
        let firing = || {
            sd.into_iter().flat_map(|sd| {
                std::iter::once(&sd.service)
                    .chain(sd.asns.values())
                    .chain(sd.countries.values())
                    .flat_map(|t| t.states.iter().filter_map(|s| s.alert.as_ref()))
                    .filter(|a| a.kind == c.kind)
            })
        };
        let recent = || {
            self.recent_incidents
                .iter()
                .rev()
                .filter(|(s, k, _, until, _)| *s == c.service && *k == c.kind && *until >= now_ms)
        };
        let id = firing()
            .next()
            .map(|a| a.inhibited_by.unwrap_or(a.id))
            .or_else(|| recent().next().map(|r| r.2))?;
        let head = firing()
            .find(|a| a.id == id)
            .map(|a| breadth(&a.slice.dim))
            .or_else(|| recent().find(|r| r.2 == id).and_then(|r| r.4));
        Some((id, head))
    }

    /// Whether `id` is a firing alert on a failure-group slice.
    pub(super) fn is_group_alert(&self, id: AlertId) -> bool {
        self.firing().iter().any(|a| a.id == id && matches!(a.slice.dim, SliceDim::Group(_)))
    }

    /// Whether the head of incident `head` (of `service` and `kind`) is firing, whether any of
    /// its alerts is, and the sum of what those firing alerts explain now (their slices'
    /// current excess).
    pub(super) fn incident_excess(
        &self,
        service: &str,
        kind: AlertKind,
        head: AlertId,
    ) -> (bool, bool, f64) {
        let Some(sd) = self.services.get(service) else { return (false, false, 0.0) };
        let mut head_firing = false;
        let mut firing = false;
        let mut explained = 0.0;
        let all = std::iter::once(&sd.service).chain(sd.asns.values()).chain(sd.countries.values());
        for s in all.flat_map(|t| t.states.iter()) {
            if let Some(a) = &s.alert
                && a.kind == kind
                && a.inhibited_by.unwrap_or(a.id) == head
            {
                firing = true;
                head_firing |= a.id == head;
                explained += s.excess.max(0.0);
            }
        }
        (head_firing, firing, explained)
    }

    /// Makes `new` the head of incident `old`: every alert of `service` and `kind` grouped
    /// under `old` (and `old` itself) is grouped under `new`, firing or within the cool-down.
    /// Returns the firing alerts it regrouped, as they are now (for their
    /// [`AlertEvent::Regrouped`] events).
    pub(super) fn rehead(
        &mut self,
        service: &str,
        kind: AlertKind,
        old: AlertId,
        new: AlertId,
        breadth: u8,
    ) -> Vec<Alert> {
        let mut regrouped = Vec::new();
        if let Some(sd) = self.services.get_mut(service) {
            let all = std::iter::once(&mut sd.service)
                .chain(sd.asns.values_mut())
                .chain(sd.countries.values_mut());
            for t in all {
                for a in t.states.iter_mut().filter_map(|s| s.alert.as_mut()) {
                    if a.kind == kind && (a.id == old || a.inhibited_by == Some(old)) {
                        a.inhibited_by = Some(new);
                        regrouped.push(a.clone());
                    }
                }
            }
        }
        for r in self.recent_incidents.iter_mut().filter(|r| r.0 == service && r.1 == kind) {
            if r.2 == old {
                r.2 = new;
                r.4 = Some(breadth);
            }
        }
        regrouped
    }
}
