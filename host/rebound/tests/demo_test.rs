//! `rebound demo` (what `cargo xtask demo` runs) works end to end: the
//! plugin tour, the hostile plugins contained, a round-trip drill, and the
//! round trip through the engine back to the original site with no side effect repeated —
//! between two example sites, then from OpenStack to KubeVirt and back, and
//! from AWS to KubeVirt and back when moto is installed (`REBOUND_PYTHON`;
//! required with `REBOUND_REQUIRE_PYTHON=1`).

use std::process::Command;

#[test]
fn the_demo_runs_a_round_trip() {
    let out = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .arg("demo")
        .arg("--plugins")
        .arg(rebound_runtime::testing::plugin_dir())
        .output()
        .expect("run rebound demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("NOT CONTAINED"), "{stdout}");
    assert!(!stdout.contains("MISSED"), "{stdout}");
    for expected in [
        "drill       22 steps, Succeeded → plan protected (primary lab-a, epoch 1)",
        "round trip: there ",
        "(failback RTO 3600.00s, met); sandboxes and copies removed",
        "failover    13 steps, Succeeded → plan failed_over (primary lab-b, epoch 2)",
        "failback    26 steps, Succeeded → plan protected (primary lab-a, epoch 3)",
        "running VMs now: lab-a 3, lab-b 0",
        "health gates: ",
        ":5432 accepted a connection",
        ":8080/healthz answered 200",
        "disk copies",
        "verified block by block",
        "Cross-platform round trip: OpenStack",
        "Succeeded → plan failed_over (primary kubevirt, epoch 2)",
        "Succeeded → plan protected (primary openstack, epoch 3)",
        "running now: OpenStack 2 servers, KubeVirt 0 VMs",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let aws = !stdout.contains("AWS ⇄ KubeVirt round trip skipped");
    assert!(
        aws || std::env::var("REBOUND_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "REBOUND_REQUIRE_PYTHON=1 but the AWS leg was skipped:\n{stdout}"
    );
    if aws {
        for expected in [
            "Cross-platform round trip: AWS",
            "Succeeded → plan protected (primary aws, epoch 3)",
            "mover appliances launched and released on AWS: ",
        ] {
            assert!(
                stdout.contains(expected),
                "missing {expected:?} in:\n{stdout}"
            );
        }
    }
    let legs = if aws { 3 } else { 2 };
    assert_eq!(stdout.matches("(objective").count(), 4 * legs, "{stdout}");
    assert_eq!(
        stdout
            .matches("repeated under one idempotency key: 0")
            .count(),
        legs,
        "{stdout}"
    );
}
