#![allow(clippy::unwrap_used)]
//! Regression gate for the spike detector: several seeds of short simulated days of
//! spikebench (run in parallel), judged on event-level and alert-level outcomes in simulated
//! time (no wall-clock timing), so it is exact and repeatable. The full benchmark and its sweep
//! are `cargo run --release -p vantage-tests --bin spikebench -- --help`.

use vantage_tests::spikebench::{EventClass, Report, SimConfig, quantile, run};

/// Seeds of the gate: from the tuning set (1..=10); the benchmark reports on others.
/// Several seeds of 14 h at 1500 clients were tried and do not pass yet (seed 2: an ASN
/// outage and a blackout missed in a small fleet, a page from keys hopping over 50 /24s), so
/// the gate keeps the one seed and fleet size it had; more seeds join as the detector earns
/// them.
const SEEDS: [u64; 1] = [7];

fn check(report: &Report) {
    let table = report.table();
    eprintln!("{table}");

    // Every injected hard outage (outages after a poisoning burst included) paged in time.
    for class in EventClass::SCHEDULED.iter().filter(|c| c.is_hard()) {
        let c = report.class(*class).unwrap();
        assert_eq!(c.detected, c.events, "{} missed\n{table}", class.label());
        if let Some(max) = quantile(&c.delays_s, 1.0) {
            assert!(max <= 60.0, "{} paged after {max} s\n{table}", class.label());
        }
    }
    let (n, _, delays) = report.hard();
    assert!(n >= 3, "too few hard outages in the schedule\n{table}");
    assert!(quantile(&delays, 0.5).unwrap() <= 50.0, "{table}");

    // An ASN blackout is found by silence within 90 s; its flush pages nobody.
    let blackout = report.class(EventClass::AsnBlackout).unwrap();
    assert_eq!(blackout.detected, blackout.events, "{table}");
    assert!(blackout.delays_s.iter().all(|d| *d <= 90.0), "{table}");
    assert_eq!(blackout.flush_pages, 0, "{table}");

    // Nuisances never page, and nothing else pages either.
    assert_eq!(report.nuisance_pages(), 0, "{table}");
    assert!(report.false_pages() <= 1, "{table}");
    assert_eq!(report.nuisance_retro, 0, "{table}");
}

#[test]
fn short_days_on_several_seeds_meet_the_event_level_goals() {
    // Smaller than the benchmark's 4000 clients so the debug build stays fast; one thread per
    // seed.
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = SEEDS
            .iter()
            .map(|seed| {
                s.spawn(move || {
                    let config = SimConfig {
                        seed: *seed,
                        days: 1,
                        hours: 0,
                        clients: 2_500,
                        asns: 100,
                        ..SimConfig::default()
                    };
                    run(&config)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &reports {
        check(r);
    }
    // Across the seeds, every scheduled class was injected at least once.
    for class in EventClass::SCHEDULED {
        let n: usize = reports.iter().map(|r| r.class(class).unwrap().events).sum();
        assert!(n >= 1, "no {} injected on seeds {SEEDS:?}", class.label());
    }
    // Blackouts left a retrospective alert somewhere.
    let retro: usize =
        reports.iter().map(|r| r.class(EventClass::AsnBlackout).unwrap().retro).sum();
    let blackouts: usize =
        reports.iter().map(|r| r.class(EventClass::AsnBlackout).unwrap().events).sum();
    assert!(blackouts == 0 || retro >= 1);
}
