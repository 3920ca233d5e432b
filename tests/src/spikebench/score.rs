//! Event-level scoring of a simulated run, and the printed table.

use std::collections::HashMap;
use std::fmt::Write as _;

use vantage_collector::detect::{AlertEvent, AlertId, AlertKind, DetectorStats, SliceDim};

use super::forge::ForgeResult;
use super::world::{ASN_BASE, COUNTRIES, SERVICES, World};
use super::{Event, EventClass, SimConfig};

/// How long after an event's end an alert still belongs to it.
const GRACE_MS: u64 = 5 * 60_000;
/// How long after an event's end a retrospective alert still belongs to it.
const RETRO_GRACE_MS: u64 = 30 * 60_000;

/// Outcomes for one event class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassScore {
    /// The class.
    pub class: EventClass,
    /// Events of this class.
    pub events: usize,
    /// Events with at least one page (incidents; for blackouts: a silence page on the ASN).
    pub detected: usize,
    /// Detected events whose first page was on the right slice.
    pub localized: usize,
    /// Seconds from event start to the first page, per detected event.
    pub delays_s: Vec<f64>,
    /// Pages attributed to events of this class.
    pub pages: usize,
    /// Seconds from event end until its last page resolved, per detected event.
    pub resolve_s: Vec<f64>,
    /// Retrospective alerts attributed (blackouts: on the right ASN).
    pub retro: usize,
    /// Blackouts: failure pages (as opposed to silence) attributed, i.e. the flush paged.
    pub flush_pages: usize,
    /// Alerts raised but inhibited by a service-wide alert.
    pub inhibited: usize,
    /// Pages per detected event (notifications per incident).
    pub pages_per_event: Vec<usize>,
    /// Pages attributed to events of this class whose slice is the right one (alert-level
    /// localisation: every page is judged, not only the first), judged by the slice heading
    /// the page's incident in the end (after the upgrades to a wider slice, if any).
    pub pages_localized: usize,
    /// Pages attributed to events of this class whose own slice, as first notified, is the
    /// right one (the strict reading: upgrades do not repair it).
    pub pages_first_localized: usize,
    /// Upgrades: notifications that re-head an incident already paged for (a wider slice
    /// took it over, [`vantage_collector::detect::Alert::supersedes`]). Updates of a page,
    /// not pages.
    pub upgrades: usize,
    /// Small-slice classes: events left out of `events` because their slice had fewer than
    /// 5 active clients or 3 networks when they began (below the documented floor).
    pub below_floor: usize,
}

impl ClassScore {
    fn new(class: EventClass) -> ClassScore {
        ClassScore {
            class,
            events: 0,
            detected: 0,
            localized: 0,
            delays_s: Vec::new(),
            pages: 0,
            resolve_s: Vec::new(),
            retro: 0,
            flush_pages: 0,
            inhibited: 0,
            pages_per_event: Vec::new(),
            pages_localized: 0,
            pages_first_localized: 0,
            upgrades: 0,
            below_floor: 0,
        }
    }

    /// Detected share of the events (incidents) or 1.0 with no events.
    pub fn recall(&self) -> f64 {
        if self.events == 0 { 1.0 } else { self.detected as f64 / self.events as f64 }
    }
}

/// `q`-quantile (nearest rank) of `xs`; `None` when empty.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// The scored run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Seed.
    pub seed: u64,
    /// Simulated days (after the warm-up).
    pub days: u64,
    /// Simulated hours on top of `days`.
    pub hours: u64,
    /// Ordinary clients.
    pub clients: usize,
    /// Records (reports + target counts) fed to the detector.
    pub records: u64,
    /// Envelopes the simulated agents sealed.
    pub envelopes: u64,
    /// The agent settings the clients ran: (failure fraction, success fraction, report
    /// interval in ms).
    pub agent: (f64, f64, Option<u64>),
    /// Per class, in [`EventClass::SCHEDULED`] order.
    pub classes: Vec<ClassScore>,
    /// All pages (fired, not inhibited, not retrospective, not an upgrade of a page).
    pub pages: usize,
    /// Upgrades of pages (a wider slice took an incident over), over all classes.
    pub upgrades: usize,
    /// Pages attributed to incidents.
    pub true_pages: usize,
    /// Pages during background micro-blips.
    pub blip_pages: usize,
    /// Pages attributed to nothing.
    pub unexplained_pages: usize,
    /// Retrospective alerts during nuisances (a collector-outage flush, say).
    pub nuisance_retro: usize,
    /// Descriptions of the false pages (first few), for debugging.
    pub false_examples: Vec<String>,
    /// Detector sizes at the end.
    pub detector: DetectorStats,
    /// The forging experiment, when run.
    pub forge: Option<ForgeResult>,
    /// Every event and alert, one line each, in time order (for `--verbose`).
    pub log: Vec<String>,
}

