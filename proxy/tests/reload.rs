//! Live reload end to end: palisade's inbound side on 127.0.0.1:0 with a [`Reloader`]
//! watching policy and identity directories laid out like Kubernetes volumes, real mTLS
//! clients, per-test rcgen CAs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reload_support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use palisade_proxy::pki::{Ca, SvidOptions};
use palisade_proxy::reload::{POLICY_INVALID, ReloadConfig};
use palisade_proxy::tls::IdentityPaths;
use reload_support::*;

const H1: &[u8] = b"http/1.1";
const H2: &[u8] = b"h2";

/// A reload config for tests: no SIGHUP (tests share a process), a short debounce.
fn config(policy: PathBuf, identity: IdentityPaths) -> ReloadConfig {
    let mut config = ReloadConfig::new(vec![policy], identity);
    config.sighup = false;
    config.debounce = Duration::from_millis(30);
    config
}

/// One request of the load: when it was sent, when its answer was complete, what it was.
struct Sample {
    h2: bool,
    start: Instant,
    end: Instant,
    probe: bool,
    outcome: Result<u16, String>,
}

/// One policy generation: from when it may have been in force, and whether it allows
/// `/probe`. It was certainly in force from `observed` until the next generation's `written`.
struct Generation {
    written: Instant,
    observed: Instant,
    probe_allowed: bool,
}

/// Whether `outcome` of a probe sent at `start` and answered at `end` matches a policy that
/// may have been in force at some moment in between: generation `i` may be in force from its
/// `written` until generation `i + 1` was `observed` in force.
fn probe_consistent(generations: &[Generation], start: Instant, end: Instant, status: u16) -> bool {
    generations.iter().enumerate().any(|(i, generation)| {
        let until = generations.get(i + 1).map(|next| next.observed);
        let overlaps = generation.written <= end && until.is_none_or(|until| start <= until);
        let expected = if generation.probe_allowed { 200 } else { 403 };
        overlaps && status == expected
    })
}

