//! A verified token's claims, read in one pass: `exp`/`nbf`/`iss`/`aud` checked with their
//! exact types, the consumer and the forwarded claims taken as strings, everything else
//! skipped unread. Strings borrow from the decoded payload; what is allocated is only what
//! is returned.
//!
//! Not jsonwebtoken's `decode`: it reads the claims twice (once for its checks, once for
//! the caller), reads the clock itself (untestable), and lets a wrong-type `nbf` (or `iss`,
//! when not also required) pass as if absent. Here a wrong type is a [`JwtError::BadClaim`].

use super::{JwtError, Verified};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// What a token's claims must satisfy, and what to take from them.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Vec<String>,
    /// Seconds.
    pub(crate) leeway: f64,
    pub(crate) require_exp: bool,
    pub(crate) consumer: String,
    pub(crate) forward: Vec<String>,
}

/// One claim's value, as far as we care: scalars, and lists of scalars.
#[derive(Debug, Clone)]
enum Value<'de> {
    Str(Cow<'de, str>),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
    List(Vec<Value<'de>>),
    /// An object, or a list inside a list.
    Other,
}

/// The claims we look at, as found.
#[derive(Default)]
struct Found<'de> {
    exp: Option<Value<'de>>,
    nbf: Option<Value<'de>>,
    iss: Option<Value<'de>>,
    aud: Option<Value<'de>>,
    consumer: Option<Value<'de>>,
    forward: Vec<(usize, Value<'de>)>,
    twice: Option<String>,
}

/// Checks `payload` (the decoded claims of a token whose signature is good) against
/// `rules` at `now` (seconds since the epoch).
pub(crate) fn check(payload: &[u8], rules: &Rules, now: u64) -> Result<Verified, JwtError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let found = Claims { rules }
        .deserialize(&mut de)
        .map_err(|_| JwtError::Malformed)?;
    de.end().map_err(|_| JwtError::Malformed)?;
    if let Some(name) = found.twice {
        return Err(bad(&name, "appears twice"));
    }
    let now = now as f64;
    let exp = numeric_date("exp", &found.exp)?;
    let expires = exp.map(|e| (e + rules.leeway).max(0.0) as u64);
    match exp {
        Some(exp) if now >= exp + rules.leeway => return Err(JwtError::Expired),
        None if rules.require_exp => return Err(bad("exp", "is missing")),
        _ => {}
    }
    if let Some(nbf) = numeric_date("nbf", &found.nbf)? {
        if now + rules.leeway < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(want) = &rules.issuer {
        match &found.iss {
            Some(Value::Str(iss)) if iss == want => {}
            None | Some(Value::Str(_)) => return Err(JwtError::WrongIssuer),
            Some(_) => return Err(bad("iss", "is not a string")),
        }
    }
    if !rules.audience.is_empty() {
        let fits = |v: &Value| matches!(v, Value::Str(a) if rules.audience.iter().any(|w| w == a));
        match &found.aud {
            Some(v @ Value::Str(_)) if fits(v) => {}
            Some(Value::List(l)) if l.iter().all(|v| matches!(v, Value::Str(_))) => {
                if !l.iter().any(fits) {
                    return Err(JwtError::WrongAudience);
                }
            }
            None | Some(Value::Str(_)) => return Err(JwtError::WrongAudience),
            Some(_) => return Err(bad("aud", "is not a string or a list of strings")),
        }
    }
    let consumer = match &found.consumer {
        Some(Value::Str(s)) if !s.is_empty() => header_safe(&rules.consumer, s)?.to_string(),
        Some(Value::Int(n)) => n.to_string(),
        None | Some(Value::Null) => return Err(bad(&rules.consumer, "is missing")),
        Some(_) => return Err(bad(&rules.consumer, "is not a string")),
    };
    let mut claims = Vec::with_capacity(found.forward.len());
    for (i, value) in found.forward {
        let name = &rules.forward[i];
        let text = match value {
            Value::Null => continue,
            Value::List(items) => {
                let mut joined = String::new();
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        joined.push(',');
                    }
                    scalar(name, item, &mut joined)?;
                }
                joined
            }
            v => {
                let mut s = String::new();
                scalar(name, &v, &mut s)?;
                s
            }
        };
        claims.push((i, text));
    }
    claims.sort_unstable_by_key(|(i, _)| *i);
    Ok(Verified {
        consumer,
        claims,
        expires,
    })
}