fn service_of(name: &str) -> Option<usize> {
    SERVICES.iter().position(|s| s.0 == name)
}

fn localized(
    e: &Event,
    slice: &vantage_collector::detect::SliceKey,
    top_country: Option<&str>,
) -> bool {
    let region_country =
        |c: &str| COUNTRIES.iter().position(|x| *x == c).is_some_and(|i| Some(i % 3) == e.region);
    match (e.class, &slice.dim) {
        (
            EventClass::ServiceOutage
            | EventClass::OutageAfterPoison
            | EventClass::Flapping
            | EventClass::SmallService,
            SliceDim::Service,
        ) => true,
        (
            EventClass::GrayFailure | EventClass::SlowBurn,
            SliceDim::Service | SliceDim::Group(_),
        ) => true,
        (EventClass::RegionOutage, SliceDim::Country(c)) => region_country(c),
        // The service, or one of its failure groups, with the region's country on top.
        (EventClass::RegionOutage, SliceDim::Service | SliceDim::Group(_)) => {
            top_country.is_some_and(region_country)
        }
        (
            EventClass::AsnOutage
            | EventClass::SmallAsn
            | EventClass::AsnBlackout
            | EventClass::ShortBlackout
            | EventClass::LongBlackout,
            SliceDim::Asn(a),
        ) => e.asn.map(|i| ASN_BASE + i as u32) == Some(*a),
        _ => false,
    }
}

