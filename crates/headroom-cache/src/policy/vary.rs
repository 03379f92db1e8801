//! Vary (RFC 9111 §4.1): which request fields select among stored responses,
//! and their normalised values as bytes of a secondary cache key.

use http::header::VARY;
use http::{HeaderMap, HeaderName};

/// A response's Vary, read once when it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No Vary (or only empty ones): one response answers every request.
    None,
    /// The request fields that select this response, lowercase, sorted by name
    /// and deduplicated, so the same set always yields the same key.
    Fields(Vec<HeaderName>),
    /// `Vary: *`: no later request can be known to match (never stored).
    Star,
}

/// Reads every Vary field line. Names are case-insensitive; invalid names are
/// skipped. Cost: one lookup; allocates the field list when there is one.
pub fn vary(resp: &HeaderMap) -> Vary {
    let mut fields = Vec::new();
    for line in resp.get_all(VARY) {
        for element in line.as_bytes().split(|b| *b == b',') {
            let element = element.trim_ascii();
            if element == b"*" {
                return Vary::Star;
            }
            if let Ok(name) = HeaderName::from_bytes(element) {
                fields.push(name);
            }
        }
    }
    if fields.is_empty() {
        return Vary::None;
    }
    fields.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    fields.dedup();
    Vary::Fields(fields)
}

/// Marks the start of a field (a byte no header value can hold).
const FIELD: u8 = 0x00;
/// The field is absent from the request.
const ABSENT: u8 = 0x01;
/// The field is present; its normalised value follows (possibly empty).
const PRESENT: u8 = 0x02;

/// §4.1: appends the normalised values of `fields` in `req` to `out` (bytes of
/// a cache key). Per field: a `0x00` separator, then `0x01` if the request
/// lacks it, or `0x02` and its field lines joined by `,` with whitespace around
/// commas removed and runs of whitespace collapsed to one space. Header values
/// cannot hold bytes below 0x09, so fields cannot run into each other and an
/// absent field differs from an empty one. Case is kept (values are not
/// case-insensitive in general). Cost: one lookup per field; no allocation
/// beyond `out`'s growth.
pub fn vary_values(fields: &[HeaderName], req: &HeaderMap, out: &mut Vec<u8>) {
    for field in fields {
        out.push(FIELD);
        let mut lines = req.get_all(field).iter();
        let Some(first) = lines.next() else {
            out.push(ABSENT);
            continue;
        };
        out.push(PRESENT);
        push_normalised(first.as_bytes(), out);
        for line in lines {
            out.push(b',');
            push_normalised(line.as_bytes(), out);
        }
    }
}

/// One field line: elements trimmed, inner whitespace runs collapsed.
fn push_normalised(line: &[u8], out: &mut Vec<u8>) {
    for (i, element) in line.split(|b| *b == b',').enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut space = false;
        for &b in element.trim_ascii() {
            if b == b' ' || b == b'\t' {
                space = true;
                continue;
            }
            if space {
                out.push(b' ');
                space = false;
            }
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::headers;

    fn key(fields: &[&str], req: &HeaderMap) -> Vec<u8> {
        let fields: Vec<HeaderName> = fields.iter().map(|f| f.parse().unwrap()).collect();
        let mut out = Vec::new();
        vary_values(&fields, req, &mut out);
        out
    }

    // RFC 9111 §4.1: field names are case-insensitive; the set is order-free.
    #[test]
    fn vary_fields_are_lowercased_sorted_and_deduplicated_across_lines() {
        let resp = headers(&[
            ("vary", "Accept-Encoding, User-Agent"),
            ("vary", "accept-encoding,Accept"),
        ]);
        let names = match vary(&resp) {
            Vary::Fields(f) => f.iter().map(|n| n.as_str().to_owned()).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names, ["accept", "accept-encoding", "user-agent"]);
    }

    // RFC 9111 §4.1: a Vary of "*" always fails to match.
    #[test]
    fn vary_star_anywhere_in_the_list_is_star() {
        assert_eq!(
            vary(&headers(&[("vary", "Accept"), ("vary", "Origin, *")])),
            Vary::Star
        );
    }

    // RFC 9111 §4.1: an empty Vary selects nothing; invalid names are skipped.
    #[test]
    fn empty_or_invalid_vary_is_none() {
        assert_eq!(vary(&headers(&[])), Vary::None);
        assert_eq!(vary(&headers(&[("vary", " , ")])), Vary::None);
        assert_eq!(vary(&headers(&[("vary", "bad name, (x)")])), Vary::None);
    }

    // RFC 9111 §4.1: values are normalised (whitespace around commas, runs of
    // whitespace, several field lines combined) before comparison.
    #[test]
    fn vary_values_normalise_whitespace_and_field_lines() {
        let a = headers(&[("accept-encoding", "gzip,  br ,zstd")]);
        let b = headers(&[("accept-encoding", "gzip, br"), ("accept-encoding", "zstd")]);
        assert_eq!(key(&["accept-encoding"], &a), key(&["accept-encoding"], &b));
        let c = headers(&[("user-agent", "a \t  b")]);
        assert_eq!(key(&["user-agent"], &c), b"\x00\x02a b");
    }

    // RFC 9111 §4.1: a field absent from both requests matches; absent and empty differ.
    #[test]
    fn vary_values_distinguish_an_absent_field_from_an_empty_one() {
        let absent = headers(&[]);
        let empty = headers(&[("origin", "")]);
        assert_ne!(key(&["origin"], &absent), key(&["origin"], &empty));
        assert_eq!(key(&["origin"], &absent), key(&["origin"], &headers(&[])));
    }

    // RFC 9111 §4.1: each field's value is compared on its own; a value cannot
    // spill into the next field.
    #[test]
    fn vary_values_keep_fields_apart() {
        let one = headers(&[("a", "x"), ("b", "")]);
        let two = headers(&[("a", ""), ("b", "x")]);
        assert_ne!(key(&["a", "b"], &one), key(&["a", "b"], &two));
    }

    // RFC 9111 §4.1: different values select different responses.
    #[test]
    fn vary_values_differ_when_values_differ() {
        let gzip = headers(&[("accept-encoding", "gzip")]);
        let br = headers(&[("accept-encoding", "br")]);
        assert_ne!(
            key(&["accept-encoding"], &gzip),
            key(&["accept-encoding"], &br)
        );
    }
}
