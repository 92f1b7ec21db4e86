//! Step 2 of the webhook: an AdmissionReview v1 body in, an AdmissionReview v1 answer out. It
//! only decodes and encodes; the decision is `patch::patch`. A body that is not an
//! AdmissionReview is a `ReviewError` (the server answers 400); a pod that cannot be patched is
//! refused (`allowed: false`, fail closed); otherwise the pod is allowed, with the JSON Patch
//! when there is one.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Pod;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::config::InjectConfig;
use crate::patch::patch;

/// The `apiVersion` this webhook speaks.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// Why a request body is not an AdmissionReview this webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON of an AdmissionReview.
    #[error("body is not an AdmissionReview")]
    Decode(#[source] serde_json::Error),
    /// The review has a different `apiVersion` or `kind`.
    #[error(
        "expected kind AdmissionReview, apiVersion {ADMISSION_API_VERSION}, got kind {kind:?}, apiVersion {api_version:?}"
    )]
    Version {
        /// The `kind` received.
        kind: String,
        /// The `apiVersion` received.
        api_version: String,
    },
    /// The review carries no `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// The answer could not be serialized.
    #[error("cannot encode the AdmissionReview answer")]
    Encode(#[source] serde_json::Error),
}

/// Answers one AdmissionReview body with the serialized AdmissionReview response.
///
/// # Security
/// Fails closed: a pod whose object does not decode, or that `patch` cannot mesh, is refused
/// with a message naming the reason, never admitted unmeshed.
pub fn review(body: &[u8], config: &InjectConfig) -> Result<Vec<u8>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(ReviewError::Decode)?;
    if review.types.kind != "AdmissionReview" || review.types.api_version != ADMISSION_API_VERSION {
        return Err(ReviewError::Version {
            kind: review.types.kind,
            api_version: review.types.api_version,
        });
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError::NoRequest)?;
    let response = respond(&request, config);
    encode(response)
}

/// Serializes the answer with `response.patch` as a base64 string, the wire form the API server
/// documents for `[]byte`. kube-core 5 serializes its `Vec<u8>` as an array of numbers
/// (kube-rs/kube#1781), so the bytes are re-encoded here through k8s-openapi's `ByteString`.
fn encode(response: AdmissionResponse) -> Result<Vec<u8>, ReviewError> {
    let patch = response.patch.clone();
    let mut value = serde_json::to_value(response.into_review()).map_err(ReviewError::Encode)?;
    if let (Some(bytes), Some(slot)) = (patch, value.pointer_mut("/response/patch")) {
        *slot = serde_json::to_value(ByteString(bytes)).map_err(ReviewError::Encode)?;
    }
    serde_json::to_vec(&value).map_err(ReviewError::Encode)
}

/// The response for one decoded request.
fn respond(request: &AdmissionRequest<DynamicObject>, config: &InjectConfig) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod || !matches!(request.operation, Operation::Create) || request.sub_resource.is_some()
    {
        // Only pod creation is meshed; the webhook configuration selects nothing else.
        return response;
    }
    let pod = match request
        .object
        .as_ref()
        .map(|o| serde_json::to_value(o).and_then(serde_json::from_value::<Pod>))
    {
        Some(Ok(pod)) => pod,
        Some(Err(error)) => {
            return deny(response, request, format!("pod does not decode: {error}"));
        }
        None => return deny(response, request, "request has no pod object".to_owned()),
    };
    match patch(&pod, config) {
        Ok(None) => response,
        Ok(Some(p)) => match response.clone().with_patch(p) {
            Ok(patched) => patched,
            Err(error) => deny(
                response,
                request,
                format!("cannot encode the patch: {error}"),
            ),
        },
        Err(error) => deny(response, request, error.to_string()),
    }
}

fn deny(
    response: AdmissionResponse,
    request: &AdmissionRequest<DynamicObject>,
    reason: String,
) -> AdmissionResponse {
    tracing::warn!(
        review.uid = %request.uid,
        pod.namespace = request.namespace.as_deref().unwrap_or_default(),
        pod.name = %request.name,
        reason = %reason,
        "pod refused"
    );
    response.deny(format!("palisade: cannot inject the sidecar: {reason}"))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn body(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
                "object": object,
            },
        }))
        .expect("json")
    }

    fn answer(body: &[u8]) -> Value {
        serde_json::from_slice(&review(body, &InjectConfig::default()).expect("answered"))
            .expect("json")
    }

    #[test]
    fn allows_with_a_base64_json_patch() {
        let out = answer(&body(
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "app", "image": "a" }] } }),
        ));
        assert_eq!(out["apiVersion"], ADMISSION_API_VERSION);
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(
            out["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let patch = out["response"]["patch"].as_str().expect("a base64 string");
        let ops: Value = serde_json::from_slice(
            &serde_json::from_value::<ByteString>(json!(patch))
                .expect("base64")
                .0,
        )
        .expect("json patch");
        assert!(
            ops.as_array()
                .is_some_and(|ops| ops.iter().all(|op| op["op"] == "add")),
            "{ops}"
        );
        assert!(
            out["response"]["patch"]
                .as_str()
                .is_some_and(|p| !p.is_empty())
        );
    }

    #[test]
    fn opted_out_pod_is_allowed_without_patch() {
        let out = answer(&body(
            json!({ "metadata": { "annotations": { "palisade.dev/inject": "false" } }, "spec": { "containers": [{ "name": "app" }] } }),
        ));
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
    }

    #[test]
    fn unpatchable_pod_is_refused_with_the_reason() {
        let out = answer(&body(
            json!({ "metadata": { "annotations": { "palisade.dev/exclude-inbound-ports": "http" } }, "spec": { "containers": [{ "name": "app" }] } }),
        ));
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"]
            .as_str()
            .expect("message");
        assert!(
            message.contains("palisade.dev/exclude-inbound-ports"),
            "{message}"
        );
    }

    #[test]
    fn undecodable_pod_is_refused() {
        let out = answer(&body(
            json!({ "metadata": {}, "spec": { "containers": "not a list" } }),
        ));
        assert_eq!(out["response"]["allowed"], false);
    }

    #[test]
    fn rejects_what_is_not_an_admission_review() {
        let config = InjectConfig::default();
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#,
        ] {
            assert!(
                review(bad, &config).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