/// Scores `world`'s alerts against `events`.
pub(crate) fn score(config: &SimConfig, events: &[Event], world: &World) -> Report {
    let mut classes: Vec<ClassScore> =
        EventClass::SCHEDULED.iter().map(|c| ClassScore::new(*c)).collect();
    let idx = |c: EventClass| EventClass::SCHEDULED.iter().position(|x| *x == c);
    let resolved: HashMap<AlertId, u64> = world
        .alerts
        .iter()
        .filter_map(|(t, e)| match e {
            AlertEvent::Resolved(a) => Some((a.id, *t)),
            _ => None,
        })
        .collect();
    // Upgrades: which alert took over the incident each paged alert headed.
    let took_over: HashMap<AlertId, &vantage_collector::detect::Alert> = world
        .alerts
        .iter()
        .filter_map(|(_, e)| match e {
            AlertEvent::Fired(a) if a.inhibited_by.is_none() => a.supersedes.map(|old| (old, a)),
            _ => None,
        })
        .collect();
    // The alert heading a page's incident in the end.
    let final_head = |a: &'_ vantage_collector::detect::Alert| {
        let mut h = a;
        for _ in 0..100 {
            match took_over.get(&h.id) {
                Some(n) => h = n,
                None => break,
            }
        }
        h.clone()
    };
    // Per event: first page time and slice, last resolve.
    let mut first: Vec<Option<(u64, bool)>> = vec![None; events.len()];
    let mut last_resolve: Vec<Option<u64>> = vec![None; events.len()];
    let mut event_pages: Vec<usize> = vec![0; events.len()];
    let mut report = Report {
        seed: config.seed,
        days: config.days,
        hours: config.hours,
        clients: config.clients,
        records: world.records,
        envelopes: world.envelopes,
        agent: (
            config.agent.sampling.failure_fraction(),
            config.agent.sampling.success_fraction(),
            config.agent.report_interval_ms,
        ),
        classes: Vec::new(),
        pages: 0,
        upgrades: 0,
        true_pages: 0,
        blip_pages: 0,
        unexplained_pages: 0,
        nuisance_retro: 0,
        false_examples: Vec::new(),
        detector: world.detector.stats(),
        forge: None,
        log: Vec::new(),
    };
    let minutes = |t: u64| (t.saturating_sub(super::EPOCH_MS)) as f64 / 60_000.0;
    let mut log: Vec<(u64, String)> = events
        .iter()
        .map(|e| {
            (
                e.start_ms,
                format!(
                    "{:8.1} min  EVENT {} service={} asn={:?} region={:?} until {:.1}",
                    minutes(e.start_ms),
                    e.class.label(),
                    SERVICES[e.service].0,
                    e.asn.map(|a| ASN_BASE + a as u32),
                    e.region,
                    minutes(e.end_ms)
                ),
            )
        })
        .collect();
    for (t, ev) in &world.alerts {
        let a = ev.alert();
        let what = match ev {
            AlertEvent::Fired(_) => "fired",
            AlertEvent::Resolved(_) => "resolved",
            AlertEvent::Retrospective(_) => "retro",
            AlertEvent::Regrouped(_) => "regrouped",
        };
        log.push((
            *t,
            format!(
                "{:8.1} min  {what} {} {} clients={} nets={} active={} score={:.1} ratio={:.4}/{:.4} inhibited={} upgrade={} top_asn={:?} top_cc={:?} span={:.1}-{:.1}",
                minutes(*t),
                a.kind.as_str(),
                a.slice,
                a.clients,
                a.networks,
                a.active_clients,
                a.score,
                a.observed_ratio,
                a.baseline_ratio,
                a.inhibited_by.is_some(),
                a.supersedes.is_some(),
                a.top_asns.first(),
                a.top_countries.first(),
                minutes(a.start_ms),
                a.end_ms.map_or(0.0, minutes),
            ),
        ));
    }
    log.sort_by_key(|(t, _)| *t);
    report.log = log.into_iter().map(|(_, l)| l).collect();
    // Small slices below the floor (< 5 active clients or < 3 networks) are not scored.
    let below_floor = |i: usize| {
        events[i].class.is_small()
            && world.event_active[i].is_none_or(|(clients, nets)| clients < 5 || nets < 3)
    };
    for (i, e) in events.iter().enumerate() {
        if let Some(ci) = idx(e.class) {
            if below_floor(i) {
                classes[ci].below_floor += 1;
            } else {
                classes[ci].events += 1;
            }
        }
    }
    for (t, ev) in &world.alerts {
        let alert = ev.alert();
        let service = service_of(&alert.slice.service);
        let belongs = |e: &Event, grace: u64| {
            *t >= e.start_ms
                && *t < e.end_ms + grace
                && (e.all_services || service == Some(e.service))
        };
        match ev {
            AlertEvent::Resolved(_) | AlertEvent::Regrouped(_) => {}
            AlertEvent::Retrospective(_) => {
                if let Some(i) = events.iter().position(|e| belongs(e, RETRO_GRACE_MS)) {
                    let e = &events[i];
                    if let Some(ci) = idx(e.class) {
                        if e.class.is_incident() {
                            if !e.class.is_blackout() || localized(e, &alert.slice, None) {
                                classes[ci].retro += 1;
                            }
                        } else {
                            report.nuisance_retro += 1;
                        }
                    }
                }
            }
            AlertEvent::Fired(a) if a.inhibited_by.is_some() => {
                if let Some(i) = events.iter().position(|e| belongs(e, GRACE_MS))
                    && let Some(ci) = idx(events[i].class)
                {
                    classes[ci].inhibited += 1;
                }
            }
            AlertEvent::Fired(a) if a.supersedes.is_some() => {
                report.upgrades += 1;
                if let Some(i) = events.iter().position(|e| belongs(e, GRACE_MS))
                    && let Some(ci) = idx(events[i].class)
                {
                    classes[ci].upgrades += 1;
                    if let Some(r) = resolved.get(&a.id) {
                        last_resolve[i] = Some(last_resolve[i].map_or(*r, |x| x.max(*r)));
                    }
                }
            }
            AlertEvent::Fired(a) => {
                report.pages += 1;
                let Some(i) = events.iter().position(|e| belongs(e, GRACE_MS)) else {
                    let blip = world.blips.iter().any(|(s, e, svc, _)| {
                        *t >= *s && *t < e + GRACE_MS && Some(*svc) == service
                    });
                    if blip {
                        report.blip_pages += 1;
                    } else {
                        report.unexplained_pages += 1;
                    }
                    if report.false_examples.len() < 10 {
                        report.false_examples.push(format!(
                            "t+{:.0}min {} {} clients={} nets={} score={:.1} ratio={:.4}/{:.4}{}",
                            (*t - super::EPOCH_MS) as f64 / 60_000.0,
                            a.kind.as_str(),
                            a.slice,
                            a.clients,
                            a.networks,
                            a.score,
                            a.observed_ratio,
                            a.baseline_ratio,
                            if blip { " (blip)" } else { "" }
                        ));
                    }
                    continue;
                };
                let e = &events[i];
                let Some(ci) = idx(e.class) else { continue };
                let cs = &mut classes[ci];
                cs.pages += 1;
                if !e.class.is_incident() {
                    if report.false_examples.len() < 10 {
                        report.false_examples.push(format!(
                            "{}: {} {} clients={} nets={} score={:.1}",
                            e.class.label(),
                            a.kind.as_str(),
                            a.slice,
                            a.clients,
                            a.networks,
                            a.score
                        ));
                    }
                    continue;
                }
                report.true_pages += 1;
                event_pages[i] += 1;
                let top = a.top_countries.first().map(|c| c.0.as_str());
                let head = final_head(a);
                let head_top = head.top_countries.first().map(|c| c.0.as_str());
                let right_kind = |a: &vantage_collector::detect::Alert| {
                    !e.class.is_blackout() || a.kind == AlertKind::Silence
                };
                let head_localized = localized(e, &head.slice, head_top) && right_kind(&head);
                if head_localized {
                    cs.pages_localized += 1;
                }
                if localized(e, &a.slice, top) && right_kind(a) {
                    cs.pages_first_localized += 1;
                }
                let counts = if e.class.is_blackout() {
                    if a.kind != AlertKind::Silence {
                        cs.flush_pages += 1;
                    }
                    a.kind == AlertKind::Silence && localized(e, &a.slice, None)
                } else {
                    true
                };
                if counts && first[i].is_none() {
                    first[i] = Some((*t, localized(e, &head.slice, head_top)));
                }
                if let Some(r) = resolved.get(&a.id) {
                    last_resolve[i] = Some(last_resolve[i].map_or(*r, |x| x.max(*r)));
                }
            }
        }
    }
    for (i, e) in events.iter().enumerate() {
        let Some(ci) = idx(e.class) else { continue };
        if below_floor(i) {
            continue;
        }
        if let Some((t, loc)) = first[i] {
            let cs = &mut classes[ci];
            cs.detected += 1;
            cs.localized += usize::from(loc);
            // A slow burn is late only once its level is reached (an earlier page counts 0).
            let from = e.start_ms + e.ramp_ms;
            cs.delays_s.push((t.saturating_sub(from)) as f64 / 1000.0);
            cs.pages_per_event.push(event_pages[i]);
            if let Some(r) = last_resolve[i] {
                cs.resolve_s.push(r.saturating_sub(e.end_ms) as f64 / 1000.0);
            }
        }
    }
    report.classes = classes;
    report
}

