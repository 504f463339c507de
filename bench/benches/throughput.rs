//! throughput
fn main() {}
