//! The simulated world: clients, services, ASNs, countries and regions, their traffic and
//! failures second by second, and the injected events that change them.

use vantage_agent::report::{Host, ServiceId, UnixMillis};
use vantage_agent::taxonomy::{ErrorType, NetworkType, Scope};
use vantage_collector::detect::{AlertEvent, Detector};
use vantage_collector::model::{Country, Enrichment, NetTag, Source, StoredReport, StoredTargets};
use vantage_collector::{event_time, scaled_counts};

use super::agent::{AgentConfig, AgentModel, Sealed};
use super::rng::Rng;
use super::{Event, EventClass, SimConfig};

/// Services, their baseline failure ratios, and how likely a client is to use each. The last
/// one is small (a few dozen users at 4000 clients).
pub(crate) const SERVICES: [(&str, f64, f64); 5] = [
    ("shop", 0.005, 0.6),
    ("api", 0.01, 0.5),
    ("media", 0.02, 0.3),
    ("auth", 0.008, 0.2),
    ("tiny", 0.01, 0.003),
];
/// The services ordinary events pick from (the small one has its own class).
pub const MAIN_SERVICES: usize = 4;
/// Index of the small service in `SERVICES`.
pub const SMALL_SERVICE: usize = 4;
/// The host each service's requests go to.
const HOSTS: [&str; 5] =
    ["shop.example", "api.example", "media.example", "auth.example", "tiny.example"];
/// Countries (index = country id); region = index % 3.
pub(crate) const COUNTRIES: [&str; 12] =
    ["DE", "US", "JP", "FR", "CA", "AU", "GB", "MX", "IN", "NL", "BR", "SG"];
/// Hours from UTC of each region's local time (Europe, Americas, Asia-Pacific).
pub(crate) const REGION_UTC_OFFSET_H: [i64; 3] = [1, -5, 8];
/// First simulated ASN number.
pub(crate) const ASN_BASE: u32 = 64_512;
/// Seconds between two steps of a client (sessions toggle, the next step's requests are drawn).
/// Not the agent's schedule: that is its own (see [`super::agent`]).
pub(crate) const STEP_S: u64 = 30;
/// Requests a client makes to each of its services per step, at the peak.
const REQUESTS_PER_STEP: f64 = 6.0;
/// Pacing of a backlog: the agent starts at most `DEFAULT_MAX_PER_SECOND` (10) transmits a
/// second (`agent/src/delivery.rs`).
const BACKLOG_PACING_MS: u64 = 1_000 / vantage_agent::delivery::DEFAULT_MAX_PER_SECOND as u64;
/// Mean online session, seconds.
const SESSION_S: f64 = 1_200.0;
/// Background failure-type mix per group: dns, tcp, tls, http.
const BACKGROUND_MIX: [(ErrorType, f64); 6] = [
    (ErrorType::DnsTimedOut, 0.1),
    (ErrorType::TcpReset, 0.15),
    (ErrorType::TcpTimedOut, 0.15),
    (ErrorType::TlsProtocolError, 0.1),
    (ErrorType::HttpError, 0.4),
    (ErrorType::HttpProtocolError, 0.1),
];

const MIX_WEIGHTS: [f64; 6] = [0.1, 0.15, 0.15, 0.1, 0.4, 0.1];

const HOUR_MS: u64 = 3_600_000;

/// Local hour (fractional) and weekday (Monday = 0) of `ms` in `region`.
pub(crate) fn local_time(ms: u64, region: usize) -> (f64, u64) {
    let shifted = ms as i64 + REGION_UTC_OFFSET_H[region % 3] * HOUR_MS as i64;
    let hours = shifted.max(0) as f64 / HOUR_MS as f64;
    let day = (hours / 24.0).floor() as u64;
    (hours % 24.0, (day + 3) % 7)
}

