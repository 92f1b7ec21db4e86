//! `palisade demo` is the first thing a new user runs: it must work and show both allowed and
//! denied calls.

use std::time::Duration;

use crate::support::{palisade, run, text};

#[test]
fn demo_runs_a_mesh_and_shows_allowed_and_denied_calls() {
    let output = run(
        {
            let mut c = palisade();
            c.arg("demo");
            c
        },
        Duration::from_secs(60),
    );
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in [
        "200 ok",
        "403 forbidden",
        "400 bad request",
        "refused: strict mTLS takes no plaintext",
        "refused: TLS handshake failed",
        "app saw GET /api/v1/items/42?color=red from ns/web/sa/frontend",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
}
