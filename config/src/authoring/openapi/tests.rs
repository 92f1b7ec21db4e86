use super::*;

#[test]
fn converts_path_templates() {
    let cases = [
        ("/pets", "/pets"),
        ("/pets/{petId}", "/pets/{petId}"),
        ("/stores/{store-id}/pets", "/stores/{store_id}/pets"),
        ("/files/{name}.json", "/files/{name}"),
        ("/a/{id}/b/{id}", "/a/{id}/b/{id2}"),
        ("/v/{1st}", "/v/{p1st}"),
    ];
    for (openapi, palisade) in cases {
        assert_eq!(convert_path(openapi).as_deref(), Ok(palisade), "{openapi}");
    }
    for bad in ["pets", "/pets/{id", "/a//b"] {
        assert!(convert_path(bad).is_err(), "{bad}");
    }
}

#[test]
fn rejects_documents_that_are_not_openapi_3() {
    let options = ImportOptions::default();
    for (text, message) in [
        ("swagger: \"2.0\"\n", "swagger 2.0"),
        ("openapi: 2.5.0\n", "not supported"),
        ("info: {}\n", "missing field `openapi`"),
        ("- a\n", "not a mapping"),
        ("openapi: 3.0.0\npaths: [1]\n", "paths: expected a mapping"),
        (
            "openapi: 3.0.0\npaths: { /x: { get: { x-palisade-principals: 1 } } }\n",
            "x-palisade-principals: expected a list",
        ),
    ] {
        let error = import_openapi("s.yaml", text, &options)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("s.yaml") && error.contains(message),
            "{text:?}: {error}"
        );
    }
}

#[test]
fn flag_principals_apply_where_the_operation_names_none() {
    let spec = "openapi: 3.1.0\nx-palisade-principals: [\"spiffe://td/ns/root/sa/r\"]\npaths:\n  /a:\n    get: {}\n    post: { x-palisade-principals: [\"spiffe://td/ns/op/sa/o\"] }\n";
    let options = ImportOptions {
        principals: vec!["spiffe://td/ns/flag/sa/f".to_owned()],
        name: Some("n".to_owned()),
    };
    let yaml = import_openapi("s.yaml", spec, &options).unwrap();
    assert!(
        yaml.contains(
            "- name: \"get-a\"\n      from: { principals: [\"spiffe://td/ns/flag/sa/f\"] }"
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "- name: \"post-a\"\n      from: { principals: [\"spiffe://td/ns/op/sa/o\"] }"
        ),
        "{yaml}"
    );
    assert!(
        crate::Policy::from_yaml("out.yaml", &yaml, &crate::LoadOptions::default()).is_ok(),
        "{yaml}"
    );
}