/// Share of clients online in `region` at `ms`: 4:1 between 16:00 and 04:00 local, and 80% of
/// that on weekends.
pub(crate) fn online_share(ms: u64, region: usize) -> f64 {
    let (hour, weekday) = local_time(ms, region);
    let s = (1.0 - (std::f64::consts::TAU * (hour - 4.0) / 24.0).cos()) / 2.0;
    let weekend = if weekday >= 5 { 0.8 } else { 1.0 };
    0.8 * (0.25 + 0.75 * s) * weekend
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An ordinary user.
    User,
    /// Extra keys that exist only while `event` runs (the key-flood nuisances, forgers).
    Extra { event: usize },
}

/// Something due at a simulated time: a seal to deliver, or a retry of a client's backlog.
#[derive(Debug)]
enum Outgoing {
    Seal { client: u32, sealed: Sealed },
    Retry { client: u32, at_ms: u64 },
}

impl Outgoing {
    fn at_ms(&self) -> u64 {
        match self {
            Outgoing::Seal { sealed, .. } => sealed.at_ms,
            Outgoing::Retry { at_ms, .. } => *at_ms,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Client {
    key: [u8; 32],
    pub(crate) asn: usize,
    net: u64,
    /// Networks the client hops between (carrier-grade NAT pools).
    net_pool: Vec<u64>,
    pub(crate) country: usize,
    services: u8,
    online: bool,
    /// Failure-rate multiplier (flaky Wi-Fi and such).
    mult: f64,
    pub(crate) kind: Kind,
    /// The client's agent.
    agent: AgentModel,
    /// Sealed envelopes not delivered yet (the collector or the client's network was down).
    backlog: Vec<Sealed>,
    /// Failed delivery rounds in a row (the backoff's exponent).
    retries: u32,
    /// A retry is scheduled.
    retry_pending: bool,
}

impl Client {
    pub(crate) fn region(&self) -> usize {
        self.country % 3
    }
}

/// ASN sizes and networks.
#[derive(Clone, Debug)]
pub(crate) struct Asn {
    pub(crate) share: f64,
    pub(crate) nets: Vec<u64>,
    mult: f64,
}

/// The whole simulated population and the detector it feeds.
pub(crate) struct World {
    pub(crate) clients: Vec<Client>,
    pub(crate) asns: Vec<Asn>,
    wheel: Vec<Vec<u32>>,
    rng: Rng,
    service_drift: [f64; 5],
    pub(crate) detector: Detector,
    pub(crate) alerts: Vec<(u64, AlertEvent)>,
    /// Background micro-blips, 20-60 s: (start, end, service, 1-3 clients failing 100%, or
    /// None for +0.2 points service-wide).
    pub(crate) blips: Vec<(u64, u64, usize, Option<Vec<u32>>)>,
    /// Indexes into `blips` of the ones still running.
    live_blips: Vec<usize>,
    next_blip_ms: u64,
    pub(crate) records: u64,
    /// Envelopes the simulated agents sealed.
    pub(crate) envelopes: u64,
    /// The agent configuration every client runs.
    agent: AgentConfig,
    /// The services' ids and hosts, parsed once.
    targets: Vec<(ServiceId, Host)>,
    /// Seals and retries by the second they are due (a wheel of 64 s).
    outbox: Vec<Vec<Outgoing>>,
    /// Per event: (online clients, their distinct /24s) of the affected slice (the ASN's
    /// clients of the service, or the service's) when the event began.
    pub(crate) event_active: Vec<Option<(u32, u32)>>,
}

fn net_tag(asn: usize, index: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in (asn as u64).to_be_bytes().into_iter().chain((index as u64).to_be_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl World {
    /// Builds the population for `config` and the extra keys the `events` need.
    pub(crate) fn new(config: &SimConfig, events: &[Event], detector: Detector) -> World {
        let mut rng = Rng::new(config.seed);
        let mut pop = rng.fork(1);
        // Zipf(1) ASN sizes.
        let n_asns = config.asns.max(12);
        let h: f64 = (1..=n_asns).map(|r| 1.0 / r as f64).sum();
        let asns: Vec<Asn> = (0..n_asns)
            .map(|i| {
                let share = 1.0 / ((i + 1) as f64 * h);
                let n_nets = ((share * config.clients as f64 * 0.6).round() as usize).max(1);
                Asn {
                    share,
                    nets: (0..n_nets).map(|j| net_tag(i, j)).collect(),
                    mult: (0.3 * pop.normal()).exp(),
                }
            })
            .collect();
        let shares: Vec<f64> = asns.iter().map(|a| a.share).collect();
        let mut clients = Vec::with_capacity(config.clients);
        for _ in 0..config.clients {
            let asn = pop.weighted(&shares);
            let mut services = 0u8;
            while services == 0 {
                for (i, (_, _, p)) in SERVICES.iter().enumerate() {
                    if pop.chance(*p) {
                        services |= 1 << i;
                    }
                }
            }
            let mut key = [0u8; 32];
            key.iter_mut().for_each(|b| *b = pop.next_u64() as u8);
            let nets = &asns[asn].nets;
            clients.push(Client {
                key,
                asn,
                net: nets[pop.range(0, nets.len() as u64) as usize],
                net_pool: Vec::new(),
                country: asn % COUNTRIES.len(),
                services,
                online: pop.chance(0.5),
                mult: if pop.chance(0.05) { 5.0 } else { 1.0 },
                kind: Kind::User,
                agent: AgentModel::new(&config.agent),
                backlog: Vec::new(),
                retries: 0,
                retry_pending: false,
            });
        }
        // Extra keys for the key-flood nuisances and the forging experiment.
        for (i, e) in events.iter().enumerate() {
            let (nets, keys_per_net) = match e.class {
                EventClass::KeysOneNet => (1, 1000),
                EventClass::KeysManyNets => (50, 6),
                EventClass::Forge { nets, keys_per_net, .. } => (nets, keys_per_net),
                _ => continue,
            };
            let asn = e.asn.unwrap_or(0);
            let pool: Vec<u64> =
                (0..nets).map(|j| net_tag(asn, 1_000_000 + i * 1000 + j as usize)).collect();
            for n in 0..nets as usize {
                for _ in 0..keys_per_net {
                    let mut key = [0u8; 32];
                    key.iter_mut().for_each(|b| *b = pop.next_u64() as u8);
                    clients.push(Client {
                        key,
                        asn,
                        net: pool[n],
                        net_pool: if e.class == EventClass::KeysManyNets {
                            pool.clone()
                        } else {
                            Vec::new()
                        },
                        country: asn % COUNTRIES.len(),
                        services: 1 << e.service,
                        online: true,
                        mult: 1.0,
                        kind: Kind::Extra { event: i },
                        agent: AgentModel::new(&config.agent),
                        backlog: Vec::new(),
                        retries: 0,
                        retry_pending: false,
                    });
                }
            }
        }
        let mut wheel = vec![Vec::new(); 64];
        for i in 0..clients.len() {
            wheel[pop.range(0, STEP_S) as usize].push(i as u32);
        }
        World {
            clients,
            asns,
            wheel,
            rng: rng.fork(2),
            service_drift: [0.0; 5],
            event_active: vec![None; events.len()],
            detector,
            alerts: Vec::new(),
            blips: Vec::new(),
            live_blips: Vec::new(),
            next_blip_ms: 0,
            records: 0,
            envelopes: 0,
            agent: config.agent,
            targets: SERVICES
                .iter()
                .zip(HOSTS)
                .map(|((s, _, _), h)| {
                    (s.parse().expect("a valid service id"), Host::parse(h).expect("a host"))
                })
                .collect(),
            outbox: (0..64).map(|_| Vec::new()).collect(),
        }
    }

    /// Runs second by second from `start_ms` to `end_ms`.
    pub(crate) fn run(&mut self, start_ms: u64, end_ms: u64, events: &[Event], blips: bool) {
        let mut t = start_ms / 1000;
        self.next_blip_ms = start_ms + 30 * 60_000;
        while t * 1000 < end_ms {
            let now_ms = t * 1000;
            if now_ms % 600_000 == 0 {
                for d in &mut self.service_drift {
                    *d = 0.9 * *d + 0.1 * self.rng.normal();
                }
            }
            // Blips are drawn a step ahead: a client draws its next step's requests now.
            while blips && self.next_blip_ms <= now_ms + (STEP_S + 3) * 1000 {
                self.add_blip(self.next_blip_ms);
            }
            let all = &self.blips;
            self.live_blips.retain(|i| all[*i].1 > now_ms);
            let active: Vec<usize> =
                (0..events.len()).filter(|i| events[*i].covers(now_ms)).collect();
            for &i in &active {
                if self.event_active[i].is_none() {
                    self.event_active[i] = Some(self.active_in(&events[i]));
                }
            }
            let slot = (t % 64) as usize;
            let due = std::mem::take(&mut self.wheel[slot]);
            for &c in &due {
                let next = t + self.rng.range(STEP_S - 2, STEP_S + 3);
                self.step(c as usize, now_ms, next * 1000, events, &active);
                self.wheel[(next % 64) as usize].push(c);
            }
            let mut out = std::mem::take(&mut self.outbox[slot]);
            out.sort_by_key(Outgoing::at_ms);
            for o in out {
                self.send(o, events, &active);
            }
            if t % 10 == 0 {
                let out = self.detector.advance(UnixMillis(now_ms));
                self.alerts.extend(out.into_iter().map(|e| (now_ms, e)));
            }
            t += 1;
        }
    }

    fn push_out(&mut self, o: Outgoing) {
        let slot = (o.at_ms() / 1000 % 64) as usize;
        self.outbox[slot].push(o);
    }

    fn push_sealed(&mut self, c: usize, sealed: Option<Sealed>) {
        if let Some(sealed) = sealed {
            self.envelopes += 1;
            self.push_out(Outgoing::Seal { client: c as u32, sealed });
        }
    }

    /// Online clients of `e`'s slice (its service, within its ASN if it has one) and their
    /// distinct /24s.
    fn active_in(&self, e: &Event) -> (u32, u32) {
        let mut nets = std::collections::HashSet::new();
        let mut n = 0;
        for c in &self.clients {
            if c.kind == Kind::User
                && c.online
                && c.services & (1 << e.service) != 0
                && e.asn.is_none_or(|a| a == c.asn)
            {
                n += 1;
                nets.insert(c.net);
            }
        }
        (n, nets.len() as u32)
    }

    fn add_blip(&mut self, now_ms: u64) {
        let service = self.rng.range(0, 4) as usize;
        let len = self.rng.range(20_000, 60_000);
        let who = if self.rng.chance(0.5) {
            let n = self.rng.range(1, 4);
            Some((0..n).map(|_| self.rng.range(0, self.clients.len() as u64) as u32).collect())
        } else {
            None
        };
        self.live_blips.push(self.blips.len());
        self.blips.push((now_ms, now_ms + len, service, who));
        self.next_blip_ms = now_ms + self.rng.range(10 * 60_000, 30 * 60_000);
    }

    /// One step of a client: its session toggles, then it makes its requests until `next_ms`
    /// (at random times), each failing at the baseline or as an event says, and its agent
    /// samples, coalesces and seals them on the agent's own schedule.
    fn step(&mut self, c: usize, now_ms: u64, next_ms: u64, events: &[Event], active: &[usize]) {
        let client = &self.clients[c];
        if let Kind::Extra { event } = client.kind
            && !events[event].covers(now_ms)
        {
            let sealed = self.clients[c].agent.seal(now_ms);
            self.push_sealed(c, sealed);
            return;
        }
        let region = client.region();
        if client.kind == Kind::User {
            let share = online_share(now_ms, region);
            let h_off = STEP_S as f64 / SESSION_S;
            let h_on = h_off * share / (1.0 - share).max(0.05);
            let online = client.online;
            let flip = self.rng.chance(if online { h_off } else { h_on.min(1.0) });
            self.clients[c].online = online != flip;
            if online && flip {
                // The app closes: the runtime seals what is pending on shutdown.
                let sealed = self.clients[c].agent.seal(now_ms);
                self.push_sealed(c, sealed);
            }
        }
        let client = &self.clients[c];
        if !client.online {
            return;
        }
        let mut surge = 1.0;
        let mut retry_loop = false;
        for &i in active {
            match events[i].class {
                EventClass::Surge => surge = 3.0,
                EventClass::RetryLoop if events[i].client == Some(c) => retry_loop = true,
                _ => {}
            }
        }
        // The events that touch this step, for the requests' own times.
        let near: Vec<usize> = (0..events.len())
            .filter(|i| events[*i].start_ms < next_ms && events[*i].end_ms > now_ms)
            .collect();
        let span = next_ms - now_ms;
        let mut requests: Vec<(u64, usize)> = Vec::new();
        for s in 0..SERVICES.len() {
            if client.services & (1 << s) == 0 {
                continue;
            }
            let mut lambda = REQUESTS_PER_STEP * surge * span as f64 / (STEP_S * 1000) as f64;
            if retry_loop {
                lambda *= 1000.0;
            }
            for _ in 0..self.rng.poisson(lambda).max(1) {
                requests.push((now_ms + self.rng.range(0, span), s));
            }
        }
        requests.sort_unstable();
        let asn = client.asn;
        let config = self.agent;
        for (at, s) in requests {
            while let Some(sealed) = self.clients[c].agent.poll_seal(&config, at) {
                self.push_sealed(c, Some(sealed));
            }
            let mut blackout = false;
            let mut collector_down = false;
            for &i in &near {
                let e = &events[i];
                if !e.covers(at) {
                    continue;
                }
                match e.class {
                    EventClass::AsnBlackout
                    | EventClass::ShortBlackout
                    | EventClass::LongBlackout
                        if e.asn == Some(asn) =>
                    {
                        blackout = true;
                    }
                    EventClass::CollectorOutage => collector_down = true,
                    _ => {}
                }
            }
            let (p, incident_type) = self.fail_prob(c, s, at, events, &near);
            let failed = blackout || retry_loop || self.rng.chance(p);
            let failure = failed.then(|| {
                let t = match &incident_type {
                    Some(t) if blackout || retry_loop || self.rng.chance(0.9) => t.clone(),
                    _ if blackout => ErrorType::TcpAddressUnreachable,
                    _ => BACKGROUND_MIX[self.rng.weighted(&MIX_WEIGHTS)].0.clone(),
                };
                // The agent's scope check: the collector unreachable means local.
                let scope = if blackout || collector_down { Scope::Local } else { Scope::Path };
                let status = (t == ErrorType::HttpError).then_some(503);
                (t, scope, status)
            });
            let (service, host) = &self.targets[s];
            let agent = &mut self.clients[c].agent;
            agent.request(&config, &mut self.rng, at, service, host, failure);
        }
        while let Some(sealed) = self.clients[c].agent.poll_seal(&config, next_ms - 1) {
            self.push_sealed(c, Some(sealed));
        }
    }

    /// True while client `c` cannot reach the collector (its ASN is blacked out, or the
    /// collector is down).
    fn cut_off(&self, c: usize, events: &[Event], active: &[usize]) -> bool {
        active.iter().any(|&i| match events[i].class {
            EventClass::AsnBlackout | EventClass::ShortBlackout | EventClass::LongBlackout => {
                events[i].asn == Some(self.clients[c].asn)
            }
            EventClass::CollectorOutage => true,
            _ => false,
        })
    }

    /// A seal is sent (or queued behind a backlog, or kept while cut off); a retry sends the
    /// backlog, oldest first, paced, or backs off again (`agent/src/delivery.rs`: full jitter,
    /// 1 s doubling up to 20 s).
    fn send(&mut self, o: Outgoing, events: &[Event], active: &[usize]) {
        let (c, at_ms) = match o {
            Outgoing::Seal { client, sealed } => {
                let c = client as usize;
                let at_ms = sealed.at_ms;
                let cl = &mut self.clients[c];
                if cl.backlog.is_empty() && !self.cut_off(c, events, active) {
                    let latency = self.rng.range(50, 500);
                    self.deliver(c, sealed, at_ms + latency, events, active);
                    return;
                }
                self.clients[c].backlog.push(sealed);
                if self.clients[c].retry_pending {
                    return;
                }
                (c, at_ms)
            }
            Outgoing::Retry { client, at_ms } => {
                let c = client as usize;
                self.clients[c].retry_pending = false;
                if !self.cut_off(c, events, active) {
                    self.clients[c].retries = 0;
                    let backlog = std::mem::take(&mut self.clients[c].backlog);
                    let mut received = at_ms + self.rng.range(50, 500);
                    for sealed in backlog {
                        self.deliver(c, sealed, received, events, active);
                        received += BACKLOG_PACING_MS;
                    }
                    return;
                }
                (c, at_ms)
            }
        };
        let cl = &mut self.clients[c];
        cl.retries += 1;
        cl.retry_pending = true;
        let exp = cl.retries.saturating_sub(1).min(20);
        let ceiling = (vantage_agent::delivery::DEFAULT_BASE_BACKOFF_MS << exp)
            .min(vantage_agent::delivery::DEFAULT_MAX_BACKOFF_MS);
        // At least the next second, so the wheel slot being sent is not written to.
        let delay = self.rng.range(0, ceiling + 1).max(1_000);
        self.push_out(Outgoing::Retry { client: c as u32, at_ms: at_ms + delay });
    }

    /// Hands a sealed batch to the detector as the collector would after its durable write:
    /// report weights by the batch's failure rate, target counts scaled by both rates
    /// ([`scaled_counts`]), event times from the ages on the agent's (possibly skewed) clock.
    fn deliver(
        &mut self,
        c: usize,
        sealed: Sealed,
        received_ms: u64,
        events: &[Event],
        active: &[usize],
    ) {
        let mut skew_ms: i64 = 0;
        for &i in active {
            if events[i].class == EventClass::ClockSkew && c % 10 == 0 {
                skew_ms = if c % 20 == 0 { 3_600_000 } else { -86_400_000 };
            }
        }
        let client = &self.clients[c];
        let net = if client.net_pool.is_empty() {
            client.net
        } else {
            client.net_pool[self.rng.range(0, client.net_pool.len() as u64) as usize]
        };
        let enrichment = Enrichment {
            asn: Some(ASN_BASE + client.asn as u32),
            country: Country::parse(COUNTRIES[client.country]),
        };
        let key = client.key;
        let rates = self.agent.rates();
        let received = UnixMillis(received_ms);
        let on_client = |ms: u64| UnixMillis((ms as i64 + skew_ms).max(0) as u64);
        let created = on_client(sealed.at_ms);
        let sent = on_client(received_ms.saturating_sub(40));
        for r in &sealed.reports {
            let mut id = [0u8; 16];
            id.iter_mut().for_each(|b| *b = self.rng.next_u64() as u8);
            let stored = StoredReport {
                id,
                received_at: received,
                event_at: event_time(received, created, Some(sent), on_client(r.observed_at().0)),
                source: Source::Agent,
                service: r.service().as_str().to_owned(),
                host: r.host().as_str().to_owned(),
                phase: r.phase(),
                status: r.status(),
                error_type: r.error_type().clone(),
                elapsed_ms: 120,
                network: NetworkType::Wifi,
                scope: r.scope(),
                count: r.count(),
                sample_ppm: rates.failure_ppm,
                client: Some(key),
                net: NetTag(net),
                enrichment: enrichment.clone(),
            };
            self.detector.observe_report(&stored, received);
            self.records += 1;
        }
        for (service, host, attempts, successes) in sealed.targets {
            let (attempts, successes) =
                scaled_counts(attempts, successes, rates.failure_ppm, rates.success_ppm);
            let t = StoredTargets {
                received_at: received,
                event_at: received,
                service,
                host,
                attempts,
                successes,
                client: key,
                net: NetTag(net),
                enrichment: enrichment.clone(),
            };
            self.detector.observe_targets(&t);
            self.records += 1;
        }
    }
    /// Failure probability of client `c` on service `s` at `now_ms`, and the incident's failure
    /// type (`active`: the events that may cover `now_ms`).
    fn fail_prob(
        &self,
        c: usize,
        s: usize,
        now_ms: u64,
        events: &[Event],
        active: &[usize],
    ) -> (f64, Option<ErrorType>) {
        let client = &self.clients[c];
        let base = SERVICES[s].1
            * (0.25 * self.service_drift[s]).exp()
            * self.asns[client.asn].mult
            * client.mult;
        let mut p = base.min(0.5);
        let mut kind = None;
        for &i in active {
            let e = &events[i];
            if !e.covers(now_ms) {
                continue;
            }
            let mine = e.service == s;
            let (hit, t) = match e.class {
                EventClass::ServiceOutage
                | EventClass::OutageAfterPoison
                | EventClass::SmallService => (mine, ErrorType::TcpRefused),
                EventClass::Flapping => {
                    let on = (now_ms - e.start_ms) / 60_000 % 2 == 0;
                    (mine && on, ErrorType::TcpRefused)
                }
                EventClass::SlowBurn if mine => {
                    let climbed = (now_ms - e.start_ms) as f64 / e.ramp_ms.max(1) as f64;
                    p = (p + e.delta * climbed.min(1.0)).min(1.0);
                    kind = Some(ErrorType::HttpError);
                    (false, ErrorType::HttpError)
                }
                EventClass::RegionOutage => {
                    (mine && Some(client.region()) == e.region, ErrorType::DnsTimedOut)
                }
                EventClass::AsnOutage | EventClass::SmallAsn => {
                    (mine && Some(client.asn) == e.asn, ErrorType::TcpTimedOut)
                }
                EventClass::OneClient | EventClass::RetryLoop => {
                    (mine && e.client == Some(c), ErrorType::HttpError)
                }
                EventClass::KeysOneNet => {
                    (mine && client.kind == (Kind::Extra { event: i }), ErrorType::TlsCertInvalid)
                }
                EventClass::Forge { lead_min, .. } => {
                    let failing = now_ms >= e.start_ms + u64::from(lead_min) * 60_000;
                    let extra = client.kind == (Kind::Extra { event: i });
                    (mine && extra && failing, ErrorType::TlsCertInvalid)
                }
                EventClass::GrayFailure if mine => {
                    p = (p + e.delta).min(1.0);
                    kind = Some(ErrorType::HttpError);
                    (false, ErrorType::HttpError)
                }
                _ => (false, ErrorType::Unknown),
            };
            if hit {
                return (1.0, Some(t));
            }
        }
        for (start, end, service, who) in self.live_blips.iter().map(|i| &self.blips[*i]) {
            if *service == s && now_ms >= *start && now_ms < *end {
                match who {
                    Some(ids) if ids.contains(&(c as u32)) => return (1.0, None),
                    None => p = (p + 0.002).min(1.0),
                    _ => {}
                }
            }
        }
        (p, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diurnal_share_is_four_to_one_and_lower_on_weekends() {
        // 2024-01-01 was a Monday; region 0 is UTC+1.
        let monday = 1_704_067_200_000u64;
        let peak = online_share(monday + 15 * HOUR_MS, 0);
        let trough = online_share(monday + 3 * HOUR_MS, 0);
        assert!((peak / trough - 4.0).abs() < 0.01, "{peak} {trough}");
        let saturday = online_share(monday + 5 * 24 * HOUR_MS + 15 * HOUR_MS, 0);
        assert!((saturday / peak - 0.8).abs() < 1e-9);
        assert_eq!(local_time(monday, 0).1, 0);
    }
}
