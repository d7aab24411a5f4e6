//! Failover end to end on Azure Blob Storage as Azurite (Microsoft's emulator) serves it: the
//! directory backend's scenarios (`tenure_tests::scenarios`: kill -9, SIGTERM, SIGSTOP of the
//! master, five nodes started at once), with the same checker and bounds. T = 2 s, p = 200 ms.
//!
//! Timing-sensitive: run with `--test-threads=1` (each test also holds `serial()`).

use tenure_tests::s3::azure_cluster;
use tenure_tests::{Timing, scenarios, serial};

#[test]
fn azure_kill9_of_the_master_fails_over_within_t_plus_2p() {
    let _serial = serial();
    let Some(mut c) = azure_cluster(Timing::standard(), "kill9") else {
        return;
    };
    scenarios::kill9_fails_over(&mut c);
}

#[test]
fn azure_sigterm_of_the_master_hands_over_within_p() {
    let _serial = serial();
    let Some(mut c) = azure_cluster(Timing::standard(), "sigterm") else {
        return;
    };
    scenarios::sigterm_hands_over(&mut c);
}

#[test]
fn azure_sigstop_of_the_master_self_fences_and_a_standby_takes_over() {
    let _serial = serial();
    let Some(mut c) = azure_cluster(Timing::standard(), "sigstop") else {
        return;
    };
    scenarios::sigstop_self_fences(&mut c, scenarios::freeze_now);
}

#[test]
fn azure_five_nodes_started_together_elect_exactly_one_master() {
    let _serial = serial();
    let Some(mut c) = azure_cluster(Timing::standard(), "five") else {
        return;
    };
    scenarios::five_started_together_elect_one(&mut c);
}
