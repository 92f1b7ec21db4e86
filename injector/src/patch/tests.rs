//! Table tests for `patch`: pod fixtures in, the patched pod checked field by field.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("fixture is a pod")
}

fn app(extra: Value) -> Value {
    let mut c = json!({ "name": "app", "image": "app:1", "ports": [{ "name": "http", "containerPort": 8080 }] });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// Applies the patch to the pod's JSON, as the API server does.
fn patched(value: Value, config: &InjectConfig) -> Option<Value> {
    let p = patch(&pod(value.clone()), config).expect("patchable")?;
    let mut doc = value;
    json_patch::patch(&mut doc, &p).expect("patch applies");
    Some(doc)
}

fn init_args(pod: &Value) -> Vec<String> {
    serde_json::from_value(pod["spec"]["initContainers"][0]["args"].clone()).expect("args")
}

#[test]
fn bare_pod_gets_init_native_sidecar_volumes_and_status() {
    let out = patched(
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [app(json!({}))] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    let inits = out["spec"]["initContainers"].as_array().expect("array");
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0]["name"], INIT_CONTAINER);
    assert_eq!(
        inits[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(
        inits[0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(inits[1]["name"], PROXY_CONTAINER);
    assert_eq!(inits[1]["restartPolicy"], "Always");
    assert_eq!(
        inits[1]["args"],
        json!([
            "proxy",
            "--policy=/etc/palisade/policy",
            "--identity-dir=/var/run/palisade/identity",
            "--inbound=[::]:15006",
            "--admin=[::]:15020",
            "--outbound-listen=[::]:15001",
            "--unmeshed=pass-through"
        ])
    );
    assert!(inits[1].get("env").is_none(), "no app probes, no env");
    assert_eq!(inits[1]["securityContext"]["runAsUser"], 1337);
    assert_eq!(inits[1]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(inits[1]["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        inits[1]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        inits[1]["readinessProbe"]["httpGet"],
        json!({ "path": "/ready", "port": 15020 })
    );
    assert_eq!(
        inits[1]["livenessProbe"]["httpGet"],
        json!({ "path": "/live", "port": 15020 })
    );
    assert_eq!(
        inits[1]["resources"],
        json!({ "requests": { "cpu": "100m", "memory": "64Mi" }, "limits": { "memory": "256Mi" } })
    );
    assert_eq!(out["spec"]["containers"].as_array().map(Vec::len), Some(1));
    let volumes = out["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes[0]["csi"]["driver"], "spiffe.csi.cert-manager.io");
    assert_eq!(volumes[0]["csi"]["readOnly"], true);
    assert_eq!(volumes[1]["configMap"]["name"], "palisade-policy");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_STATUS],
        "injected"
    );
    assert_eq!(
        init_args(&out),
        [
            "init",
            "--inbound-port=15006",
            "--outbound-port=15001",
            "--admin-port=15020",
            "--proxy-uid=1337"
        ]
    );
}

#[test]
fn existing_init_containers_and_volumes_are_kept_after_ours() {
    let out = patched(
        json!({ "metadata": { "annotations": { "a/b~c": "x" } }, "spec": {
            "initContainers": [{ "name": "migrate", "image": "m:1" }],
            "containers": [app(json!({})), { "name": "log", "image": "l:1" }],
            "volumes": [{ "name": "data", "emptyDir": {} }] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    let names: Vec<&str> = out["spec"]["initContainers"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(volumes, ["data", IDENTITY_VOLUME, POLICY_VOLUME]);
    assert_eq!(out["metadata"]["annotations"]["a/b~c"], "x");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_STATUS],
        "injected"
    );
}

#[test]
fn annotation_key_is_escaped_in_the_pointer() {
    let p = patch(&pod(json!({ "metadata": { "annotations": {} }, "spec": { "containers": [app(json!({}))] } })), &InjectConfig::default())
        .expect("ok")
        .expect("some");
    let paths: Vec<String> = serde_json::to_value(&p)
        .expect("json")
        .as_array()
        .expect("ops")
        .iter()
        .filter_map(|op| op["path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/palisade.dev~1status".to_owned()),
        "{paths:?}"
    );
}

#[test]
fn exclusions_reach_init_and_probe_ports_stay_captured() {
    let out = patched(
        json!({ "metadata": { "annotations": {
                ANNOTATION_EXCLUDE_INBOUND_PORTS: " 22, 9000",
                ANNOTATION_EXCLUDE_OUTBOUND_PORTS: "5432",
                ANNOTATION_EXCLUDE_OUTBOUND_CIDRS: "169.254.169.254/32,fd00::/8" } },
            "spec": { "containers": [app(json!({
                "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" } },
                "livenessProbe": { "tcpSocket": { "port": 9090 } },
                "startupProbe": { "exec": { "command": ["true"] } } }))] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    let args = init_args(&out);
    // The probed ports (8080, 9090) stay behind the proxy: only the annotation's ports.
    assert!(
        args.contains(&"--exclude-inbound-ports=22,9000".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--exclude-outbound-ports=5432".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--exclude-outbound-cidrs=169.254.169.254/32,fd00::/8".to_owned()),
        "{args:?}"
    );
}

fn app_probes(proxy: &Value) -> Value {
    let env = proxy["env"].as_array().expect("env");
    assert_eq!(env.len(), 1, "{env:?}");
    assert_eq!(env[0]["name"], APP_PROBES_ENV);
    serde_json::from_str(env[0]["value"].as_str().expect("a string")).expect("JSON")
}

#[test]
fn probes_are_rewritten_through_the_admin_port() {
    let out = patched(
        json!({ "metadata": {}, "spec": { "containers": [app(json!({
            "ports": [{ "name": "http", "containerPort": 8080 }, { "name": "health", "containerPort": 8081 }],
            "readinessProbe": { "httpGet": { "path": "/healthz?full=1", "port": "health", "scheme": "HTTPS",
                                              "httpHeaders": [{ "name": "Host", "value": "orders.local" }] },
                                "periodSeconds": 3, "timeoutSeconds": 2, "failureThreshold": 4 },
            "livenessProbe": { "tcpSocket": { "port": "http" }, "initialDelaySeconds": 5 },
            "startupProbe": { "grpc": { "port": 9090, "service": "orders" } } })),
            { "name": "worker", "image": "w:1",
              "livenessProbe": { "httpGet": { "port": "8088" } },
              "readinessProbe": { "exec": { "command": ["true"] } } }] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    let app = &out["spec"]["containers"][0];
    assert_eq!(
        app["readinessProbe"],
        json!({ "httpGet": { "path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP" },
                "periodSeconds": 3, "timeoutSeconds": 2, "failureThreshold": 4 })
    );
    assert_eq!(
        app["livenessProbe"],
        json!({ "httpGet": { "path": "/app-health/app/livez", "port": 15020, "scheme": "HTTP" },
                "initialDelaySeconds": 5 })
    );
    assert_eq!(
        app["startupProbe"],
        json!({ "httpGet": { "path": "/app-health/app/startupz", "port": 15020, "scheme": "HTTP" } })
    );
    let worker = &out["spec"]["containers"][1];
    assert_eq!(
        worker["livenessProbe"]["httpGet"]["path"],
        "/app-health/worker/livez"
    );
    assert_eq!(
        worker["readinessProbe"],
        json!({ "exec": { "command": ["true"] } })
    );

    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(
        app_probes(proxy),
        json!({
            "/app-health/app/readyz": {
                "httpGet": { "port": 8081, "path": "/healthz?full=1", "scheme": "HTTPS",
                             "httpHeaders": [{ "name": "Host", "value": "orders.local" }] },
                "timeoutSeconds": 2 },
            "/app-health/app/livez": { "tcpSocket": { "port": 8080 } },
            "/app-health/app/startupz": { "grpc": { "port": 9090, "service": "orders" } },
            "/app-health/worker/livez": { "httpGet": { "port": 8088 } },
        })
    );
    // The gRPC probe's port speaks h2c: the proxy forwards to it over HTTP/2.
    let args: Vec<String> = serde_json::from_value(proxy["args"].clone()).expect("args");
    assert!(args.contains(&"--h2c-app-port=9090".to_owned()), "{args:?}");
    // Nothing is excluded from capture for the probes.
    assert!(
        !init_args(&out)
            .iter()
            .any(|a| a.starts_with("--exclude-inbound-ports")),
        "{:?}",
        init_args(&out)
    );
}

#[test]
fn native_sidecar_probes_are_rewritten_at_their_original_index() {
    let out = patched(
        json!({ "metadata": {}, "spec": {
            "initContainers": [
                { "name": "migrate", "image": "m:1" },
                { "name": "cache", "image": "c:1", "restartPolicy": "Always",
                  "ports": [{ "name": "metrics", "containerPort": 9100 }],
                  "readinessProbe": { "httpGet": { "path": "/ready", "port": "metrics" } } }],
            "containers": [app(json!({}))] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    let inits = &out["spec"]["initContainers"];
    assert_eq!(inits[3]["name"], "cache");
    assert_eq!(
        inits[3]["readinessProbe"]["httpGet"]["path"],
        "/app-health/cache/readyz"
    );
    assert_eq!(
        app_probes(&inits[1]),
        json!({ "/app-health/cache/readyz": { "httpGet": { "port": 9100, "path": "/ready" } } })
    );
}

#[test]
fn probes_aimed_at_another_host_are_left_alone() {
    let out = patched(
        json!({ "metadata": {}, "spec": { "containers": [app(json!({
            "livenessProbe": { "httpGet": { "host": "health.example", "port": 80 } },
            "readinessProbe": { "tcpSocket": { "host": "10.0.0.9", "port": 5432 } } }))] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    let app = &out["spec"]["containers"][0];
    assert_eq!(app["livenessProbe"]["httpGet"]["host"], "health.example");
    assert_eq!(app["readinessProbe"]["tcpSocket"]["port"], 5432);
    assert!(out["spec"]["initContainers"][1].get("env").is_none());
}

#[test]
fn mesh_settings_reach_the_proxy() {
    let config = InjectConfig {
        mesh_cidrs: vec!["10.244.0.0/16".to_owned(), "fd00:10:244::/56".to_owned()],
        trust_domains: vec!["cluster.local".to_owned(), "partner.example".to_owned()],
        unmeshed: Unmeshed::Refuse,
        ipv6: false,
        ..InjectConfig::default()
    };
    let out = patched(
        json!({ "metadata": { "annotations": { ANNOTATION_H2C_PORTS: "7070" } }, "spec": { "containers": [app(json!({}))] } }),
        &config,
    )
    .expect("patched");
    let args: Vec<String> =
        serde_json::from_value(out["spec"]["initContainers"][1]["args"].clone()).expect("args");
    assert_eq!(
        args,
        [
            "proxy",
            "--policy=/etc/palisade/policy",
            "--identity-dir=/var/run/palisade/identity",
            "--inbound=0.0.0.0:15006",
            "--admin=0.0.0.0:15020",
            "--outbound-listen=0.0.0.0:15001",
            "--unmeshed=refuse",
            "--mesh-cidr=10.244.0.0/16,fd00:10:244::/56",
            "--trust-domain=cluster.local",
            "--trust-domain=partner.example",
            "--h2c-app-port=7070",
        ]
    );
    assert!(init_args(&out).contains(&"--no-ipv6".to_owned()));
}

#[test]
fn config_validation_refuses_what_the_proxy_would() {
    assert_eq!(InjectConfig::default().validate(), Ok(()));
    let bad = [
        InjectConfig {
            mesh_cidrs: vec!["10.244.0.1/16".to_owned()],
            ..InjectConfig::default()
        },
        InjectConfig {
            mesh_cidrs: vec!["10.244.0.0".to_owned()],
            ..InjectConfig::default()
        },
        InjectConfig {
            trust_domains: vec!["Cluster.Local".to_owned()],
            ..InjectConfig::default()
        },
        InjectConfig {
            admin_port: 15006,
            ..InjectConfig::default()
        },
    ];
    for config in bad {
        assert!(config.validate().is_err(), "{config:?}");
    }
}

#[test]
fn resources_and_policy_are_overridable_per_pod() {
    let out = patched(
        json!({ "metadata": { "annotations": {
                ANNOTATION_PROXY_CPU: "250m", ANNOTATION_PROXY_MEMORY: "128Mi",
                ANNOTATION_PROXY_CPU_LIMIT: "1", ANNOTATION_PROXY_MEMORY_LIMIT: "1Gi",
                ANNOTATION_POLICY: "orders-policy" } },
            "spec": { "containers": [app(json!({}))] } }),
        &InjectConfig::default(),
    )
    .expect("patched");
    assert_eq!(
        out["spec"]["initContainers"][1]["resources"],
        json!({ "requests": { "cpu": "250m", "memory": "128Mi" }, "limits": { "cpu": "1", "memory": "1Gi" } })
    );
    assert_eq!(
        out["spec"]["volumes"][1]["configMap"]["name"],
        "orders-policy"
    );
}

#[test]
fn classic_mode_appends_a_container() {
    let config = InjectConfig {
        sidecar: SidecarMode::Classic,
        ..InjectConfig::default()
    };
    let out = patched(
        json!({ "metadata": {}, "spec": { "containers": [app(json!({}))] } }),
        &config,
    )
    .expect("patched");
    assert_eq!(
        out["spec"]["initContainers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(out["spec"]["containers"][1]["name"], PROXY_CONTAINER);
    assert!(out["spec"]["containers"][1].get("restartPolicy").is_none());
}

#[test]
fn leaves_alone_opted_out_host_network_and_injected_pods() {
    let config = InjectConfig::default();
    let cases = [
        (
            "opted out",
            json!({ "metadata": { "annotations": { ANNOTATION_INJECT: "false" } }, "spec": { "containers": [app(json!({}))] } }),
        ),
        (
            "host network",
            json!({ "metadata": {}, "spec": { "hostNetwork": true, "containers": [app(json!({}))] } }),
        ),
        (
            "injected",
            json!({ "metadata": {}, "spec": { "initContainers": [{ "name": PROXY_CONTAINER }], "containers": [app(json!({}))] } }),
        ),
    ];
    for (name, fixture) in cases {
        assert_eq!(patch(&pod(fixture), &config), Ok(None), "{name}");
    }
}

#[test]
fn second_pass_is_a_no_op() {
    let config = InjectConfig::default();
    let out = patched(
        json!({ "metadata": {}, "spec": { "containers": [app(json!({
            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" } } }))] } }),
        &config,
    )
    .expect("patched");
    let rewritten = out["spec"]["containers"][0]["readinessProbe"].clone();
    assert_eq!(rewritten["httpGet"]["path"], "/app-health/app/readyz");
    // Already injected (probes already rewritten): nothing more, not even a second rewrite.
    assert_eq!(patch(&pod(out), &config), Ok(None));
}

#[test]
fn refuses_what_it_cannot_honour() {
    let config = InjectConfig::default();
    let with = |key: &str, value: &str| json!({ "metadata": { "annotations": { key: value } }, "spec": { "containers": [app(json!({}))] } });
    let cases = [
        (
            "bad port",
            with(ANNOTATION_EXCLUDE_INBOUND_PORTS, "80,http"),
        ),
        ("port 0", with(ANNOTATION_EXCLUDE_OUTBOUND_PORTS, "0")),
        (
            "port too big",
            with(ANNOTATION_EXCLUDE_OUTBOUND_PORTS, "65536"),
        ),
        (
            "bad cidr",
            with(ANNOTATION_EXCLUDE_OUTBOUND_CIDRS, "10.0.0.0/33"),
        ),
        (
            "cidr without length",
            with(ANNOTATION_EXCLUDE_OUTBOUND_CIDRS, "10.0.0.1"),
        ),
        ("bad quantity", with(ANNOTATION_PROXY_MEMORY, "lots")),
        ("bad policy name", with(ANNOTATION_POLICY, "../etc")),
        (
            "unknown probe port",
            json!({ "metadata": {}, "spec": { "containers": [app(json!({ "readinessProbe": { "httpGet": { "port": "admin" } } }))] } }),
        ),
        (
            "probe port out of range",
            json!({ "metadata": {}, "spec": { "containers": [app(json!({ "livenessProbe": { "tcpSocket": { "port": 70000 } } }))] } }),
        ),
        (
            "cidr with host bits",
            with(ANNOTATION_EXCLUDE_OUTBOUND_CIDRS, "10.0.0.1/8"),
        ),
        ("bad h2c port", with(ANNOTATION_H2C_PORTS, "grpc")),
        (
            "volume clash",
            json!({ "metadata": {}, "spec": { "containers": [app(json!({}))], "volumes": [{ "name": IDENTITY_VOLUME, "emptyDir": {} }] } }),
        ),
        ("no spec", json!({ "metadata": { "name": "x" } })),
    ];
    for (name, fixture) in cases {
        assert!(patch(&pod(fixture), &config).is_err(), "{name}");
    }
}
