//! The `capacity-auction` command line.
fn main() {}