async fn load_h1(
    addr: std::net::SocketAddr,
    client: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut sender = h1_connection(addr, &client).await;
    let mut samples = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let probe = n.is_multiple_of(2);
        let path = if probe {
            "/probe".to_owned()
        } else {
            format!("/stable/{n}")
        };
        let start = Instant::now();
        let outcome = h1_get(&mut sender, &path).await;
        samples.push(Sample {
            h2: false,
            start,
            end: Instant::now(),
            probe,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

async fn load_h2(
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    stop: Arc<AtomicBool>,
    offset: usize,
) -> Vec<Sample> {
    let mut sender = sender;
    let mut samples = Vec::new();
    let mut n = offset;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let probe = n.is_multiple_of(2);
        let path = if probe {
            "/probe".to_owned()
        } else {
            format!("/stable/{n}")
        };
        let start = Instant::now();
        let outcome = h2_get(&mut sender, &path).await;
        samples.push(Sample {
            h2: true,
            start,
            end: Instant::now(),
            probe,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    samples
}

/// 50 policy swaps and 20 certificate swaps (a CA rotation with overlap among them), all as
/// Kubernetes `..data` symlink swaps, under HTTP/1.1 keep-alive and h2 load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_drop_nothing_and_decide_each_request_by_one_policy() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(TD).unwrap();
    let new_ca = Ca::new(TD).unwrap();
    let both = format!("{}{}", old_ca.bundle_pem(), new_ca.bundle_pem());

    let mut policy_dir = AtomicDir::new(&tmp.path().join("policy"));
    policy_dir.publish(&[("policy.yaml", &policy_text(0, true))]);
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let svid = old_ca
        .issue_svid(SERVER_ID, &SvidOptions::default())
        .unwrap();
    identity_dir.publish(&identity_files(&svid, old_ca.bundle_pem()));

    let served = Served::start(config(
        policy_dir.root.clone(),
        IdentityPaths::in_dir(&identity_dir.root),
    ))
    .await;
    let addr = served.addr;

    // Clients of the old CA carry the load; their connections must outlive the rotation.
    let old_h1 = client(&tmp.path().join("c1"), &old_ca, FRONTEND, &both, H1);
    let old_h2 = client(&tmp.path().join("c2"), &old_ca, FRONTEND, &both, H2);
    let new_h1 = client(&tmp.path().join("c3"), &new_ca, FRONTEND, &both, H1);

    // Before the overlap a new-CA peer is refused.
    assert!(fresh_get(addr, &new_h1, "/stable/1").await.is_err());

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        load.push(tokio::spawn(load_h1(addr, old_h1.clone(), stop.clone())));
    }
    for connection in 0..2 {
        let sender = h2_connection(addr, &old_h2).await;
        for stream in 0..2 {
            let offset = connection * 2 + stream;
            load.push(tokio::spawn(load_h2(sender.clone(), stop.clone(), offset)));
        }
    }

    let mut generations = vec![Generation {
        written: t0,
        observed: t0,
        probe_allowed: true,
    }];
    let mut versions = BTreeSet::from([served.policy.load().version().to_owned()]);
    let mut identity_swaps = 0;
    let mut old_ca_dropped = None;
    for generation in 1..=50usize {
        let probe_allowed = generation.is_multiple_of(2);
        let previous = served.policy.load().version().to_owned();
        let written = Instant::now();
        policy_dir.publish(&[("policy.yaml", &policy_text(generation, probe_allowed))]);
        let version = served.policy_changed_from(&previous).await;
        generations.push(Generation {
            written,
            observed: Instant::now(),
            probe_allowed,
        });
        assert!(
            versions.insert(version),
            "every generation has its own version"
        );

        if generation % 5 == 1 || generation % 5 == 3 {
            identity_swaps += 1;
            rotate_identity(
                &served,
                &mut identity_dir,
                identity_swaps,
                &old_ca,
                &new_ca,
                &both,
                &old_h1,
                &new_h1,
            )
            .await;
            if identity_swaps == 15 {
                old_ca_dropped = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(identity_swaps, 20);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    let mut samples = Vec::new();
    for task in load {
        samples.extend(task.await.unwrap());
    }
    let elapsed = t0.elapsed();
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| s.outcome.is_err())
        .map(|s| &s.outcome)
        .collect();
    assert!(
        failed.is_empty(),
        "{} requests failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let denied_stable = samples
        .iter()
        .filter(|s| !s.probe && s.outcome != Ok(200))
        .count();
    assert_eq!(
        denied_stable, 0,
        "always-allowed requests were not answered 200"
    );
    let inconsistent: Vec<_> = samples
        .iter()
        .filter(|s| s.probe)
        .filter(|s| !probe_consistent(&generations, s.start, s.end, *s.outcome.as_ref().unwrap()))
        .map(|s| (s.start - t0, s.end - t0, s.outcome.clone()))
        .collect();
    assert!(
        inconsistent.is_empty(),
        "decided by a policy not in force: {inconsistent:?}"
    );
    let probes = samples.iter().filter(|s| s.probe).count();
    println!(
        "{} requests ({probes} probes) in {elapsed:?}",
        samples.len()
    );
    assert!(samples.len() >= 500, "too little load: {}", samples.len());
    assert!(samples.iter().any(|s| s.probe && s.outcome == Ok(200)));
    assert!(samples.iter().any(|s| s.probe && s.outcome == Ok(403)));

    // The old-CA clients' connections outlived their CA's removal from the bundle: refused
    // for new handshakes, they kept their established sessions.
    let dropped = old_ca_dropped.unwrap();
    for h2 in [false, true] {
        let after = samples
            .iter()
            .filter(|s| s.h2 == h2 && s.start > dropped && s.outcome.is_ok())
            .count();
        assert!(
            after >= 20,
            "h2={h2}: {after} requests after the old CA left"
        );
    }

    let status = served.status.snapshot();
    assert_eq!(status.policy.loads, 51);
    assert_eq!(status.identity.loads, 21);
    assert_eq!(status.failures().count(), 0, "{status:?}");
    assert_eq!(status.identity.spiffe_id, SERVER_ID);
    served.stop().await;
}

/// Identity swap `n` of 20: 1–8 re-issue from the old CA; 9–14 overlap (bundle of both CAs;
/// the server's SVID from the old CA until 11, then from the new one); 15–20 the new CA only.
#[allow(clippy::too_many_arguments)]
async fn rotate_identity(
    served: &Served,
    identity_dir: &mut AtomicDir,
    n: usize,
    old_ca: &Ca,
    new_ca: &Ca,
    both: &str,
    old_client: &Arc<rustls::ClientConfig>,
    new_client: &Arc<rustls::ClientConfig>,
) {
    let (issuer, bundle) = match n {
        1..=8 => (old_ca, old_ca.bundle_pem()),
        9..=11 => (old_ca, both),
        12..=14 => (new_ca, both),
        _ => (new_ca, new_ca.bundle_pem()),
    };
    let svid = issuer
        .issue_svid(SERVER_ID, &SvidOptions::default())
        .unwrap();
    let before = served.tls.load_full();
    identity_dir.publish(&identity_files(&svid, bundle));
    served.tls_changed_from(&before).await;

    // A new handshake gets the new certificate.
    let leaf = leaf_der(&svid);
    let accepted: &[&Arc<rustls::ClientConfig>] = match n {
        1..=8 => &[old_client],
        9..=14 => &[old_client, new_client],
        _ => &[new_client],
    };
    for client in accepted {
        let (status, presented) = fresh_get(served.addr, client, "/stable/1").await.unwrap();
        assert_eq!(status, 200, "swap {n}");
        assert!(
            presented == leaf,
            "swap {n}: the new handshake got an old certificate"
        );
    }
    match n {
        1..=8 => assert!(
            fresh_get(served.addr, new_client, "/stable/1")
                .await
                .is_err(),
            "swap {n}: new CA accepted before the overlap"
        ),
        15.. => assert!(
            fresh_get(served.addr, old_client, "/stable/1")
                .await
                .is_err(),
            "swap {n}: old CA accepted after leaving the bundle"
        ),
        _ => {}
    }
}

#[tokio::test]
async fn reload_keeps_last_good_policy_and_picks_up_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(TD).unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, policy_text(1, true)).unwrap();
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let svid = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    identity_dir.publish(&identity_files(&svid, ca.bundle_pem()));
    let mut config = config(policy.clone(), IdentityPaths::in_dir(&identity_dir.root));
    config.interval = None;
    let served = Served::start(config).await;
    let good = served.policy.load().version().to_owned();

    let h2 = client(
        &tmp.path().join("client"),
        &ca,
        FRONTEND,
        ca.bundle_pem(),
        H2,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_h2(
        h2_connection(served.addr, &h2).await,
        stop.clone(),
        0,
    ));

    // An unclosed '{' in a path template, written the way editors save (rename over).
    let bad = policy_text(2, false).replace("/stable/{id}", "/stable/{id");
    let staged = tmp.path().join(".policy.yaml.swp");
    std::fs::write(&staged, &bad).unwrap();
    std::fs::rename(&staged, &policy).unwrap();
    let status = wait_for(|| {
        let status = served.status.snapshot();
        (status.policy.failures.get(POLICY_INVALID) == Some(&1)).then_some(status)
    })
    .await;
    let error = status.policy.last_error.as_ref().unwrap();
    println!("{}", error.message);
    assert_eq!(error.kind, POLICY_INVALID);
    let location = format!("{}:12:", policy.display());
    assert!(error.message.starts_with(&location), "{}", error.message);
    assert!(
        error.message.contains("spec.rules[0].to[0].paths[0]"),
        "{}",
        error.message
    );
    assert_eq!(status.policy.version, good);
    assert_eq!(served.policy.load().version(), good);
    assert_eq!(status.policy.loads, 1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Fixed: picked up.
    std::fs::write(&staged, policy_text(3, false)).unwrap();
    std::fs::rename(&staged, &policy).unwrap();
    let fixed = served.policy_changed_from(&good).await;
    assert_eq!(served.status.snapshot().policy.version, fixed);
    assert_eq!(served.status.snapshot().policy.loads, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = load.await.unwrap();
    assert!(samples.len() > 10);
    for sample in &samples {
        let status = sample.outcome.clone().unwrap();
        if !sample.probe {
            assert_eq!(status, 200);
        }
    }
    // The probe was allowed by the good policy all through the bad one.
    let before_fix: Vec<_> = samples.iter().filter(|s| s.probe).take(5).collect();
    assert!(before_fix.iter().all(|s| s.outcome == Ok(200)));
    served.stop().await;
}

#[tokio::test]
async fn reload_keeps_last_good_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(TD).unwrap();
    let stranger_ca = Ca::new(TD).unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, policy_text(1, true)).unwrap();
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let good = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    identity_dir.publish(&identity_files(&good, ca.bundle_pem()));
    let mut config = config(policy, IdentityPaths::in_dir(&identity_dir.root));
    config.interval = None;
    let served = Served::start(config).await;
    let h1 = client(
        &tmp.path().join("client"),
        &ca,
        FRONTEND,
        ca.bundle_pem(),
        H1,
    );
    let in_force = served.status.snapshot().identity.version.clone();

    let other = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    let expired = ca.issue_svid(SERVER_ID, &SvidOptions::expired()).unwrap();
    let untrusted = stranger_ca
        .issue_svid(SERVER_ID, &SvidOptions::default())
        .unwrap();
    let imposter = ca
        .issue_svid(
            "spiffe://cluster.local/ns/shop/sa/imposter",
            &SvidOptions::default(),
        )
        .unwrap();
    let bundle = ca.bundle_pem();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "identity_key_mismatch",
            vec![
                ("tls.crt", other.chain_pem()),
                ("tls.key", good.key_pem()),
                ("ca.crt", bundle),
            ],
        ),
        (
            "identity_expired",
            identity_files(&expired, bundle).to_vec(),
        ),
        (
            "identity_untrusted",
            identity_files(&untrusted, bundle).to_vec(),
        ),
        (
            "identity_read",
            vec![("tls.crt", other.chain_pem()), ("ca.crt", bundle)],
        ),
        (
            "identity_id_changed",
            identity_files(&imposter, bundle).to_vec(),
        ),
    ];
    for (kind, files) in cases {
        identity_dir.publish(&files);
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            let status = served.status.snapshot();
            if status.failures_of(kind) == 1 {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} not reported: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let error = status.identity.last_error.as_ref().unwrap();
        assert_eq!(error.kind, kind);
        assert!(!error.message.contains("PRIVATE KEY"), "{}", error.message);
        assert_eq!(status.identity.version, in_force, "{kind}");
        assert_eq!(status.identity.loads, 1, "{kind}");
        // New handshakes still get the last good certificate.
        let (code, presented) = fresh_get(served.addr, &h1, "/stable/1").await.unwrap();
        assert_eq!(code, 200, "{kind}");
        assert!(
            presented == leaf_der(&good),
            "{kind}: not the last good certificate"
        );
        println!("{kind}: {}", error.message);
    }
    assert_eq!(served.status.snapshot().failures().count(), 5);

    let renewed = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    let before = served.tls.load_full();
    identity_dir.publish(&identity_files(&renewed, bundle));
    served.tls_changed_from(&before).await;
    let (code, presented) = fresh_get(served.addr, &h1, "/stable/1").await.unwrap();
    assert_eq!(code, 200);
    assert!(presented == leaf_der(&renewed));
    let status = served.status.snapshot();
    assert_eq!(status.identity.loads, 2);
    assert_ne!(status.identity.version, in_force);
    served.stop().await;
}

#[tokio::test]
async fn interval_recheck_heals_a_missed_event_and_unchanged_files_do_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(TD).unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, policy_text(1, true)).unwrap();
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let svid = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    identity_dir.publish(&identity_files(&svid, ca.bundle_pem()));
    let mut config = config(policy.clone(), IdentityPaths::in_dir(&identity_dir.root));
    config.watch = false;
    config.interval = Some(Duration::from_millis(100));
    let served = Served::start(config).await;
    let first = served.policy.load().version().to_owned();

    // Several interval ticks over unchanged files load nothing.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let status = served.status.snapshot();
    assert_eq!((status.policy.loads, status.identity.loads), (1, 1));

    std::fs::write(&policy, policy_text(2, false)).unwrap();
    let second = served.policy_changed_from(&first).await;
    assert_ne!(second, first);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let status = served.status.snapshot();
    assert_eq!((status.policy.loads, status.identity.loads), (2, 1));
    assert_eq!(status.failures().count(), 0);
    served.stop().await;
}