impl Report {
    /// Incidents' pages over all pages (1.0 without pages).
    pub fn precision(&self) -> f64 {
        if self.pages == 0 { 1.0 } else { self.true_pages as f64 / self.pages as f64 }
    }

    /// Pages that belong to no incident.
    pub fn false_pages(&self) -> usize {
        self.pages - self.true_pages
    }

    /// False pages per simulated week.
    pub fn false_per_week(&self) -> f64 {
        self.false_pages() as f64 * 7.0 / self.simulated_days()
    }

    /// Simulated days after the warm-up (fractional; at least one hour).
    pub fn simulated_days(&self) -> f64 {
        (self.days * 24 + self.hours).max(1) as f64 / 24.0
    }

    /// Pages per detected incident, over every incident class.
    pub fn pages_per_incident(&self) -> Vec<f64> {
        self.classes
            .iter()
            .filter(|c| c.class.is_incident())
            .flat_map(|c| c.pages_per_event.iter().map(|n| *n as f64))
            .collect()
    }

    /// Alert-level localisation: the share of incident pages whose slice is the right one,
    /// each judged by the slice heading its incident in the end (1.0 without pages).
    pub fn alert_localisation(&self) -> f64 {
        let local: usize = self.classes.iter().map(|c| c.pages_localized).sum();
        if self.true_pages == 0 { 1.0 } else { local as f64 / self.true_pages as f64 }
    }

    /// The strict reading of [`Report::alert_localisation`]: each page judged by its own slice
    /// as first notified, before any upgrade (1.0 without pages).
    pub fn first_slice_localisation(&self) -> f64 {
        let local: usize = self.classes.iter().map(|c| c.pages_first_localized).sum();
        if self.true_pages == 0 { 1.0 } else { local as f64 / self.true_pages as f64 }
    }

