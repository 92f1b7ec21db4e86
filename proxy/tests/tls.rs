//! Mutual TLS with SPIFFE identities, over real sockets: tokio-rustls clients and servers on
//! 127.0.0.1:0 with certificates minted per test by `palisade_proxy::pki`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use palisade_config::SpiffeId;
use palisade_proxy::pki::{Ca, Svid, SvidOptions, write_identity};
use palisade_proxy::tls::{
    ClientOptions, HandshakeFailure, Identity, IdentityError, IdentityPaths, SpiffeServerVerifier,
    TrustDomains, client_config, peer_id, provider, server_config, server_name,
};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "cluster.local";
const SERVER_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/web/sa/frontend";
const LIMIT: Duration = Duration::from_secs(10);
const BOTH_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What the server saw of a successful handshake.
#[derive(Debug)]
struct Accepted {
    peer: Option<SpiffeId>,
    alpn: Option<Vec<u8>>,
    version: Option<rustls::ProtocolVersion>,
}

/// What the client saw of a successful handshake and first read.
#[derive(Debug)]
struct Connected {
    peer: Option<SpiffeId>,
    alpn: Option<Vec<u8>>,
    resumed: bool,
}

#[derive(Debug)]
struct Outcome {
    server: Result<Accepted, HandshakeFailure>,
    client: Result<Connected, HandshakeFailure>,
}

/// An identity loaded from files written for `id` by `ca`; the directory lives as long as the
/// returned guard.
fn identity(ca: &Ca, id: &str) -> (Identity, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let svid = ca.issue_svid(id, &SvidOptions::default()).unwrap();
    let paths = write_identity(dir.path(), &svid, ca.bundle_pem()).unwrap();
    (Identity::load(&paths).unwrap(), dir)
}

