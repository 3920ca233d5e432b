//! spikebench: a deterministic, seeded simulator of client traffic, failures and incidents that
//! drives the detector ([`vantage_collector::detect::Detector`]) and scores it per event.
//!
//! ```text
//!  seed ─▶ population (Zipf ASNs, countries, 3 regions, 4 services, /24s)
//!       ─▶ schedule: warm-up, then incidents and nuisances in a seeded order, one at a time
//!  each simulated second: due clients (every ~30 s) toggle sessions (4:1 diurnal, weekends),
//!       make requests, fail at the baseline (drift, per-ASN and per-client overdispersion,
//!       micro-blips) or as an event says, and deliver (or buffer while cut off, then flush)
//!       ─▶ Detector::observe_report / observe_targets
//!  every 10 s: Detector::advance ─▶ alert events ─▶ scored against the schedule
//! ```
//!
//! Scoring is event-level (no point adjustment): an incident is detected when a paging alert
//! (not inhibited, not retrospective) for its service is raised between its start and five
//! minutes after its end; every other paging alert is a false alert. Run the benchmark with
//! `cargo run --release -p vantage-tests --bin spikebench -- --days 7 --seed 1`.

mod agent;
mod forge;
mod rng;
mod score;
mod world;

pub use agent::{AgentConfig, AgentModel, Sealed};
pub use forge::{ForgeResult, forge_cost};
pub use rng::Rng;
pub use score::{ClassScore, Report, quantile, sweep_table};
pub use world::{MAIN_SERVICES, SMALL_SERVICE};

use vantage_collector::detect::{Detector, DetectorConfig};

use world::{World, local_time, online_share};

/// 2024-01-01 00:00 UTC, a Monday: simulated time starts here.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
const MINUTE_MS: u64 = 60_000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Simulated days after the warm-up.
    pub days: u64,
    /// Simulated hours after the warm-up, on top of `days` (short runs for the test gate).
    pub hours: u64,
    /// Ordinary clients.
    pub clients: usize,
    /// Autonomous systems (Zipf-sized).
    pub asns: usize,
    /// Quiet simulated time before the first event, for baselines to learn.
    pub warmup_ms: u64,
    /// Detector tuning.
    pub detector: DetectorConfig,
    /// What every simulated client's agent runs with (default: the agent crate's defaults).
    pub agent: AgentConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            days: 7,
            hours: 0,
            clients: 4_000,
            asns: 150,
            warmup_ms: 2 * 60 * MINUTE_MS,
            detector: DetectorConfig::default(),
            agent: AgentConfig::default(),
        }
    }
}

impl SimConfig {
    /// Simulated time after the warm-up, ms.
    pub fn duration_ms(&self) -> u64 {
        (self.days * 24 + self.hours) * 60 * MINUTE_MS
    }
}

/// Kinds of injected events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventClass {
    /// Incident: one service fails for everyone.
    ServiceOutage,
    /// Incident: one service's failure ratio rises by 0.5 to 5 points.
    GrayFailure,
    /// Incident: one service fails for everyone in one region.
    RegionOutage,
    /// Incident: the busiest service fails for everyone in one ASN with 1-5% of the clients,
    /// during the ASN's day.
    AsnOutage,
    /// Incident: an ASN with 2-6% of the clients loses connectivity (last mile) at its peak
    /// hours, its agents buffer, then flush when it comes back.
    AsnBlackout,
    /// Incident: one service fails in an ASN with 0.25-1% of the clients.
    SmallAsn,
    /// Incident: one service fails for everyone 15-30 minutes after a 20-minute poisoning
    /// burst (1000 failing keys behind one /24, scheduled as a [`EventClass::KeysOneNet`]
    /// nuisance just before it) on the same service.
    OutageAfterPoison,
    /// Incident: one service's failure ratio climbs linearly by 2 to 5 points over 60-120
    /// minutes, then holds for 20 minutes (scored from the moment the level is reached).
    SlowBurn,
    /// Incident: one service fails for everyone 1 minute on, 1 minute off, for 30 minutes
    /// (one incident: one notification).
    Flapping,
    /// Incident: the small service (a few dozen users, 5-12 active at a time) fails for all
    /// of them.
    SmallService,
    /// Incident: an ASN with 2-6% of the clients loses connectivity for 60-90 s (shorter than
    /// the agents' gap), then flushes; its flush must not page as current.
    ShortBlackout,
    /// Incident: an ASN with 2-6% of the clients loses connectivity for 40-60 minutes at its
    /// peak, then flushes.
    LongBlackout,
    /// Nuisance: 3x the requests, same failure ratio.
    Surge,
    /// Nuisance: the quiet night hours of the largest region (nothing injected).
    NightTrough,
    /// Nuisance: one client fails 100%.
    OneClient,
    /// Nuisance: one client retries at 1000x volume, all failing.
    RetryLoop,
    /// Nuisance: 1000 keys behind one /24, all failing.
    KeysOneNet,
    /// Nuisance: 300 keys hopping over 50 /24s of one ASN (carrier-grade NAT), normal rates.
    KeysManyNets,
    /// Nuisance: the collector is unreachable for 10 minutes, then every agent flushes.
    CollectorOutage,
    /// Nuisance: 10% of the clients have clocks off by an hour or a day.
    ClockSkew,
    /// Forging experiment: `nets` /24s with `keys_per_net` keys each report like the
    /// service's clients for `lead_min` minutes from the event's start, then failures.
    Forge {
        /// Distinct /24s.
        nets: u32,
        /// Keys behind each.
        keys_per_net: u32,
        /// Minutes of ordinary reports before the failures (0: failing from the start).
        lead_min: u32,
    },
}

