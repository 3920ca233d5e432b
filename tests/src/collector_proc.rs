//! Runs `vantage-collector` as a real process for tests (spawn with a config, poll readiness, kill -9).
