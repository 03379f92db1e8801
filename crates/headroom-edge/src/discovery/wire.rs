//! The DNS wire format, for A and AAAA lookups only (RFC 1035 §4, RFC 3596, EDNS0 RFC 6891).
//!
//! Written by hand rather than taken from `hickory-proto`: with `default-features = false`
//! that crate still brings 39 crates this workspace does not have (`url` → `idna` → the ICU
//! tables, `rand`, `thiserror`...), about 17 s of CPU to compile on the dev machine, and it
//! needs Rust 1.88 where the workspace promises 1.85. We need one query shape and two record
//! types; this file is that, with every read bounds-checked and name compression handled so
//! a hostile answer is an error, never a panic (`fuzz_check`, seeded mutations in the tests
//! and the `dns_answer` fuzz target check it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const TYPE_CNAME: u16 = 5;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// UDP payload size advertised with EDNS0: 1232 bytes fits any path's MTU without IP
/// fragmentation (the DNS flag day 2020 value) and holds ~75 A records, where plain DNS's
/// 512 bytes hold ~29: a headless Service with 40 pods still answers over UDP.
pub const EDNS_PAYLOAD: u16 = 1232;
/// CNAME hops followed from the queried name; resolvers give up at about this many too.
const MAX_CNAME_HOPS: usize = 16;
/// Compression pointers followed in one name. Pointers must point backwards, which with the
/// 255-byte cap already ends every loop; this bound just makes the cost obvious.
const MAX_POINTERS: usize = 64;

/// One question, encoded, and what its answer must echo.
#[derive(Debug, Clone)]
pub struct Query {
    pub id: u16,
    pub qtype: u16,
    /// The name in canonical wire form: lower-case, length-prefixed labels, a final 0.
    name: Vec<u8>,
    /// The whole message, ready to send over UDP (over TCP, prefix its length).
    pub bytes: Vec<u8>,
}

/// What a server answered to one [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// NOERROR: the records of the queried type for the name (or its CNAME targets); empty
    /// when the name exists without such records.
    Addresses(Vec<IpAddr>),
    /// The answer did not fit (TC bit): ask again over TCP.
    Truncated,
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// Any other response code (2 SERVFAIL, 5 REFUSED...).
    ServerError(u8),
}

/// Why a datagram is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not an answer to this query (other id, not a response, other question): ignore it and
    /// keep waiting, it may be a late answer to an earlier query or a spoofing attempt.
    NotOurs,
    /// An answer to this query that breaks the format.
    Malformed(&'static str),
}

/// Encodes `host` (`app.internal`, a trailing dot allowed) in canonical wire form.
pub fn encode_name(host: &str) -> Result<Vec<u8>, String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let mut out = Vec::with_capacity(host.len() + 2);
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "\"{host}\" is not a DNS name: labels are 1 to 63 bytes"
            ));
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    if out.len() > 255 {
        return Err(format!("\"{host}\" is longer than a DNS name may be (253)"));
    }
    Ok(out)
}

/// A recursive query for `host`'s records of `qtype`, with an EDNS0 OPT record.
pub fn query(id: u16, host: &str, qtype: u16) -> Result<Query, String> {
    let name = encode_name(host)?;
    let mut bytes = Vec::with_capacity(12 + name.len() + 4 + 11);
    // Header: id, flags RD (recursion desired), 1 question, 0 answers, 0 authority, 1 additional.
    for v in [id, 0x0100, 1, 0, 0, 1] {
        bytes.extend(v.to_be_bytes());
    }
    bytes.extend(&name);
    bytes.extend(qtype.to_be_bytes());
    bytes.extend(CLASS_IN.to_be_bytes());
    // OPT: root name, type 41, class = our UDP payload size, TTL 0 (no flags), no data.
    bytes.push(0);
    bytes.extend(TYPE_OPT.to_be_bytes());
    bytes.extend(EDNS_PAYLOAD.to_be_bytes());
    bytes.extend([0, 0, 0, 0, 0, 0]);
    Ok(Query {
        id,
        qtype,
        name,
        bytes,
    })
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, WireError> {
    match msg.get(at..at.saturating_add(2)) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(WireError::Malformed("message ends inside a field")),
    }
}