impl EventClass {
    /// The scheduled classes, incidents first.
    pub const SCHEDULED: [EventClass; 20] = [
        EventClass::ServiceOutage,
        EventClass::GrayFailure,
        EventClass::RegionOutage,
        EventClass::AsnOutage,
        EventClass::AsnBlackout,
        EventClass::SmallAsn,
        EventClass::OutageAfterPoison,
        EventClass::SlowBurn,
        EventClass::Flapping,
        EventClass::SmallService,
        EventClass::ShortBlackout,
        EventClass::LongBlackout,
        EventClass::Surge,
        EventClass::NightTrough,
        EventClass::OneClient,
        EventClass::RetryLoop,
        EventClass::KeysOneNet,
        EventClass::KeysManyNets,
        EventClass::CollectorOutage,
        EventClass::ClockSkew,
    ];

    /// True for incidents (which should alert); false for nuisances (which must not).
    pub fn is_incident(self) -> bool {
        matches!(
            self,
            EventClass::ServiceOutage
                | EventClass::GrayFailure
                | EventClass::RegionOutage
                | EventClass::AsnOutage
                | EventClass::AsnBlackout
                | EventClass::SmallAsn
                | EventClass::OutageAfterPoison
                | EventClass::SlowBurn
                | EventClass::Flapping
                | EventClass::SmallService
                | EventClass::ShortBlackout
                | EventClass::LongBlackout
                | EventClass::Forge { .. }
        )
    }

    /// True for an ASN losing connectivity (its agents buffer, then flush).
    pub fn is_blackout(self) -> bool {
        matches!(
            self,
            EventClass::AsnBlackout | EventClass::ShortBlackout | EventClass::LongBlackout
        )
    }

    /// True for the small-slice classes, whose recall counts only the events where the slice
    /// had >= 5 active clients on >= 3 networks when it began.
    pub fn is_small(self) -> bool {
        matches!(self, EventClass::SmallAsn | EventClass::SmallService)
    }

    /// True for the hard outages the recall and delay goals are about.
    pub fn is_hard(self) -> bool {
        matches!(
            self,
            EventClass::ServiceOutage
                | EventClass::RegionOutage
                | EventClass::AsnOutage
                | EventClass::OutageAfterPoison
        )
    }

    /// Short label for the table.
    pub fn label(self) -> &'static str {
        match self {
            EventClass::ServiceOutage => "service outage",
            EventClass::GrayFailure => "gray failure",
            EventClass::RegionOutage => "region outage",
            EventClass::AsnOutage => "ASN outage 1-5%",
            EventClass::AsnBlackout => "ASN blackout",
            EventClass::SmallAsn => "small ASN",
            EventClass::OutageAfterPoison => "outage after poison",
            EventClass::SlowBurn => "slow burn",
            EventClass::Flapping => "flapping outage",
            EventClass::SmallService => "small service",
            EventClass::ShortBlackout => "short blackout",
            EventClass::LongBlackout => "long blackout",
            EventClass::Surge => "3x surge",
            EventClass::NightTrough => "night trough",
            EventClass::OneClient => "1 client 100%",
            EventClass::RetryLoop => "retry loop 1000x",
            EventClass::KeysOneNet => "1000 keys one /24",
            EventClass::KeysManyNets => "keys over 50 /24s",
            EventClass::CollectorOutage => "collector outage",
            EventClass::ClockSkew => "clock skew",
            EventClass::Forge { .. } => "forge",
        }
    }
}

