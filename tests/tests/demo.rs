//! `cargo xtask demo` as a test: the demo checks every claim it prints
//! (both nodes forward, both downloads survive the node loss, the returning
//! node takes its instance back under a running download, a drained backend
//! gets no new connection) and fails when one does not hold. Needs root.

#[test]
fn the_demo_runs_and_every_claim_holds() {
    halb_lab::demo::run().expect("demo");
}
