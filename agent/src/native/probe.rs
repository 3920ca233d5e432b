//! Network probes: `check(url)` runs DNS -> TCP -> TLS -> HTTP and classifies the failing phase; `ping` checks whether a collector answers.
