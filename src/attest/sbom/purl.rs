//! Package URLs (<https://github.com/package-url/purl-spec>): `pkg:type/namespace/name@version?qualifiers`,
//! each part percent-encoded except the unreserved characters, qualifiers sorted by key and
//! empty ones left out (the spec's canonical form, as packageurl-go writes it for syft).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What stays unencoded in a purl component: RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// A purl of `purl_type` (lower-case, as the spec requires), `namespace` (its `/`-separated
/// segments encoded one by one), `name`, `version` and `qualifiers`.
pub(super) fn purl(
    purl_type: &str,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, Option<&str>)],
) -> String {
    let mut purl = format!("pkg:{purl_type}/");
    if let Some(namespace) = namespace.filter(|namespace| !namespace.is_empty()) {
        for segment in namespace.split('/').filter(|segment| !segment.is_empty()) {
            purl.push_str(&encode(segment));
            purl.push('/');
        }
    }
    purl.push_str(&encode(name));
    if !version.is_empty() {
        purl.push('@');
        purl.push_str(&encode(version));
    }
    let mut qualifiers: Vec<(&str, &str)> = qualifiers
        .iter()
        .filter_map(|(key, value)| value.filter(|v| !v.is_empty()).map(|value| (*key, value)))
        .collect();
    qualifiers.sort();
    for (index, (key, value)) in qualifiers.iter().enumerate() {
        purl.push(if index == 0 { '?' } else { '&' });
        purl.push_str(key);
        purl.push('=');
        purl.push_str(&encode(value));
    }
    purl
}

fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb_purl_encodes_epoch_and_plus_and_sorts_qualifiers() {
        assert_eq!(
            purl(
                "deb",
                Some("debian"),
                "zlib1g",
                "1:1.2.13.dfsg-1+b1",
                &[
                    ("upstream", Some("zlib")),
                    ("distro", Some("debian-12")),
                    ("arch", Some("amd64")),
                ],
            ),
            "pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1%2Bb1?arch=amd64&distro=debian-12&upstream=zlib"
        );
    }

    #[test]
    fn npm_scope_is_encoded_and_empty_qualifiers_are_left_out() {
        assert_eq!(
            purl(
                "npm",
                Some("@types"),
                "node",
                "20.1.0",
                &[("x", None), ("y", Some(""))]
            ),
            "pkg:npm/%40types/node@20.1.0"
        );
    }
}