/// Reads the (possibly compressed) name at `pos`: its canonical form and the offset just
/// after it where it was written (after the first pointer, if it has one).
fn read_name(msg: &[u8], mut pos: usize) -> Result<(Vec<u8>, usize), WireError> {
    let short = WireError::Malformed("message ends inside a name");
    let mut name = Vec::new();
    let mut after = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(pos).ok_or(short.clone())? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => {
                name.push(0);
                return Ok((name, after.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(short.clone())?;
                name.push(len as u8);
                name.extend(label.iter().map(u8::to_ascii_lowercase));
                // 254: the final 0 must still fit in 255.
                if name.len() > 254 {
                    return Err(WireError::Malformed("name longer than 255 bytes"));
                }
                pos += 1 + len;
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or(short.clone())? as usize;
                let target = ((len & 0x3F) << 8) | low;
                pointers += 1;
                // RFC 1035 §4.1.4: a pointer refers to a *prior* occurrence of a name.
                if target >= pos || pointers > MAX_POINTERS {
                    return Err(WireError::Malformed(
                        "compression pointer does not point backwards",
                    ));
                }
                after.get_or_insert(pos + 2);
                pos = target;
            }
            // 0x40 and 0x80: extended label types (RFC 6891 §5), never used in answers.
            _ => return Err(WireError::Malformed("unknown label type")),
        }
    }
}

/// Parses a server's message as the answer to `q`.
pub fn parse_reply(msg: &[u8], q: &Query) -> Result<Reply, WireError> {
    if msg.len() < 12 {
        return Err(WireError::NotOurs);
    }
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    if id != q.id || flags & 0x8000 == 0 {
        return Err(WireError::NotOurs);
    }
    if (flags >> 11) & 0xF != 0 {
        return Err(WireError::Malformed(
            "answer has an opcode other than QUERY",
        ));
    }
    if flags & 0x0200 != 0 {
        return Ok(Reply::Truncated);
    }
    match (flags & 0xF) as u8 {
        0 => {}
        3 => return Ok(Reply::NoSuchName),
        rcode => return Ok(Reply::ServerError(rcode)),
    }
    let questions = u16_at(msg, 4)?;
    let answers = u16_at(msg, 6)?;
    // The answer must echo our question (RFC 5452 §9.1): one more thing a spoofer must guess.
    if questions != 1 {
        return Err(WireError::NotOurs);
    }
    let (qname, mut pos) = read_name(msg, 12)?;
    if qname != q.name || u16_at(msg, pos)? != q.qtype || u16_at(msg, pos + 2)? != CLASS_IN {
        return Err(WireError::NotOurs);
    }
    pos += 4;

    let mut addresses: Vec<(Vec<u8>, IpAddr)> = Vec::new();
    let mut aliases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for _ in 0..answers {
        let (owner, at) = read_name(msg, pos)?;
        let rtype = u16_at(msg, at)?;
        let class = u16_at(msg, at + 2)?;
        let len = u16_at(msg, at + 8)? as usize;
        let start = at + 10;
        let data = msg
            .get(start..start + len)
            .ok_or(WireError::Malformed("record data runs past the message"))?;
        pos = start + len;
        if class != CLASS_IN {
            continue;
        }
        match rtype {
            TYPE_A if q.qtype == TYPE_A => {
                let octets: [u8; 4] = data
                    .try_into()
                    .map_err(|_| WireError::Malformed("an A record is not 4 bytes"))?;
                addresses.push((owner, IpAddr::V4(Ipv4Addr::from(octets))));
            }
            TYPE_AAAA if q.qtype == TYPE_AAAA => {
                let octets: [u8; 16] = data
                    .try_into()
                    .map_err(|_| WireError::Malformed("an AAAA record is not 16 bytes"))?;
                addresses.push((owner, IpAddr::V6(Ipv6Addr::from(octets))));
            }
            TYPE_CNAME => {
                let (target, end) = read_name(msg, start)?;
                if end > pos {
                    return Err(WireError::Malformed("a CNAME runs past its record"));
                }
                aliases.push((owner, target));
            }
            _ => {}
        }
    }
    // Only records for the queried name, or for names it is an alias of, count: a server
    // that adds unrelated addresses does not get them used.
    let mut names = vec![q.name.clone()];
    for _ in 0..MAX_CNAME_HOPS {
        let before = names.len();
        for (owner, target) in &aliases {
            if names.contains(owner) && !names.contains(target) {
                names.push(target.clone());
            }
        }
        if names.len() == before {
            break;
        }
    }
    Ok(Reply::Addresses(
        addresses
            .into_iter()
            .filter(|(owner, _)| names.contains(owner))
            .map(|(_, ip)| ip)
            .collect(),
    ))
}