fn bad(name: &str, why: &str) -> JwtError {
    JwtError::BadClaim(format!("claim `{name}` {why}"))
}

/// A NumericDate (RFC 7519 §2): a JSON number of seconds.
fn numeric_date(name: &str, v: &Option<Value>) -> Result<Option<f64>, JwtError> {
    match v {
        None => Ok(None),
        Some(Value::Int(n)) => Ok(Some(*n as f64)),
        Some(Value::Float(f)) => Ok(Some(*f)),
        Some(_) => Err(bad(name, "is not a number of seconds")),
    }
}

/// Appends a scalar claim's text to `out` (for a header: no control characters).
fn scalar(name: &str, v: &Value, out: &mut String) -> Result<(), JwtError> {
    use std::fmt::Write;
    match v {
        Value::Str(s) => out.push_str(header_safe(name, s)?),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Float(f) => {
            let _ = write!(out, "{f}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => return Err(bad(name, "is not a string, a number or a list of them")),
    }
    Ok(())
}

/// A value that can go in a header as it is: no CR, LF or other control character.
fn header_safe<'a>(name: &str, s: &'a str) -> Result<&'a str, JwtError> {
    match s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        true => Err(bad(name, "holds control characters")),
        false => Ok(s),
    }
}

/// The claims object, read with the rules in hand.
struct Claims<'r> {
    rules: &'r Rules,
}

impl<'de> DeserializeSeed<'de> for Claims<'_> {
    type Value = Found<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Claims<'_> {
    type Value = Found<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<'de>, A::Error> {
        let rules = self.rules;
        let mut found = Found::default();
        while let Some(Name(name)) = map.next_key()? {
            let standard = matches!(&*name, "exp" | "nbf" | "iss" | "aud");
            let consumer = *name == *rules.consumer;
            let forward = rules.forward.iter().position(|f| **f == *name);
            if !standard && !consumer && forward.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value_seed(ValueSeed { top: true })?;
            // One claim may have several roles (`sub` both the consumer and forwarded):
            // each gets the value, cloned for all but the last.
            let mut roles =
                usize::from(standard) + usize::from(consumer) + usize::from(forward.is_some());
            let mut value = Some(value);
            let mut give = || {
                roles -= 1;
                match roles {
                    0 => value.take(),
                    _ => value.clone(),
                }
            };
            let slot = match &*name {
                "exp" => Some(&mut found.exp),
                "nbf" => Some(&mut found.nbf),
                "iss" => Some(&mut found.iss),
                "aud" => Some(&mut found.aud),
                _ => None,
            };
            let mut twice = slot.is_some_and(|slot| std::mem::replace(slot, give()).is_some());
            if consumer {
                twice |= std::mem::replace(&mut found.consumer, give()).is_some();
            }
            if let Some(i) = forward {
                twice |= found.forward.iter().any(|(j, _)| *j == i);
                if let Some(v) = give() {
                    found.forward.push((i, v));
                }
            }
            if twice && found.twice.is_none() {
                found.twice = Some(name.into_owned());
            }
        }
        Ok(found)
    }
}

/// A claim name, borrowed unless it has escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A claim's value; a list's items are scalars or [`Value::Other`].
struct ValueSeed {
    top: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a claim value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value<'de>, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value<'de>, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value<'de>, E> {
        Ok(Value::Float(n))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(b))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        if !self.top {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Other);
        }
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed { top: false })? {
            items.push(v);
        }
        Ok(Value::List(items))
    }
}
