#![allow(clippy::unwrap_used)]
//! Regression gate for the spike detector: one simulated day of spikebench with a fixed seed,
//! judged on event-level outcomes in simulated time (no wall-clock timing), so it is exact and
//! repeatable. The full benchmark is `cargo run --release -p vantage-tests --bin spikebench`.

use vantage_tests::spikebench::{EventClass, SimConfig, quantile, run};

#[test]
fn one_simulated_day_meets_the_event_level_goals() {
    // Smaller than the benchmark's 4000 clients so the debug build stays fast.
    let config = SimConfig { seed: 7, days: 1, clients: 2_500, asns: 100, ..SimConfig::default() };
    let report = run(&config);
    let table = report.table();
    println!("{table}");

    // Every hard-outage class was injected, and every injected hard outage paged in time.
    for class in [EventClass::ServiceOutage, EventClass::RegionOutage, EventClass::AsnOutage] {
        let c = report.class(class).unwrap();
        assert!(c.events >= 1, "no {} in the schedule\n{table}", class.label());
        assert_eq!(c.detected, c.events, "{} missed\n{table}", class.label());
        let max = quantile(&c.delays_s, 1.0).unwrap();
        assert!(max <= 60.0, "{} paged after {max} s\n{table}", class.label());
    }
    let (_, _, delays) = report.hard();
    assert!(quantile(&delays, 0.5).unwrap() <= 50.0, "{table}");

    // The ASN blackout is found by silence within 90 s; its flush pages nobody but leaves a
    // retrospective alert.
    let blackout = report.class(EventClass::AsnBlackout).unwrap();
    assert!(blackout.events >= 1, "{table}");
    assert_eq!(blackout.detected, blackout.events, "{table}");
    assert!(blackout.delays_s.iter().all(|d| *d <= 90.0), "{table}");
    assert_eq!(blackout.flush_pages, 0, "{table}");
    assert!(blackout.retro >= 1, "{table}");

    // Nuisances never page, and nothing else pages either.
    assert_eq!(report.nuisance_pages(), 0, "{table}");
    assert!(report.false_pages() <= 1, "{table}");
    assert_eq!(report.nuisance_retro, 0, "{table}");
    for class in EventClass::SCHEDULED.iter().filter(|c| !c.is_incident()) {
        assert!(
            report.class(*class).unwrap().events >= 1,
            "no {} injected\n{table}",
            class.label()
        );
    }
}
