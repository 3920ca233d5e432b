//! Vantage collector (in progress).
