//! spikebench: a deterministic, seeded simulator of client traffic, failures and incidents that drives the detector (in progress on branch `wip/detect`).