fn trust() -> TrustDomains {
    TrustDomains::new([TD]).unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn inbound(ca: &Ca) -> (Arc<ServerConfig>, Identity, TempDir) {
    let (identity, dir) = identity(ca, SERVER_ID);
    (server_config(&identity, &trust()).unwrap(), identity, dir)
}

fn chain_and_key(svid: &Svid) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(svid.chain_pem().as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(svid.key_pem().as_bytes()).unwrap();
    (chain, key)
}

/// A client that presents `svid` (which need not be a valid SVID) or no certificate, verifies
/// the server against `roots` like palisade does, offers `alpn` over `versions`.
fn raw_client(
    svid: Option<&Svid>,
    roots: &Arc<RootCertStore>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = SpiffeServerVerifier::new(roots.clone(), trust(), None, &provider);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match svid {
        Some(svid) => {
            let (chain, key) = chain_and_key(svid);
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client presenting an SVID issued by `ca` with `options`.
fn client_with(
    ca: &Ca,
    spiffe_id: &str,
    options: &SvidOptions,
    roots: &Arc<RootCertStore>,
) -> Arc<ClientConfig> {
    let svid = ca.issue_svid(spiffe_id, options).unwrap();
    raw_client(Some(&svid), roots, BOTH_VERSIONS, &[b"h2", b"http/1.1"])
}

/// One connection: the server accepts, writes one byte and waits for the client to close; the
/// client connects and reads that byte (in TLS 1.3 a rejected client certificate only shows
/// there).
async fn connect(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = timeout(LIMIT, listener.accept()).await.unwrap().unwrap();
        let accepted = timeout(LIMIT, TlsAcceptor::from(server).accept(tcp))
            .await
            .unwrap();
        let mut tls = accepted.map_err(|e| HandshakeFailure::of_io(&e))?;
        let (_, conn) = tls.get_ref();
        let seen = Accepted {
            peer: peer_id(conn),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
        };
        tls.write_all(b"k").await.unwrap();
        tls.flush().await.unwrap();
        let mut rest = Vec::new();
        let _ = timeout(LIMIT, tls.read_to_end(&mut rest)).await.unwrap();
        Ok(seen)
    });

    let client_result = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = timeout(
            LIMIT,
            TlsConnector::from(client).connect(server_name(addr.ip()), tcp),
        )
        .await
        .unwrap()
        .map_err(|e| HandshakeFailure::of_io(&e))?;
        let mut byte = [0u8; 1];
        timeout(LIMIT, tls.read_exact(&mut byte))
            .await
            .unwrap()
            .map_err(|e| HandshakeFailure::of_io(&e))?;
        let (_, conn) = tls.get_ref();
        let seen = Connected {
            peer: peer_id(conn),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        };
        let _ = tls.shutdown().await;
        Ok(seen)
    }
    .await;

    let server_result = timeout(LIMIT, server_task).await.unwrap().unwrap();
    Outcome {
        server: server_result,
        client: client_result,
    }
}

/// The server must refuse a client presenting `spiffe_id` with `options` for `reason`.
async fn assert_client_refused(spiffe_id: &str, options: SvidOptions, reason: HandshakeFailure) {
    let ca = Ca::new(TD).unwrap();
    let (server, server_identity, _dir) = inbound(&ca);
    let client = client_with(&ca, spiffe_id, &options, server_identity.roots());
    let outcome = connect(server, client).await;
    assert_eq!(
        outcome.server.as_ref().err(),
        Some(&reason),
        "server side of {spiffe_id}"
    );
    assert!(
        outcome.client.is_err(),
        "client must not get data: {:?}",
        outcome.client
    );
}

// === inbound: accepted peers ===

#[tokio::test]
async fn accepts_good_peer_and_names_it() {
    let ca = Ca::new(TD).unwrap();
    let (server, _server_identity, _d1) = inbound(&ca);
    let (client_identity, _d2) = identity(&ca, CLIENT_ID);
    let options = ClientOptions {
        alpn: vec![b"h2".to_vec()],
        ..ClientOptions::new(trust())
    };
    let client = client_config(&client_identity, &options).unwrap();

    let outcome = connect(server, client).await;
    let accepted = outcome.server.unwrap();
    assert_eq!(accepted.peer, Some(id(CLIENT_ID)));
    assert_eq!(accepted.version, Some(rustls::ProtocolVersion::TLSv1_3));
    let connected = outcome.client.unwrap();
    assert_eq!(connected.peer, Some(id(SERVER_ID)));
    assert_eq!(connected.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn accepts_peer_chained_through_an_intermediate() {
    let ca = Ca::new(TD).unwrap();
    let intermediate = ca.intermediate().unwrap();
    let (server, server_identity, _d1) = inbound(&ca);
    // The pod's own identity may chain through the intermediate too.
    let (client_identity, _d2) = identity(&intermediate, CLIENT_ID);
    assert_eq!(client_identity.id(), &id(CLIENT_ID));
    assert_eq!(client_identity.chain().len(), 2);
    let client = client_with(
        &intermediate,
        CLIENT_ID,
        &SvidOptions::default(),
        server_identity.roots(),
    );

    let outcome = connect(server, client).await;
    assert_eq!(outcome.server.unwrap().peer, Some(id(CLIENT_ID)));
}

#[tokio::test]
async fn negotiates_h2_and_http1() {
    let ca = Ca::new(TD).unwrap();
    let (server, server_identity, _d) = inbound(&ca);
    let svid = ca.issue_svid(CLIENT_ID, &SvidOptions::default()).unwrap();
    for (offer, expected) in [
        (&[&b"h2"[..], b"http/1.1"][..], &b"h2"[..]),
        (&[&b"http/1.1"[..]][..], &b"http/1.1"[..]),
        (&[&b"http/1.1"[..], b"h2"][..], &b"h2"[..]),
    ] {
        let client = raw_client(Some(&svid), server_identity.roots(), BOTH_VERSIONS, offer);
        let outcome = connect(server.clone(), client).await;
        assert_eq!(outcome.server.unwrap().alpn.as_deref(), Some(expected));
        assert_eq!(outcome.client.unwrap().alpn.as_deref(), Some(expected));
    }
    // No ALPN offered: no protocol, the handshake still succeeds.
    let client = raw_client(Some(&svid), server_identity.roots(), BOTH_VERSIONS, &[]);
    assert_eq!(
        connect(server.clone(), client).await.server.unwrap().alpn,
        None
    );
    // Only unknown protocols offered: refused (RFC 7301).
    let client = raw_client(
        Some(&svid),
        server_identity.roots(),
        BOTH_VERSIONS,
        &[b"smtp"],
    );
    let outcome = connect(server, client).await;
    assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::Protocol);
}

#[tokio::test]
async fn tls12_only_client_is_accepted() {
    let ca = Ca::new(TD).unwrap();
    let (server, server_identity, _d) = inbound(&ca);
    let svid = ca.issue_svid(CLIENT_ID, &SvidOptions::default()).unwrap();
    let client = raw_client(
        Some(&svid),
        server_identity.roots(),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    let outcome = connect(server, client).await;
    let accepted = outcome.server.unwrap();
    assert_eq!(accepted.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(accepted.peer, Some(id(CLIENT_ID)));
    assert_eq!(outcome.client.unwrap().peer, Some(id(SERVER_ID)));
}

#[tokio::test]
async fn resumed_session_keeps_peer_id() {
    let ca = Ca::new(TD).unwrap();
    let (server, _server_identity, _d1) = inbound(&ca);
    let (client_identity, _d2) = identity(&ca, CLIENT_ID);
    let client = client_config(&client_identity, &ClientOptions::new(trust())).unwrap();

    let first = connect(server.clone(), client.clone()).await;
    assert!(!first.client.unwrap().resumed);
    let second = connect(server, client).await;
    assert_eq!(second.server.unwrap().peer, Some(id(CLIENT_ID)));
    let connected = second.client.unwrap();
    assert!(
        connected.resumed,
        "second connection should resume the session"
    );
    assert_eq!(connected.peer, Some(id(SERVER_ID)));
}

#[tokio::test]
async fn new_server_config_does_not_resume_old_sessions() {
    let ca = Ca::new(TD).unwrap();
    let (server_identity, _d1) = identity(&ca, SERVER_ID);
    let (client_identity, _d2) = identity(&ca, CLIENT_ID);
    let client = client_config(&client_identity, &ClientOptions::new(trust())).unwrap();

    let before = server_config(&server_identity, &trust()).unwrap();
    connect(before, client.clone()).await.client.unwrap();
    let reloaded = server_config(&server_identity, &trust()).unwrap();
    let outcome = connect(reloaded, client).await;
    assert!(!outcome.client.unwrap().resumed);
}

#[tokio::test]
async fn bundle_with_old_and_new_ca_accepts_both_until_old_leaves() {
    let old = Ca::new(TD).unwrap();
    let new = Ca::new(TD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server_svid = new.issue_svid(SERVER_ID, &SvidOptions::default()).unwrap();
    let overlap = format!("{}{}", old.bundle_pem(), new.bundle_pem());
    let paths = write_identity(dir.path(), &server_svid, &overlap).unwrap();
    let during = Identity::load(&paths).unwrap();
    let server = server_config(&during, &trust()).unwrap();
    for ca in [&old, &new] {
        let client = client_with(ca, CLIENT_ID, &SvidOptions::default(), during.roots());
        assert_eq!(
            connect(server.clone(), client).await.server.unwrap().peer,
            Some(id(CLIENT_ID))
        );
    }

    let paths = write_identity(dir.path(), &server_svid, new.bundle_pem()).unwrap();
    let after = Identity::load(&paths).unwrap();
    let server = server_config(&after, &trust()).unwrap();
    let client = client_with(&old, CLIENT_ID, &SvidOptions::default(), after.roots());
    assert_eq!(
        connect(server.clone(), client).await.server.unwrap_err(),
        HandshakeFailure::Untrusted
    );
    let client = client_with(&new, CLIENT_ID, &SvidOptions::default(), after.roots());
    assert!(connect(server, client).await.server.is_ok());
}

// === inbound: refused peers, each with its reason ===

#[tokio::test]
async fn refuses_two_uri_sans() {
    let options = SvidOptions {
        extra_uri_sans: vec!["spiffe://cluster.local/ns/admin/sa/root".into()],
        ..SvidOptions::default()
    };
    assert_client_refused(CLIENT_ID, options, HandshakeFailure::MultipleUriSans).await;
}

#[tokio::test]
async fn refuses_foreign_trust_domain_with_trusted_suffix() {
    assert_client_refused(
        "spiffe://cluster.local.evil.com/ns/web/sa/frontend",
        SvidOptions::default(),
        HandshakeFailure::ForeignTrustDomain,
    )
    .await;
}

#[tokio::test]
async fn refuses_foreign_trust_domain() {
    assert_client_refused(
        "spiffe://evil.example/ns/web/sa/frontend",
        SvidOptions::default(),
        HandshakeFailure::ForeignTrustDomain,
    )
    .await;
}

#[tokio::test]
async fn refuses_userinfo_in_trust_domain() {
    assert_client_refused(
        "spiffe://cluster.local@evil/ns/a/sa/b",
        SvidOptions::default(),
        HandshakeFailure::InvalidSpiffeId,
    )
    .await;
}

#[tokio::test]
async fn refuses_upper_case_trust_domain() {
    assert_client_refused(
        "spiffe://CLUSTER.LOCAL/ns/web/sa/frontend",
        SvidOptions::default(),
        HandshakeFailure::InvalidSpiffeId,
    )
    .await;
}

#[tokio::test]
async fn refuses_dns_only_certificate() {
    let options = SvidOptions {
        uri_san: false,
        dns_names: vec!["frontend.web.svc.cluster.local".into()],
        ..SvidOptions::default()
    };
    assert_client_refused(CLIENT_ID, options, HandshakeFailure::NoSpiffeId).await;
}

#[tokio::test]
async fn refuses_cn_only_certificate() {
    let options = SvidOptions {
        uri_san: false,
        common_name: Some(CLIENT_ID.into()),
        ..SvidOptions::default()
    };
    assert_client_refused(CLIENT_ID, options, HandshakeFailure::NoSpiffeId).await;
}

#[tokio::test]
async fn refuses_expired_certificate() {
    assert_client_refused(CLIENT_ID, SvidOptions::expired(), HandshakeFailure::Expired).await;
}

#[tokio::test]
async fn refuses_certificate_not_valid_yet() {
    let now = std::time::SystemTime::now();
    let options = SvidOptions {
        not_before: now + Duration::from_secs(3600),
        not_after: now + Duration::from_secs(7200),
        ..SvidOptions::default()
    };
    assert_client_refused(CLIENT_ID, options, HandshakeFailure::NotYetValid).await;
}

#[tokio::test]
async fn refuses_missing_client_auth_eku() {
    let server_auth_only = SvidOptions {
        client_auth: false,
        ..SvidOptions::default()
    };
    assert_client_refused(
        CLIENT_ID,
        server_auth_only,
        HandshakeFailure::MissingClientAuthEku,
    )
    .await;
    // No EKU extension at all: webpki would accept it, palisade requires clientAuth explicitly.
    let no_eku = SvidOptions {
        client_auth: false,
        server_auth: false,
        ..SvidOptions::default()
    };
    assert_client_refused(CLIENT_ID, no_eku, HandshakeFailure::MissingClientAuthEku).await;
}

#[tokio::test]
async fn refuses_rogue_ca_with_same_trust_domain() {
    let ca = Ca::new(TD).unwrap();
    let rogue = Ca::new(TD).unwrap();
    let (server, server_identity, _d) = inbound(&ca);
    let client = client_with(
        &rogue,
        CLIENT_ID,
        &SvidOptions::default(),
        server_identity.roots(),
    );
    let outcome = connect(server, client).await;
    assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::Untrusted);
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn refuses_untrusted_intermediate_chain() {
    let ca = Ca::new(TD).unwrap();
    let rogue_intermediate = Ca::new(TD).unwrap().intermediate().unwrap();
    let (server, server_identity, _d) = inbound(&ca);
    let client = client_with(
        &rogue_intermediate,
        CLIENT_ID,
        &SvidOptions::default(),
        server_identity.roots(),
    );
    let outcome = connect(server, client).await;
    assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::Untrusted);
}

#[tokio::test]
async fn refuses_client_without_certificate() {
    let ca = Ca::new(TD).unwrap();
    let (server, server_identity, _d) = inbound(&ca);
    for versions in [BOTH_VERSIONS, &[&rustls::version::TLS12][..]] {
        let client = raw_client(None, server_identity.roots(), versions, &[b"h2"]);
        let outcome = connect(server.clone(), client).await;
        assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::NoCertificate);
        assert!(outcome.client.is_err());
    }
}

#[tokio::test]
async fn refusal_reason_has_a_metric_label() {
    let ca = Ca::new(TD).unwrap();
    let (server, server_identity, _d) = inbound(&ca);
    let client = client_with(
        &ca,
        "spiffe://cluster.local.evil.com/ns/web/sa/frontend",
        &SvidOptions::default(),
        server_identity.roots(),
    );
    let failure = connect(server, client).await.server.unwrap_err();
    assert_eq!(failure.as_label(), "foreign_trust_domain");
    assert_eq!(
        failure.to_string(),
        "peer SPIFFE ID is in a foreign trust domain"
    );
}

// === outbound: the client verifies the server's SPIFFE ID ===

#[tokio::test]
async fn outbound_accepts_expected_server_id() {
    let ca = Ca::new(TD).unwrap();
    let (server, _s, _d1) = inbound(&ca);
    let (client_identity, _d2) = identity(&ca, CLIENT_ID);
    let options = ClientOptions {
        expected: Some(id(SERVER_ID)),
        ..ClientOptions::new(trust())
    };
    let client = client_config(&client_identity, &options).unwrap();
    let outcome = connect(server, client).await;
    assert_eq!(outcome.client.unwrap().peer, Some(id(SERVER_ID)));
    assert_eq!(outcome.server.unwrap().peer, Some(id(CLIENT_ID)));
}

#[tokio::test]
async fn outbound_refuses_unexpected_server_id() {
    let ca = Ca::new(TD).unwrap();
    let (server, _s, _d1) = inbound(&ca);
    let (client_identity, _d2) = identity(&ca, CLIENT_ID);
    let options = ClientOptions {
        expected: Some(id("spiffe://cluster.local/ns/shop/sa/payments")),
        ..ClientOptions::new(trust())
    };
    let client = client_config(&client_identity, &options).unwrap();
    let outcome = connect(server, client).await;
    assert_eq!(
        outcome.client.unwrap_err(),
        HandshakeFailure::UnexpectedPeerId
    );
    assert_eq!(outcome.server.unwrap_err(), HandshakeFailure::PeerAlert);
}

#[tokio::test]
async fn outbound_refuses_server_in_foreign_trust_domain() {
    let ca = Ca::new(TD).unwrap();
    let (server_identity, _d1) = identity(&ca, "spiffe://other.example/ns/shop/sa/orders");
    let server = server_config(&server_identity, &trust()).unwrap();
    let (client_identity, _d2) = identity(&ca, CLIENT_ID);
    let client = client_config(&client_identity, &ClientOptions::new(trust())).unwrap();
    let outcome = connect(server, client).await;
    assert_eq!(
        outcome.client.unwrap_err(),
        HandshakeFailure::ForeignTrustDomain
    );
}

#[tokio::test]
async fn outbound_refuses_server_without_server_auth_eku() {
    let ca = Ca::new(TD).unwrap();
    let svid = ca
        .issue_svid(
            SERVER_ID,
            &SvidOptions {
                server_auth: false,
                ..SvidOptions::default()
            },
        )
        .unwrap();
    let (chain, key) = chain_and_key(&svid);
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(BOTH_VERSIONS)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let (client_identity, _d) = identity(&ca, CLIENT_ID);
    let client = client_config(&client_identity, &ClientOptions::new(trust())).unwrap();
    let outcome = connect(Arc::new(server), client).await;
    assert_eq!(
        outcome.client.unwrap_err(),
        HandshakeFailure::MissingServerAuthEku
    );
}

// === identity files ===

/// Writes a valid identity for CLIENT_ID and returns its paths.
fn identity_files(ca: &Ca, options: &SvidOptions) -> (IdentityPaths, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let svid = ca.issue_svid(CLIENT_ID, options).unwrap();
    let paths = write_identity(dir.path(), &svid, ca.bundle_pem()).unwrap();
    (paths, dir)
}

fn load_error(paths: &IdentityPaths) -> IdentityError {
    Identity::load(paths).expect_err("identity must not load")
}

#[test]
fn loads_identity_and_reports_its_id_and_expiry() {
    let ca = Ca::new(TD).unwrap();
    let (paths, dir) = identity_files(&ca, &SvidOptions::default());
    assert_eq!(paths, IdentityPaths::in_dir(dir.path()));
    let identity = Identity::load(&paths).unwrap();
    assert_eq!(identity.id(), &id(CLIENT_ID));
    assert_eq!(identity.trust_domain(), TD);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let left = identity.not_after() - now;
    assert!((23 * 3600..=24 * 3600).contains(&left), "{left}s left");
    let debug = format!("{identity:?}");
    assert!(debug.contains(CLIENT_ID), "{debug}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
}

#[cfg(unix)]
#[test]
fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::new(TD).unwrap();
    let (paths, _dir) = identity_files(&ca, &SvidOptions::default());
    let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn identity_refuses_key_of_another_certificate() {
    let ca = Ca::new(TD).unwrap();
    let (paths, _dir) = identity_files(&ca, &SvidOptions::default());
    let other = ca.issue_svid(CLIENT_ID, &SvidOptions::default()).unwrap();
    std::fs::write(&paths.key, other.key_pem()).unwrap();
    let error = load_error(&paths);
    assert!(
        matches!(&error, IdentityError::KeyMismatch { key, chain } if *key == paths.key && *chain == paths.chain),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&*paths.key.to_string_lossy()),
        "{error}"
    );
}

#[test]
fn identity_refuses_expired_certificate() {
    let ca = Ca::new(TD).unwrap();
    let (paths, _dir) = identity_files(&ca, &SvidOptions::expired());
    let error = load_error(&paths);
    assert!(
        matches!(&error, IdentityError::Expired { path, index: 0, .. } if *path == paths.chain),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&*paths.chain.to_string_lossy()),
        "{error}"
    );
}

#[test]
fn identity_refuses_chain_not_trusted_by_bundle() {
    let ca = Ca::new(TD).unwrap();
    let other = Ca::new(TD).unwrap();
    let (paths, _dir) = identity_files(&ca, &SvidOptions::default());
    std::fs::write(&paths.bundle, other.bundle_pem()).unwrap();
    let error = load_error(&paths);
    assert!(
        matches!(&error, IdentityError::Untrusted { chain, bundle, .. } if *chain == paths.chain && *bundle == paths.bundle),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&*paths.chain.to_string_lossy()),
        "{message}"
    );
    assert!(
        message.contains(&*paths.bundle.to_string_lossy()),
        "{message}"
    );
}

#[test]
fn identity_refuses_missing_file() {
    let ca = Ca::new(TD).unwrap();
    let (paths, _dir) = identity_files(&ca, &SvidOptions::default());
    std::fs::remove_file(&paths.key).unwrap();
    let error = load_error(&paths);
    assert!(
        matches!(&error, IdentityError::Read { path, source } if *path == paths.key && source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    assert!(error.to_string().contains("tls.key"), "{error}");
    assert_eq!(error.as_label(), "read");
}

#[test]
fn identity_refuses_file_without_pem() {
    let ca = Ca::new(TD).unwrap();
    let (paths, _dir) = identity_files(&ca, &SvidOptions::default());
    std::fs::write(&paths.chain, "not a certificate\n").unwrap();
    let error = load_error(&paths);
    assert!(
        matches!(&error, IdentityError::Pem { path, what: "certificate", .. } if *path == paths.chain),
        "{error:?}"
    );
}

#[test]
fn identity_refuses_certificate_without_single_spiffe_id() {
    let ca = Ca::new(TD).unwrap();
    let dns_only = SvidOptions {
        uri_san: false,
        dns_names: vec!["frontend.web".into()],
        ..SvidOptions::default()
    };
    let (paths, _d1) = identity_files(&ca, &dns_only);
    assert!(matches!(
        load_error(&paths),
        IdentityError::NoSpiffeId { .. }
    ));

    let two = SvidOptions {
        extra_uri_sans: vec!["spiffe://cluster.local/ns/x/sa/y".into()],
        ..SvidOptions::default()
    };
    let (paths, _d2) = identity_files(&ca, &two);
    assert!(matches!(
        load_error(&paths),
        IdentityError::MultipleUriSans { count: 2, .. }
    ));
}

#[test]
fn identity_refuses_missing_eku() {
    let ca = Ca::new(TD).unwrap();
    let no_server_auth = SvidOptions {
        server_auth: false,
        ..SvidOptions::default()
    };
    let (paths, _d) = identity_files(&ca, &no_server_auth);
    assert!(matches!(
        load_error(&paths),
        IdentityError::MissingEku {
            eku: "serverAuth",
            ..
        }
    ));
}

#[test]
fn identity_without_client_auth_serves_but_cannot_originate() {
    let ca = Ca::new(TD).unwrap();
    let server_only = SvidOptions {
        client_auth: false,
        ..SvidOptions::default()
    };
    let (paths, _d) = identity_files(&ca, &server_only);
    let identity = Identity::load(&paths).expect("a serverAuth-only identity loads");
    assert!(!identity.client_auth());
    let trust = TrustDomains::new([TD]).unwrap();
    assert!(server_config(&identity, &trust).is_ok());
    let error = client_config(&identity, &ClientOptions::new(trust)).unwrap_err();
    assert!(
        matches!(error, palisade_proxy::tls::TlsError::NoClientAuth { .. }),
        "{error}"
    );
}

#[test]
fn default_identity_paths_are_documented_ones() {
    let paths = IdentityPaths::default();
    assert_eq!(
        paths.chain,
        std::path::Path::new("/var/run/palisade/identity/tls.crt")
    );
    assert_eq!(
        paths.key,
        std::path::Path::new("/var/run/palisade/identity/tls.key")
    );
    assert_eq!(
        paths.bundle,
        std::path::Path::new("/var/run/palisade/identity/ca.crt")
    );
}

#[test]
fn trust_domains_are_validated() {
    assert!(TrustDomains::new(["cluster.local", "prod.example"]).is_ok());
    assert!(TrustDomains::new(Vec::<&str>::new()).is_err());
    for bad in [
        "Cluster.local",
        "cluster.local/ns",
        "a@b",
        "cluster.local:443",
        "",
    ] {
        assert!(TrustDomains::new([bad]).is_err(), "{bad:?} accepted");
    }
    let trust = TrustDomains::new(["cluster.local", "cluster.local"]).unwrap();
    assert_eq!(trust.iter().collect::<Vec<_>>(), ["cluster.local"]);
    assert!(!trust.contains("cluster.local.evil.com"));
}

#[test]
fn server_name_is_the_address() {
    let name = server_name(IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(name.to_str(), "127.0.0.1");
}

#[tokio::test]
async fn refuses_plaintext_http_as_not_tls() {
    let ca = Ca::new(TD).unwrap();
    let (server, _identity, _d) = inbound(&ca);
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server_task = tokio::spawn(async move {
        let (tcp, _) = timeout(LIMIT, listener.accept()).await.unwrap().unwrap();
        let accepted = timeout(LIMIT, TlsAcceptor::from(server).accept(tcp))
            .await
            .unwrap();
        accepted
            .map(|_| ())
            .map_err(|e| HandshakeFailure::of_io(&e))
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: orders\r\n\r\n")
        .await
        .unwrap();
    let result = timeout(LIMIT, server_task).await.unwrap().unwrap();
    assert_eq!(result, Err(HandshakeFailure::NotTls));
}

#[tokio::test]
async fn host_name_sans_let_standard_clients_verify_a_palisade_server() {
    let ca = Ca::new(TD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = SvidOptions {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..SvidOptions::default()
    };
    let svid = ca.issue_svid(SERVER_ID, &options).unwrap();
    let paths = write_identity(dir.path(), &svid, ca.bundle_pem()).unwrap();
    let server_identity = Identity::load(&paths).unwrap();
    assert_eq!(server_identity.id(), &id(SERVER_ID));
    let server = server_config(&server_identity, &trust()).unwrap();

    // What curl does: verify the host name (here the IP) against the bundle, present a cert.
    let client_svid = ca.issue_svid(CLIENT_ID, &SvidOptions::default()).unwrap();
    let (chain, key) = chain_and_key(&client_svid);
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(BOTH_VERSIONS)
        .unwrap()
        .with_root_certificates(server_identity.roots().clone())
        .with_client_auth_cert(chain, key)
        .unwrap();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let outcome = connect(server, Arc::new(client)).await;
    assert_eq!(outcome.server.unwrap().peer, Some(id(CLIENT_ID)));
    assert_eq!(outcome.client.unwrap().peer, Some(id(SERVER_ID)));
}
