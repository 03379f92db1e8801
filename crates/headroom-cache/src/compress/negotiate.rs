//! Content negotiation: the coding to send from a request's `Accept-Encoding` (RFC 9110 §12.5.3).

use http::HeaderValue;

use super::{list_elements, Coding};

/// The codings a route offers when its config names none, best first: brotli is smallest for
/// text, zstd next, gzip for everyone else.
pub const DEFAULT_OFFERED: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

/// A q-value in thousandths: 0 (refused) to 1000.
type Weight = u16;

/// The coding to send for a request whose `Accept-Encoding` is `accept_encoding`, among the
/// codings a route `offered`, listed in the route's order of preference (see
/// [`DEFAULT_OFFERED`]).
///
/// RFC 9110 §12.5.3: each coding's q-value (default 1; `q=0` refuses it); `*` gives its q-value
/// to every coding not named; names, `q` and `*` are case-insensitive, whitespace around
/// elements and parameters is tolerated, `x-gzip` is gzip. The highest q-value wins; ties go to
/// the route's order. A coding named twice keeps its lowest q-value (a refusal is honoured).
/// Malformed elements (a bad token, a bad q-value) are ignored, the rest still count.
///
/// Returns [`Coding::Identity`] when there is no header, when it is empty, when nothing offered
/// is acceptable, or when the client ranks `identity` above every offered coding
/// (`identity;q=1, gzip;q=0.5`); identity only wins when ranked strictly higher, since it is
/// acceptable by default and compression is why the route offers codings. When even identity is
/// refused (`identity;q=0`, `*;q=0`) and nothing offered is acceptable, identity is still the
/// answer: the alternative is a 415/406 nobody sends, and every server sends identity then.
/// `Identity` in `offered` is ignored.
///
/// Only the one header value is read (a request sends one; the edge passes `headers.get`).
/// Cost: one pass over the header's bytes, no allocation.
pub fn negotiate(accept_encoding: Option<&HeaderValue>, offered: &[Coding]) -> Coding {
    let Some(value) = accept_encoding else {
        return Coding::Identity;
    };
    let prefs = Preferences::parse(value);
    let mut best: Option<(Coding, Weight)> = None;
    for &coding in offered {
        if coding == Coding::Identity {
            continue;
        }
        let q = prefs.weight(coding).unwrap_or(0);
        // Strictly greater: on a tie the coding earlier in the route's order stays.
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    match (best, prefs.weight(Coding::Identity)) {
        (Some((_, q)), Some(identity_q)) if identity_q > q => Coding::Identity,
        (Some((coding, _)), _) => coding,
        (None, _) => Coding::Identity,
    }
}

/// Whether a request with this `Accept-Encoding` accepts any of `offered` (so the response
/// path may skip compression entirely when it does not). Same rules and cost as
/// [`negotiate`]: one pass, no allocation.
pub fn wants_any(accept_encoding: Option<&HeaderValue>, offered: &[Coding]) -> bool {
    negotiate(accept_encoding, offered) != Coding::Identity
}

/// What an `Accept-Encoding` header says, for the codings the edge knows.
#[derive(Debug, Default)]
struct Preferences {
    /// Indexed by [`Coding::index`]; `None` when the coding is not named.
    named: [Option<Weight>; 4],
    /// `*`'s q-value, if present.
    any: Option<Weight>,
}

impl Preferences {
    fn parse(value: &HeaderValue) -> Preferences {
        let mut prefs = Preferences::default();
        for element in list_elements(std::iter::once(value)) {
            let Some((token, q)) = parse_element(element) else {
                continue;
            };
            let slot = if token == b"*" {
                &mut prefs.any
            } else if let Some(coding) = Coding::from_token(token) {
                &mut prefs.named[coding.index()]
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old| old.min(q)));
        }
        prefs
    }

    /// The q-value the header gives `coding`: its own, else `*`'s, else none.
    fn weight(&self, coding: Coding) -> Option<Weight> {
        self.named[coding.index()].or(self.any)
    }
}

