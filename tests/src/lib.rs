//! Vantage end-to-end tests (in progress).