/// One injected event.
#[derive(Clone, Debug)]
pub struct Event {
    /// What it is.
    pub class: EventClass,
    /// Start, simulated ms.
    pub start_ms: u64,
    /// End, simulated ms.
    pub end_ms: u64,
    /// The service affected (for every-service events: 0, unused).
    pub service: usize,
    /// The ASN index affected, if any.
    pub asn: Option<usize>,
    /// The region affected, if any.
    pub region: Option<usize>,
    /// The client affected, if any.
    pub client: Option<usize>,
    /// Failure ratio added (gray failures; slow burns at the end of their ramp).
    pub delta: f64,
    /// Slow burns: how long the ratio climbs before it holds.
    pub ramp_ms: u64,
    /// True when the event concerns every service.
    pub all_services: bool,
}

impl Event {
    fn new(class: EventClass, start_ms: u64, end_ms: u64) -> Event {
        Event {
            class,
            start_ms,
            end_ms,
            service: 0,
            asn: None,
            region: None,
            client: None,
            delta: 0.0,
            ramp_ms: 0,
            all_services: false,
        }
    }

    /// True while the event runs.
    pub fn covers(&self, ms: u64) -> bool {
        ms >= self.start_ms && ms < self.end_ms
    }
}

/// True when `class` may start at `ms` with `asn` (blackouts at the ASN's peak, 12:00-19:00
/// local; ASN outages in its day, 08:00-22:00; the night trough when Europe is at its low).
fn fits(class: EventClass, ms: u64, asn: Option<usize>) -> bool {
    let region = asn.unwrap_or(0) % world::COUNTRIES.len() % 3;
    let hour = local_time(ms, region).0;
    match class {
        EventClass::AsnBlackout | EventClass::ShortBlackout | EventClass::LongBlackout => {
            (12.0..19.0).contains(&hour)
        }
        EventClass::AsnOutage => (8.0..22.0).contains(&hour),
        EventClass::NightTrough => online_share(ms, 0) <= 0.25,
        _ => true,
    }
}

