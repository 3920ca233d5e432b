//! The `vantage-collector` command line (being built).
fn main() {}