#[tokio::test]
async fn sighup_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(TD).unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, policy_text(1, true)).unwrap();
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let svid = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    identity_dir.publish(&identity_files(&svid, ca.bundle_pem()));
    let mut config = config(policy.clone(), IdentityPaths::in_dir(&identity_dir.root));
    config.watch = false;
    config.interval = None;
    config.sighup = true;
    let served = Served::start(config).await;
    let first = served.policy.load().version().to_owned();
    // Let the task install its SIGHUP handler before a signal is sent.
    assert!(served.reload.reload_now().await);

    std::fs::write(&policy, policy_text(2, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served.policy.load().version(),
        first,
        "nothing but SIGHUP may reload here"
    );

    // The shell's built-in kill: no procps needed.
    let hup = format!("kill -HUP {}", std::process::id());
    let sent = std::process::Command::new("sh").args(["-c", &hup]).status();
    assert!(sent.unwrap().success(), "{hup} failed");
    let second = served.policy_changed_from(&first).await;
    assert_ne!(second, first);
    served.stop().await;
}

#[tokio::test]
async fn reload_now_on_unchanged_files_keeps_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(TD).unwrap();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, policy_text(1, true)).unwrap();
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let svid = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    identity_dir.publish(&identity_files(&svid, ca.bundle_pem()));
    let served = Served::start(config(policy, IdentityPaths::in_dir(&identity_dir.root))).await;
    let tls = served.tls.load_full();
    assert!(served.reload.reload_now().await);
    let status = served.status.snapshot();
    assert_eq!((status.policy.loads, status.identity.loads), (1, 1));
    assert!(
        Arc::ptr_eq(&tls, &served.tls.load_full()),
        "an unchanged identity is not swapped"
    );
    let json = serde_json::to_value(&*status).unwrap();
    assert_eq!(json["identity"]["spiffe_id"], SERVER_ID);
    assert!(json["identity"]["not_after"].as_i64().unwrap() > 0);
    assert!(
        json["policy"]["paths"][0]
            .as_str()
            .unwrap()
            .ends_with("policy.yaml")
    );
    served.stop().await;
}

#[tokio::test]
async fn a_replaced_policy_directory_is_picked_up() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(TD).unwrap();
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("orders.yaml"), policy_text(1, true)).unwrap();
    let mut identity_dir = AtomicDir::new(&tmp.path().join("identity"));
    let svid = ca.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    identity_dir.publish(&identity_files(&svid, ca.bundle_pem()));
    let mut config = config(policies.clone(), IdentityPaths::in_dir(&identity_dir.root));
    config.interval = Some(Duration::from_millis(200));
    let served = Served::start(config).await;
    let first = served.policy.load().version().to_owned();

    // The watched directory itself goes away (its inotify watch with it) and comes back.
    std::fs::remove_dir_all(&policies).unwrap();
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("orders.yaml"), policy_text(2, false)).unwrap();
    let second = served.policy_changed_from(&first).await;

    // Watched again: a later change is picked up too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(policies.join("orders.yaml"), policy_text(3, true)).unwrap();
    let third = served.policy_changed_from(&second).await;
    assert_ne!(third, first);
    served.stop().await;
}