    /// The metrics the sweep summarises: (name, value). Recalls and shares in percent,
    /// delays in seconds; `NaN` when the run had nothing to measure.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let (n, d, delays) = self.hard();
        let q = |xs: &[f64], p: f64| quantile(xs, p).unwrap_or(f64::NAN);
        let recall = |c: EventClass| self.class(c).map_or(f64::NAN, |c| 100.0 * c.recall());
        let ppi = self.pages_per_incident();
        let blackout = self.class(EventClass::AsnBlackout);
        let max_delay = |c: EventClass| self.class(c).map_or(f64::NAN, |c| q(&c.delays_s, 1.0));
        let (sn, sd, sdelays) = self.small();
        vec![
            ("hard recall %", if n == 0 { f64::NAN } else { 100.0 * d as f64 / n as f64 }),
            ("hard delay p50 s", q(&delays, 0.5)),
            ("hard delay p90 s", q(&delays, 0.9)),
            ("hard delay max s", q(&delays, 1.0)),
            ("service outage recall %", recall(EventClass::ServiceOutage)),
            ("region outage recall %", recall(EventClass::RegionOutage)),
            ("ASN outage recall %", recall(EventClass::AsnOutage)),
            ("outage after poison recall %", recall(EventClass::OutageAfterPoison)),
            ("gray failure recall %", recall(EventClass::GrayFailure)),
            ("small ASN recall %", recall(EventClass::SmallAsn)),
            (
                "small slice recall %",
                if sn == 0 { f64::NAN } else { 100.0 * sd as f64 / sn as f64 },
            ),
            ("small slice delay max s", q(&sdelays, 1.0)),
            ("slow burn recall %", recall(EventClass::SlowBurn)),
            ("slow burn delay after level max s", max_delay(EventClass::SlowBurn)),
            ("flapping recall %", recall(EventClass::Flapping)),
            ("blackout recall %", recall(EventClass::AsnBlackout)),
            ("blackout silence max s", blackout.map_or(f64::NAN, |b| q(&b.delays_s, 1.0))),
            ("long blackout silence max s", max_delay(EventClass::LongBlackout)),
            ("flush pages (all blackouts)", self.flush_pages() as f64),
            ("pages per incident p50", q(&ppi, 0.5)),
            ("pages per incident p95", q(&ppi, 0.95)),
            ("alert localisation %", 100.0 * self.alert_localisation()),
            ("first-slice localisation %", 100.0 * self.first_slice_localisation()),
            ("upgrades (re-headed pages)", self.upgrades as f64),
            ("precision %", 100.0 * self.precision()),
            ("false pages / week", self.false_per_week()),
            ("nuisance pages", self.nuisance_pages() as f64),
        ]
    }

    /// The score of `class`.
    pub fn class(&self, class: EventClass) -> Option<&ClassScore> {
        self.classes.iter().find(|c| c.class == class)
    }

    /// Pages attributed to nuisances.
    pub fn nuisance_pages(&self) -> usize {
        self.classes.iter().filter(|c| !c.class.is_incident()).map(|c| c.pages).sum()
    }

    /// Failure pages raised by blackouts (their flushes), over every blackout class.
    pub fn flush_pages(&self) -> usize {
        self.classes.iter().filter(|c| c.class.is_blackout()).map(|c| c.flush_pages).sum()
    }

    /// (events, detected, delays) over the small-slice classes (events at or above the floor).
    pub fn small(&self) -> (usize, usize, Vec<f64>) {
        let small: Vec<&ClassScore> = self.classes.iter().filter(|c| c.class.is_small()).collect();
        (
            small.iter().map(|c| c.events).sum(),
            small.iter().map(|c| c.detected).sum(),
            small.iter().flat_map(|c| c.delays_s.iter().copied()).collect(),
        )
    }

    /// (events, detected, delays) over the hard outage classes.
    pub fn hard(&self) -> (usize, usize, Vec<f64>) {
        let hard: Vec<&ClassScore> = self.classes.iter().filter(|c| c.class.is_hard()).collect();
        (
            hard.iter().map(|c| c.events).sum(),
            hard.iter().map(|c| c.detected).sum(),
            hard.iter().flat_map(|c| c.delays_s.iter().copied()).collect(),
        )
    }

    /// Goals as (description, met).
    pub fn goals(&self) -> Vec<(String, bool)> {
        let (n, d, delays) = self.hard();
        let p50 = quantile(&delays, 0.5).unwrap_or(f64::INFINITY);
        let p90 = quantile(&delays, 0.9).unwrap_or(f64::INFINITY);
        let mut g = vec![
            (format!("hard outages: recall 100% ({d}/{n})"), n > 0 && d == n),
            (format!("hard outages: median delay <= 50 s ({p50:.0} s)"), p50 <= 50.0),
            (format!("hard outages: p90 delay <= 60 s ({p90:.0} s)"), p90 <= 60.0),
        ];
        let (sn, sd, sdelays) = self.small();
        let smax = sdelays.iter().copied().fold(0.0, f64::max);
        g.push((
            format!(
                "small slices (>= 5 active on >= 3 /24s): recall 100%, paged <= 90 s ({sd}/{sn}, max {smax:.0} s)"
            ),
            sd == sn && smax <= 90.0,
        ));
        if let Some(b) = self.class(EventClass::SlowBurn) {
            let max = b.delays_s.iter().copied().fold(0.0, f64::max);
            g.push((
                format!(
                    "slow burns: paged within 15 min of reaching the level ({}/{}, max {max:.0} s)",
                    b.detected, b.events
                ),
                b.detected == b.events && max <= 900.0,
            ));
        }
        let silent: Vec<&ClassScore> = [EventClass::AsnBlackout, EventClass::LongBlackout]
            .iter()
            .filter_map(|c| self.class(*c))
            .collect();
        let events: usize = silent.iter().map(|b| b.events).sum();
        let in_time: usize =
            silent.iter().map(|b| b.delays_s.iter().filter(|d| **d <= 90.0).count()).sum();
        let max = silent.iter().flat_map(|b| b.delays_s.iter().copied()).fold(0.0, f64::max);
        g.push((
            format!(
                "ASN blackouts: silence page within 90 s at peak ({in_time}/{events}, max {max:.0} s)"
            ),
            in_time == events,
        ));
        g.push((
            format!(
                "blackouts of any length: flush raises no current alert ({} pages)",
                self.flush_pages()
            ),
            self.flush_pages() == 0,
        ));
        let ppi = self.pages_per_incident();
        let (p50, p95) = (
            quantile(&ppi, 0.5).unwrap_or(f64::INFINITY),
            quantile(&ppi, 0.95).unwrap_or(f64::INFINITY),
        );
        g.push((
            format!("notifications per incident: median 1, p95 <= 1.2 ({p50:.0}, {p95:.1})"),
            p50 <= 1.0 && p95 <= 1.2,
        ));
        g.push((
            format!("alert-level localisation >= 95% ({:.1}%)", 100.0 * self.alert_localisation()),
            self.alert_localisation() >= 0.95,
        ));
        g.push((
            format!("<= 1 false page per simulated week ({:.2})", self.false_per_week()),
            self.false_per_week() <= 1.0,
        ));
        g.push((
            format!("precision >= 95% ({:.1}%)", 100.0 * self.precision()),
            self.precision() >= 0.95,
        ));
        g.push((
            format!("zero pages from nuisances ({})", self.nuisance_pages()),
            self.nuisance_pages() == 0,
        ));
        if let Some(f) = &self.forge {
            g.push((f.goal_line(), f.goal_met()));
        }
        g
    }

    /// The table spikebench prints.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "spikebench: seed {} | {:.2} simulated days | {} clients | {} records | {} slices (cap {}), {} evicted",
            self.seed,
            self.simulated_days(),
            self.clients,
            self.records,
            self.detector.slices,
            self.detector.slice_cap,
            self.detector.slices_evicted
        );
        let _ = writeln!(
            s,
            "agents: failures sampled {}, successes sampled {}, heartbeat {} | {} envelopes",
            self.agent.0,
            self.agent.1,
            self.agent.2.map_or("none".to_owned(), |ms| format!("{} s", ms / 1000)),
            self.envelopes
        );
        let _ = writeln!(
            s,
            "{:<20} {:>3} {:>7} {:>17} {:>6} {:>6} {:>6} {:>6} {:>8} {:>5} {:>6}",
            "class",
            "n",
            "recall",
            "delay p50/p90/max",
            "local",
            "pages",
            "p.loc",
            "inhib",
            "resolve",
            "retro",
            "flush"
        );
        for c in &self.classes {
            let q = |x: f64| quantile(&c.delays_s, x).map_or("-".to_owned(), |v| format!("{v:.0}"));
            let delay = format!("{}/{}/{}", q(0.5), q(0.9), q(1.0));
            let resolve =
                quantile(&c.resolve_s, 0.5).map_or("-".to_owned(), |v| format!("{v:.0}s"));
            let recall = if c.class.is_incident() {
                format!("{:.0}%", 100.0 * c.recall())
            } else {
                "-".to_owned()
            };
            let local =
                if c.detected > 0 { format!("{}/{}", c.localized, c.detected) } else { "-".into() };
            let _ = writeln!(
                s,
                "{:<20} {:>3} {:>7} {:>17} {:>6} {:>6} {:>6} {:>6} {:>8} {:>5} {:>6}",
                c.class.label(),
                c.events,
                recall,
                delay,
                local,
                c.pages,
                if c.class.is_incident() { c.pages_localized.to_string() } else { "-".into() },
                c.inhibited,
                resolve,
                c.retro,
                if c.class.is_blackout() { c.flush_pages.to_string() } else { "-".into() },
            );
        }
        let _ = writeln!(
            s,
            "pages {} | true {} (on the right slice {:.1}%, as first notified {:.1}%) | upgrades {} | nuisance {} | blip {} | unexplained {} | precision {:.1}% | false/week {:.2} | nuisance retro {}",
            self.pages,
            self.true_pages,
            100.0 * self.alert_localisation(),
            100.0 * self.first_slice_localisation(),
            self.upgrades,
            self.nuisance_pages(),
            self.blip_pages,
            self.unexplained_pages,
            100.0 * self.precision(),
            self.false_per_week(),
            self.nuisance_retro
        );
        for c in self.classes.iter().filter(|c| c.below_floor > 0) {
            let _ = writeln!(
                s,
                "{}: {} event(s) below the floor (< 5 active clients or < 3 /24s), not scored",
                c.class.label(),
                c.below_floor
            );
        }
        if let Some(f) = &self.forge {
            let _ = writeln!(s, "{}", f.table_line());
        }
        for (line, met) in self.goals() {
            let _ = writeln!(s, "[{}] {line}", if met { "met" } else { "NOT MET" });
        }
        for ex in &self.false_examples {
            let _ = writeln!(s, "  false page: {ex}");
        }
        s
    }
}