/// The schedule for `config`: after the warm-up, every class in a seeded order, again and
/// again, one at a time with 30-50 minutes of normal traffic between. A class whose time of
/// day has not come yet waits while the next ones that fit go first.
fn schedule(config: &SimConfig, world_asns: &[(usize, f64)], n_clients: usize) -> Vec<Event> {
    let mut rng = Rng::new(config.seed ^ 0x5eed);
    let end = EPOCH_MS + config.warmup_ms + config.duration_ms();
    let mut t = EPOCH_MS + config.warmup_ms;
    let mut events = Vec::new();
    let asns_in = |lo: f64, hi: f64| -> Vec<usize> {
        world_asns.iter().filter(|(_, s)| *s >= lo && *s < hi).map(|(i, _)| *i).collect()
    };
    let mid = asns_in(0.01, 0.05);
    let blackout = asns_in(0.02, 0.06);
    let small = asns_in(0.0025, 0.01);
    let pick = |rng: &mut Rng, v: &[usize]| v.get(rng.range(0, v.len() as u64) as usize).copied();
    let mut pending: Vec<Event> = Vec::new();
    loop {
        if pending.is_empty() {
            let mut order = EventClass::SCHEDULED.to_vec();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.range(0, i as u64 + 1) as usize);
            }
            for class in order {
                let mut ramp_ms = 0;
                let len = if class == EventClass::CollectorOutage {
                    10 * MINUTE_MS
                } else if class == EventClass::SlowBurn {
                    ramp_ms = rng.range(60, 121) * MINUTE_MS;
                    ramp_ms + 20 * MINUTE_MS
                } else if class == EventClass::Flapping {
                    30 * MINUTE_MS
                } else if class == EventClass::ShortBlackout {
                    rng.range(60, 91) * 1000
                } else if class == EventClass::LongBlackout {
                    rng.range(40, 61) * MINUTE_MS
                } else if class.is_incident() {
                    rng.range(6, 13) * MINUTE_MS
                } else {
                    rng.range(15, 26) * MINUTE_MS
                };
                let mut e = Event::new(class, 0, len);
                e.ramp_ms = ramp_ms;
                e.service = rng.range(0, MAIN_SERVICES as u64) as usize;
                match class {
                    EventClass::GrayFailure => e.delta = 0.005 + 0.045 * rng.f64(),
                    EventClass::SlowBurn => e.delta = 0.02 + 0.03 * rng.f64(),
                    EventClass::SmallService => e.service = SMALL_SERVICE,
                    EventClass::RegionOutage => e.region = Some(rng.range(0, 3) as usize),
                    // An ASN's path to the busiest service breaks: at night a 1% ASN has one
                    // or two active clients, below every evidence floor, hence `fits`. Small
                    // ASNs fail day or night; they count when they had >= 5 active clients
                    // on >= 3 networks.
                    EventClass::AsnOutage => (e.asn, e.service) = (pick(&mut rng, &mid), 0),
                    EventClass::SmallAsn => (e.asn, e.service) = (pick(&mut rng, &small), 0),
                    EventClass::AsnBlackout
                    | EventClass::ShortBlackout
                    | EventClass::LongBlackout => {
                        e.asn = pick(&mut rng, &blackout);
                        e.all_services = true;
                    }
                    EventClass::OneClient | EventClass::RetryLoop => {
                        e.client = Some(rng.range(0, n_clients as u64) as usize);
                    }
                    EventClass::KeysOneNet
                    | EventClass::KeysManyNets
                    | EventClass::OutageAfterPoison => {
                        e.asn = pick(&mut rng, &mid);
                    }
                    EventClass::NightTrough
                    | EventClass::Surge
                    | EventClass::CollectorOutage
                    | EventClass::ClockSkew => e.all_services = true,
                    _ => {}
                }
                pending.push(e);
            }
        }
        let Some(i) = pending.iter().position(|e| fits(e.class, t, e.asn)) else {
            t += 10 * MINUTE_MS;
            if t >= end {
                break;
            }
            continue;
        };
        let mut e = pending.remove(i);
        let len = e.end_ms;
        if e.class == EventClass::OutageAfterPoison {
            // The poisoning burst first, on the same service, then a quiet gap.
            let mut poison = Event::new(EventClass::KeysOneNet, t, t + 20 * MINUTE_MS);
            (poison.service, poison.asn) = (e.service, e.asn);
            t = poison.end_ms + rng.range(15, 31) * MINUTE_MS;
            if t + len + 20 * MINUTE_MS > end {
                break;
            }
            events.push(poison);
        }
        e.start_ms = t;
        e.end_ms = t + len;
        if e.end_ms + 20 * MINUTE_MS > end {
            break;
        }
        t = e.end_ms + rng.range(30, 51) * MINUTE_MS;
        events.push(e);
    }
    events
}

/// Runs the simulation for `config` and scores it.
pub fn run(config: &SimConfig) -> Report {
    let probe = World::new(config, &[], Detector::new(config.detector.clone()));
    let shares: Vec<(usize, f64)> = probe.asns.iter().map(|a| a.share).enumerate().collect();
    drop(probe);
    let events = schedule(config, &shares, config.clients);
    let mut world = World::new(config, &events, Detector::new(config.detector.clone()));
    let end = EPOCH_MS + config.warmup_ms + config.duration_ms();
    world.run(EPOCH_MS, end, &events, true);
    score::score(config, &events, &world)
}

/// Runs `events` on a world built from `config` from [`EPOCH_MS`] for `duration_ms`, without
/// background micro-blips, and returns the alert events with the time they were raised.
pub fn run_events(
    config: &SimConfig,
    events: &[Event],
    duration_ms: u64,
) -> Vec<(u64, vantage_collector::detect::AlertEvent)> {
    let mut world = World::new(config, events, Detector::new(config.detector.clone()));
    world.run(EPOCH_MS, EPOCH_MS + duration_ms, events, false);
    world.alerts
}

/// Share of the clients in each ASN (index = ASN index; ASN number = 64512 + index).
pub fn asn_shares(config: &SimConfig) -> Vec<f64> {
    World::new(config, &[], Detector::new(config.detector.clone()))
        .asns
        .iter()
        .map(|a| a.share)
        .collect()
}

/// An event of `class` (for hand-built scenarios and the forging experiment).
pub fn event(
    class: EventClass,
    start_ms: u64,
    end_ms: u64,
    service: usize,
    asn: Option<usize>,
) -> Event {
    let mut e = Event::new(class, start_ms, end_ms);
    e.service = service;
    e.asn = asn;
    e
}