/// `coding *( OWS ";" OWS param )` → the coding's token and its q-value (1000 without `q`);
/// `None` when the token or the q-value is malformed. Parameters other than `q` are ignored.
fn parse_element(element: &[u8]) -> Option<(&[u8], Weight)> {
    let mut parts = element.split(|&b| b == b';');
    let token = parts.next()?.trim_ascii();
    if token.is_empty() || !(token == b"*" || token.iter().all(|&b| is_tchar(b))) {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let param = param.trim_ascii();
        let Some(eq) = param.iter().position(|&b| b == b'=') else {
            // A bare `;` or a valueless parameter: nothing to read, nothing broken.
            continue;
        };
        let (name, value) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"q") {
            q = parse_qvalue(value)?;
        }
    }
    Some((token, q))
}

/// RFC 9110 §12.4.2: `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths. Anything else (`1.5`, `0.1234`, `-1`, `.5`) is `None`.
fn parse_qvalue(value: &[u8]) -> Option<Weight> {
    let (&first, rest) = value.split_first()?;
    let fraction = match rest {
        [] => &[][..],
        [b'.', digits @ ..] if digits.len() <= 3 => digits,
        _ => return None,
    };
    let mut thousandths: Weight = 0;
    let mut scale = 100;
    for &d in fraction {
        if !d.is_ascii_digit() {
            return None;
        }
        thousandths += Weight::from(d - b'0') * scale;
        scale /= 10;
    }
    match first {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn pick(header: &str, offered: &[Coding]) -> Coding {
        negotiate(Some(&HeaderValue::from_str(header).unwrap()), offered)
    }

    fn pick_default(header: &str) -> Coding {
        pick(header, &DEFAULT_OFFERED)
    }

    #[test]
    fn no_header_or_an_empty_one_gets_identity() {
        assert_eq!(negotiate(None, &DEFAULT_OFFERED), Identity);
        assert_eq!(pick_default(""), Identity);
        assert!(!wants_any(None, &DEFAULT_OFFERED));
    }

    #[test]
    fn equal_weights_go_to_the_routes_order() {
        // A browser's header: every coding at q=1, so the route's order decides.
        assert_eq!(pick_default("gzip, deflate, br, zstd"), Brotli);
        assert_eq!(pick("gzip, deflate, br, zstd", &[Gzip, Brotli]), Gzip);
        assert_eq!(pick("gzip, br", &[Zstd, Gzip, Brotli]), Gzip);
        assert_eq!(pick_default("gzip, zstd"), Zstd);
    }

    #[test]
    fn the_highest_q_value_wins_over_the_routes_order() {
        assert_eq!(pick_default("br;q=0.5, gzip;q=0.8"), Gzip);
        assert_eq!(pick_default("br;q=0.999, zstd;q=1.000, gzip;q=0"), Zstd);
        assert_eq!(pick_default("br;q=0.1, gzip"), Gzip);
    }

    #[test]
    fn q_zero_refuses_a_coding() {
        assert_eq!(pick_default("br;q=0, gzip"), Gzip);
        assert_eq!(pick_default("br;q=0.000, zstd;q=0, gzip;q=0"), Identity);
        assert_eq!(pick("gzip;q=0", &[Gzip]), Identity);
        assert!(!wants_any(
            Some(&HeaderValue::from_static("gzip;q=0")),
            &[Gzip]
        ));
    }

    #[test]
    fn star_matches_codings_not_named() {
        assert_eq!(pick_default("*"), Brotli);
        assert_eq!(pick_default("gzip;q=0, *"), Brotli);
        assert_eq!(pick("gzip;q=0, *", &[Gzip]), Identity);
        assert_eq!(pick("br;q=0, zstd;q=0, *;q=0.5", &DEFAULT_OFFERED), Gzip);
        // A named coding's own q-value beats `*`'s, up or down.
        assert_eq!(pick_default("*;q=0.2, gzip"), Gzip);
        assert_eq!(pick_default("*;q=0"), Identity);
        assert_eq!(pick_default("*;q=0, zstd;q=0.1"), Zstd);
    }

    #[test]
    fn identity_wins_only_when_ranked_strictly_higher() {
        assert_eq!(pick_default("identity, gzip;q=0.5"), Identity);
        assert_eq!(pick_default("identity;q=0.5, gzip;q=0.5"), Gzip);
        assert_eq!(pick_default("gzip;q=0.1"), Gzip);
        // `*` ranks identity too when identity is not named.
        assert_eq!(pick("*;q=0.5, br;q=0.3", &[Brotli]), Identity);
        assert_eq!(
            pick_default("*;q=0.5, br;q=0.3"),
            Zstd,
            "zstd ties identity at 0.5"
        );
    }

    #[test]
    fn identity_refused_and_nothing_acceptable_still_gets_identity() {
        assert_eq!(pick_default("identity;q=0"), Identity);
        assert_eq!(pick_default("identity;q=0, gzip"), Gzip);
        assert_eq!(pick_default("*;q=0"), Identity);
        assert_eq!(pick("deflate, identity;q=0", &DEFAULT_OFFERED), Identity);
    }

    #[test]
    fn names_and_parameters_are_case_insensitive_and_whitespace_tolerant() {
        assert_eq!(pick_default("GZIP"), Gzip);
        assert_eq!(pick_default("Br ; Q=0.5 ,  GZip ;q=0.6"), Gzip);
        assert_eq!(pick_default("\tzstd\t;\tq=1 , br; q = 0.9"), Zstd);
        assert_eq!(pick_default(",, ,gzip,,"), Gzip);
    }

    #[test]
    fn x_gzip_is_gzip() {
        assert_eq!(pick("x-gzip", &[Gzip]), Gzip);
        assert_eq!(pick("X-GZIP;q=0.5, br;q=0.4", &DEFAULT_OFFERED), Gzip);
        // Named twice (as gzip and x-gzip): the lower q-value, a refusal, is kept.
        assert_eq!(pick("gzip, x-gzip;q=0", &[Gzip]), Identity);
        assert_eq!(pick("gzip;q=0, gzip", &[Gzip]), Identity);
    }

    #[test]
    fn malformed_elements_are_ignored_and_the_rest_count() {
        assert_eq!(pick_default("br;q=2, gzip"), Gzip); // q above 1
        assert_eq!(pick_default("br;q=1.5, gzip"), Gzip);
        assert_eq!(pick_default("br;q=0.1234, gzip;q=0.1"), Gzip); // four decimals
        assert_eq!(pick_default("br;q=-1, gzip;q=0.1"), Gzip);
        assert_eq!(pick_default("br;q=, gzip;q=0.1"), Gzip);
        assert_eq!(pick_default("br;q=.5, gzip;q=0.1"), Gzip);
        assert_eq!(pick_default("b\"r, gzip;q=0.1"), Gzip); // not a token
        assert_eq!(pick_default("br zstd, gzip;q=0.1"), Gzip); // a space inside a token
        assert_eq!(pick_default("@@@, ;;;, =, q=1"), Identity);
        // Unknown codings and other parameters are not errors.
        assert_eq!(pick_default("deflate, compress, gzip;level=9"), Gzip);
        assert_eq!(pick_default("gzip;"), Gzip);
    }

    #[test]
    fn q_values_parse_to_thousandths() {
        let cases: [(&[u8], Option<Weight>); 10] = [
            (b"1", Some(1000)),
            (b"1.", Some(1000)),
            (b"1.000", Some(1000)),
            (b"0", Some(0)),
            (b"0.5", Some(500)),
            (b"0.05", Some(50)),
            (b"0.001", Some(1)),
            (b"1.001", None),
            (b"0.0001", None),
            (b"2", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_qvalue(text),
                expected,
                "{:?}",
                std::str::from_utf8(text)
            );
        }
    }

    #[test]
    fn only_offered_codings_are_chosen() {
        assert_eq!(pick("br, zstd", &[Gzip]), Identity);
        assert_eq!(pick("gzip, br", &[]), Identity);
        assert_eq!(pick("gzip, br", &[Identity, Gzip]), Gzip);
        assert!(wants_any(Some(&HeaderValue::from_static("zstd")), &[Zstd]));
    }
}