/// The sweep table: per metric, its minimum, median and maximum over `reports` (one per
/// seed; runs where a metric had nothing to measure are left out of its row), and for every
/// goal the seeds that miss it.
pub fn sweep_table(reports: &[Report]) -> String {
    let mut s = String::new();
    let seeds: Vec<String> = reports.iter().map(|r| r.seed.to_string()).collect();
    let _ = writeln!(s, "sweep over {} seeds: {}", reports.len(), seeds.join(" "));
    let _ = writeln!(s, "{:<30} {:>9} {:>9} {:>9} {:>5}", "metric", "min", "median", "max", "runs");
    let names: Vec<&str> =
        reports.first().map(|r| r.metrics().iter().map(|m| m.0).collect()).unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let xs: Vec<f64> =
            reports.iter().map(|r| r.metrics()[i].1).filter(|v| !v.is_nan()).collect();
        let q = |p: f64| quantile(&xs, p).map_or("-".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(s, "{name:<30} {:>9} {:>9} {:>9} {:>5}", q(0.0), q(0.5), q(1.0), xs.len());
    }
    let goals: Vec<Vec<(String, bool)>> = reports.iter().map(Report::goals).collect();
    let n_goals = goals.first().map_or(0, Vec::len);
    for g in 0..n_goals {
        let missed: Vec<String> = reports
            .iter()
            .zip(&goals)
            .filter(|(_, gs)| gs.get(g).is_some_and(|x| !x.1))
            .map(|(r, _)| r.seed.to_string())
            .collect();
        let label = goals[0][g].0.split(" (").next().unwrap_or_default().to_owned();
        let _ = writeln!(
            s,
            "[{}] {label}{}",
            if missed.is_empty() { "met on every seed" } else { "NOT MET" },
            if missed.is_empty() { String::new() } else { format!(": seeds {}", missed.join(" ")) }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let xs = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&xs, 0.5), Some(3.0));
        assert_eq!(quantile(&xs, 0.9), Some(5.0));
        assert_eq!(quantile(&xs, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
