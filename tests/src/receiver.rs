//! A minimal HTTPS receiver for agent tests: opens and verifies envelopes, counts connections, injects 5xx/429.
