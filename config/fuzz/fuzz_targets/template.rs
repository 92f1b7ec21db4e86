//! Fuzz target for path templates: no panic; a parsed template round-trips, and a template
//! made only of literal segments is a path `normalize` leaves unchanged (otherwise no request
//! could ever match it, which `Template::parse` promises to reject).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_config::normalize::normalize;
use palisade_config::template::{Segment, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(input) else {
        return;
    };
    assert_eq!(template.as_str(), input);
    assert_eq!(Template::parse(template.as_str()).as_ref(), Ok(&template));
    let canonical = template.canonical();
    let reparsed = Template::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {input:?} rejected: {e}"));
    assert_eq!(reparsed.canonical(), canonical);
    if template
        .segments()
        .iter()
        .all(|s| matches!(s, Segment::Literal(_)))
    {
        let normalized = normalize(input)
            .unwrap_or_else(|e| panic!("literal template {input:?} is not a path: {e}"));
        assert_eq!(
            normalized.path().as_str(),
            input,
            "literal template can never match"
        );
    }
});