/// Checks the parser's invariants on arbitrary bytes from a DNS server, panicking when one
/// breaks; the fuzz target `dns_answer` and a seeded test feed it. Beyond "never panics": an
/// A query yields only IPv4 addresses and an AAAA query only IPv6, and no answer yields more
/// addresses than its bytes can hold (a record takes at least 15).
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    // The id comes from the input, so the fuzzer reaches past the id check.
    let id = u16::from_be_bytes([
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    ]);
    for qtype in [TYPE_A, TYPE_AAAA] {
        let Ok(q) = query(id, "app.internal", qtype) else {
            unreachable!("a valid name encodes")
        };
        if let Ok(Reply::Addresses(ips)) = parse_reply(data, &q) {
            assert!(
                ips.len() * 15 <= data.len(),
                "{} addresses from {} bytes",
                ips.len(),
                data.len()
            );
            assert!(
                ips.iter().all(|ip| ip.is_ipv4() == (qtype == TYPE_A)),
                "{ips:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q` with `answers` (already encoded records) appended.
    fn reply(q: &Query, flags: u16, answers: &[&[u8]]) -> Vec<u8> {
        let mut m = Vec::new();
        for v in [q.id, flags, 1, answers.len() as u16, 0, 0] {
            m.extend(v.to_be_bytes());
        }
        m.extend(&q.name);
        m.extend(q.qtype.to_be_bytes());
        m.extend(CLASS_IN.to_be_bytes());
        for a in answers {
            m.extend(*a);
        }
        m
    }

    /// A record whose owner is `name` (raw bytes, e.g. a pointer `[0xC0, 12]`).
    fn record(name: &[u8], rtype: u16, data: &[u8]) -> Vec<u8> {
        let mut r = name.to_vec();
        r.extend(rtype.to_be_bytes());
        r.extend(CLASS_IN.to_be_bytes());
        r.extend(30u32.to_be_bytes());
        r.extend((data.len() as u16).to_be_bytes());
        r.extend(data);
        r
    }

    const AT_QNAME: [u8; 2] = [0xC0, 12];

    #[test]
    fn a_query_is_a_recursive_question_with_edns() {
        let q = query(0xBEEF, "App.Internal.", TYPE_AAAA).unwrap();
        let mut want = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        want.extend(b"\x03app\x08internal\x00");
        want.extend([0, 28, 0, 1]);
        want.extend([0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(q.bytes, want);
    }

    #[test]
    fn names_that_cannot_be_encoded_are_refused() {
        assert!(encode_name("a..b").is_err());
        assert!(encode_name(&"a".repeat(64)).is_err());
        assert!(encode_name(&["abcdefghi"; 26].join(".")).is_err());
        assert!(encode_name("").is_err());
    }

    #[test]
    fn a_records_are_read_through_compression_pointers() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        let a1 = record(&AT_QNAME, TYPE_A, &[10, 0, 0, 1]);
        let a2 = record(&AT_QNAME, TYPE_A, &[10, 0, 0, 2]);
        let m = reply(&q, 0x8180, &[&a1, &a2]);
        assert_eq!(
            parse_reply(&m, &q),
            Ok(Reply::Addresses(vec![
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]))
        );
    }

    #[test]
    fn aaaa_records_are_read_and_a_records_in_an_aaaa_answer_ignored() {
        let q = query(7, "app.internal", TYPE_AAAA).unwrap();
        let ip: Ipv6Addr = "fd00::1".parse().unwrap();
        let six = record(&AT_QNAME, TYPE_AAAA, &ip.octets());
        let four = record(&AT_QNAME, TYPE_A, &[10, 0, 0, 1]);
        let m = reply(&q, 0x8180, &[&four, &six]);
        assert_eq!(
            parse_reply(&m, &q),
            Ok(Reply::Addresses(vec![IpAddr::V6(ip)]))
        );
    }

    #[test]
    fn records_of_a_cname_target_count_and_unrelated_names_do_not() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        // app.internal CNAME pods.internal (the suffix "internal" compressed to offset 16).
        let cname = record(&AT_QNAME, TYPE_CNAME, b"\x04pods\xC0\x10");
        let m0 = reply(&q, 0x8180, &[&cname]);
        let target_at = (m0.len() - 7) as u8;
        let a = record(&[0xC0, target_at], TYPE_A, &[10, 0, 0, 9]);
        let stray = record(b"\x05other\x00", TYPE_A, &[6, 6, 6, 6]);
        let m = reply(&q, 0x8180, &[&cname, &a, &stray]);
        assert_eq!(
            parse_reply(&m, &q),
            Ok(Reply::Addresses(vec!["10.0.0.9".parse().unwrap()]))
        );
    }

    #[test]
    fn response_codes_and_truncation_are_reported() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        assert_eq!(
            parse_reply(&reply(&q, 0x8183, &[]), &q),
            Ok(Reply::NoSuchName)
        );
        assert_eq!(
            parse_reply(&reply(&q, 0x8182, &[]), &q),
            Ok(Reply::ServerError(2))
        );
        assert_eq!(
            parse_reply(&reply(&q, 0x8380, &[]), &q),
            Ok(Reply::Truncated)
        );
        assert_eq!(
            parse_reply(&reply(&q, 0x8180, &[]), &q),
            Ok(Reply::Addresses(vec![]))
        );
    }

    #[test]
    fn answers_to_another_query_are_not_ours() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        let other_id = query(8, "app.internal", TYPE_A).unwrap();
        let other_name = query(7, "app.externa1", TYPE_A).unwrap();
        let other_type = query(7, "app.internal", TYPE_AAAA).unwrap();
        for o in [other_id, other_name, other_type] {
            assert_eq!(
                parse_reply(&reply(&o, 0x8180, &[]), &q),
                Err(WireError::NotOurs)
            );
        }
        // Our own query echoed back is not a response.
        assert_eq!(parse_reply(&q.bytes, &q), Err(WireError::NotOurs));
        assert_eq!(parse_reply(&[0; 5], &q), Err(WireError::NotOurs));
    }

    #[test]
    fn hostile_names_are_errors() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        let base = reply(&q, 0x8181 & 0xFFF0 | 0x0080, &[]);
        let with = |owner: &[u8]| {
            let mut m = base.clone();
            m[7] = 1;
            m.extend(record(owner, TYPE_A, &[1, 2, 3, 4]));
            m
        };
        let here = base.len() as u8;
        for (owner, why) in [
            (vec![0xC0, here], "a pointer to itself"),
            (vec![0xC0, here + 1], "a pointer forwards"),
            (vec![1, b'a', 0xC0, here], "a loop through a label"),
            (vec![0x40, 0], "an extended label type"),
            (vec![63, b'a'], "a label past the end"),
        ] {
            assert!(
                matches!(parse_reply(&with(&owner), &q), Err(WireError::Malformed(_))),
                "{why}"
            );
        }
        let long: Vec<u8> = (0..5)
            .flat_map(|_| [63].into_iter().chain([b'a'; 63]))
            .collect();
        let mut long = long;
        long.push(0);
        assert!(matches!(
            parse_reply(&with(&long), &q),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn a_pointer_forwards_is_refused_even_to_a_valid_name() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        let mut m = reply(&q, 0x8180, &[]);
        m[7] = 2;
        // The A record's owner points at the name carried in the next record's data.
        let name_at = m.len() + 16 + 12;
        m.extend(record(&[0xC0, name_at as u8], TYPE_A, &[1, 2, 3, 4]));
        m.extend(record(&AT_QNAME, 16, b"\x03app\x08internal\x00"));
        assert_eq!(&m[name_at..name_at + 4], b"\x03app");
        assert!(matches!(parse_reply(&m, &q), Err(WireError::Malformed(_))));
    }

    #[test]
    fn records_of_the_wrong_size_are_errors() {
        let q = query(7, "app.internal", TYPE_A).unwrap();
        let bad = record(&AT_QNAME, TYPE_A, &[10, 0, 0]);
        assert!(matches!(
            parse_reply(&reply(&q, 0x8180, &[&bad]), &q),
            Err(WireError::Malformed(_))
        ));
        let mut cut = reply(&q, 0x8180, &[&record(&AT_QNAME, TYPE_A, &[10, 0, 0, 1])]);
        cut.pop();
        assert!(matches!(
            parse_reply(&cut, &q),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn every_prefix_and_seeded_mutation_of_answers_keeps_the_invariants() {
        let q = query(0x0102, "app.internal", TYPE_A).unwrap();
        let a = record(&AT_QNAME, TYPE_A, &[10, 0, 0, 1]);
        let cname = record(&AT_QNAME, TYPE_CNAME, b"\x04pods\xC0\x10");
        let six = record(&AT_QNAME, TYPE_AAAA, &[0xFD; 16]);
        let q6 = query(0x0102, "app.internal", TYPE_AAAA).unwrap();
        let seeds: Vec<Vec<u8>> = vec![
            reply(&q, 0x8180, &[&a, &a]),
            reply(&q, 0x8180, &[&cname, &a]),
            reply(&q6, 0x8180, &[&six, &a]),
            reply(&q, 0x8183, &[]),
        ];
        for s in &seeds {
            for end in 0..=s.len() {
                fuzz_check(&s[..end]);
            }
        }
        let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
        let alphabet = [
            0x00, 0x01, 0x03, 0x04, 0x0C, 0x10, 0x1C, 0x3F, 0x40, 0x80, 0xC0, 0xFF,
        ];
        crate::h1::for_each_mutation(&seeds, &alphabet, 2028, 20_000, fuzz_check);
    }
}
