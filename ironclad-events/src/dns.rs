//! A bounds-checked DNS message parser (RFC 1035) for captured queries and responses.
//!
//! It never panics and never reads past the buffer: every read is checked, compression
//! pointers are followed at most [`MAX_POINTERS`] times (so pointer loops end), a label
//! length of 64 or more is refused and names are at most 255 bytes. Only what telemetry needs is decoded:
//! the header, the questions, and the answers' names, types and A/AAAA addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Compression pointers followed in one name, at most.
pub const MAX_POINTERS: usize = 32;
/// Questions decoded, at most.
pub const MAX_QUESTIONS: usize = 16;
/// Answers decoded, at most.
pub const MAX_ANSWERS: usize = 64;

/// Why a DNS message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The message ends before a field it announces.
    #[error("message truncated at byte {0}")]
    Truncated(usize),
    /// A name longer than 255 bytes.
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// More compression pointers than [`MAX_POINTERS`] (a loop).
    #[error("compression pointer loop")]
    PointerLoop,
    /// A label type other than a length (0-63) or a pointer: a "length" of 64 or more
    /// (0x40 and 0x80 prefixes), which is how an over-long label shows.
    #[error("label longer than 63 bytes or of an unsupported type at byte {0}")]
    BadLabel(usize),
}

/// One question.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Question {
    /// The name, dot-separated, without the final dot.
    pub name: String,
    /// The type number.
    pub qtype: u16,
}

/// One answer record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Answer {
    /// The owner name.
    pub name: String,
    /// The type number.
    pub rtype: u16,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The address of an A or AAAA record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
}

/// The decoded parts of a DNS message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Message {
    /// Transaction id.
    pub id: u16,
    /// A response (QR bit set) rather than a query.
    pub response: bool,
    /// Response code (0 = NOERROR, 3 = NXDOMAIN...).
    pub rcode: u8,
    /// Questions (at most [`MAX_QUESTIONS`]).
    pub questions: Vec<Question>,
    /// Answers (at most [`MAX_ANSWERS`]).
    pub answers: Vec<Answer>,
}

/// The mnemonic of a type number (`A`, `AAAA`...), or `TYPE<n>`.
pub fn type_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        other => format!("TYPE{other}"),
    }
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, DnsError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(DnsError::Truncated(at))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, DnsError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(DnsError::Truncated(at))
}

/// Reads the name at `start`; returns it and the offset just after it (where the
/// name's own bytes end, not where a pointer led).
fn name_at(b: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut at = start;
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *b.get(at).ok_or(DnsError::Truncated(at))? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Ok((name, end.unwrap_or(at + 1)));
                }
                let label = b
                    .get(at + 1..at + 1 + len)
                    .ok_or(DnsError::Truncated(at + 1))?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                if name.len() > 255 {
                    return Err(DnsError::NameTooLong);
                }
                at += 1 + len;
            }
            0xc0 => {
                let target = (u16_at(b, at)? & 0x3fff) as usize;
                end.get_or_insert(at + 2);
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(DnsError::PointerLoop);
                }
                at = target;
            }
            _ => return Err(DnsError::BadLabel(at)),
        }
    }
}

/// Parses a DNS message (as carried over UDP; strip the two-byte length prefix of TCP
/// first).
pub fn parse(b: &[u8]) -> Result<Message, DnsError> {
    let id = u16_at(b, 0)?;
    let flags = u16_at(b, 2)?;
    let qdcount = u16_at(b, 4)? as usize;
    let ancount = u16_at(b, 6)? as usize;
    let mut at = 12;
    if b.len() < at {
        return Err(DnsError::Truncated(b.len()));
    }
    let mut questions = Vec::new();
    for _ in 0..qdcount.min(MAX_QUESTIONS) {
        let (name, next) = name_at(b, at)?;
        let qtype = u16_at(b, next)?;
        u16_at(b, next + 2)?; // class
        questions.push(Question { name, qtype });
        at = next + 4;
    }
    let mut answers = Vec::new();
    if qdcount <= MAX_QUESTIONS {
        for _ in 0..ancount.min(MAX_ANSWERS) {
            let (name, next) = name_at(b, at)?;
            let rtype = u16_at(b, next)?;
            let ttl = u32_at(b, next + 4)?;
            let rdlen = u16_at(b, next + 8)? as usize;
            let rdata = b
                .get(next + 10..next + 10 + rdlen)
                .ok_or(DnsError::Truncated(next + 10))?;
            let address = match (rtype, rdlen) {
                (1, 4) => Some(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).into()),
                (28, 16) => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(rdata);
                    Some(Ipv6Addr::from(octets).into())
                }
                _ => None,
            };
            answers.push(Answer {
                name,
                rtype,
                ttl,
                address,
            });
            at = next + 10 + rdlen;
        }
    }
    Ok(Message {
        id,
        response: flags & 0x8000 != 0,
        rcode: (flags & 0x000f) as u8,
        questions,
        answers,
    })
}

/// Builds a query for `name` of type `qtype` with transaction id `id` (for tests and
/// tools).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(u8::try_from(label.len().min(63)).unwrap_or(63));
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Builds the response to `query` with one A record per address in `answers` (the
/// answer names point back to the question by compression).
pub fn build_response(query: &[u8], answers: &[Ipv4Addr]) -> Vec<u8> {
    let mut r = query.to_vec();
    if r.len() < 12 {
        return r;
    }
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&u16::try_from(answers.len()).unwrap_or(0).to_be_bytes());
    for addr in answers {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&addr.octets());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_query_and_its_response() {
        let query = build_query(0x1234, "www.example.test", 1);
        let q = parse(&query).expect("query");
        assert_eq!(q.id, 0x1234);
        assert!(!q.response);
        assert_eq!(
            q.questions,
            vec![Question {
                name: "www.example.test".into(),
                qtype: 1
            }]
        );
        let response = build_response(
            &query,
            &[Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 0, 2, 8)],
        );
        let r = parse(&response).expect("response");
        assert!(r.response);
        assert_eq!(r.rcode, 0);
        assert_eq!(r.answers.len(), 2);
        assert_eq!(
            r.answers[0].name, "www.example.test",
            "compression followed"
        );
        assert_eq!(
            r.answers[1].address,
            Some(Ipv4Addr::new(192, 0, 2, 8).into())
        );
        assert_eq!(type_name(28), "AAAA");
        assert_eq!(type_name(99), "TYPE99");
    }

    #[test]
    fn loops_long_labels_and_truncation_are_errors() {
        // A name that points to itself.
        let mut looped = build_query(1, "a", 1);
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&looped), Err(DnsError::PointerLoop));
        let mut long = build_query(1, "x", 1);
        long[12] = 64;
        assert_eq!(
            parse(&long),
            Err(DnsError::BadLabel(12)),
            "an over-long label"
        );
        let mut bad = build_query(1, "x", 1);
        bad[12] = 0x80;
        assert_eq!(parse(&bad), Err(DnsError::BadLabel(12)));
        let query = build_query(1, "www.example.test", 28);
        for len in 0..query.len() {
            assert!(parse(&query[..len]).is_err(), "prefix {len}");
        }
        let huge = vec!["a".repeat(60); 5].join(".");
        assert_eq!(parse(&build_query(1, &huge, 1)), Err(DnsError::NameTooLong));
    }

    /// Parsing is total: random bytes and valid messages with bytes flipped each parse
    /// or are refused with an error, never a panic; both outcomes occur; a parsed name
    /// never exceeds the DNS limit, nor the counts their caps.
    #[test]
    fn arbitrary_bytes_parse_or_are_refused_never_panic() {
        let valid = build_response(
            &build_query(7, "www.example.test", 1),
            &[Ipv4Addr::new(192, 0, 2, 9)],
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut parsed, mut refused) = (0u32, 0u32);
        for round in 0..50_000u32 {
            let r = next();
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (r % 80) as usize;
                let mut b: Vec<u8> = (0..len).map(|i| (r >> (i % 56)) as u8).collect();
                if b.len() > 5 {
                    b[4] = 0;
                    b[5] = (r % 4) as u8;
                }
                b
            } else {
                let mut b = valid.clone();
                for _ in 0..(r % 3) {
                    let at = (next() % b.len() as u64) as usize;
                    b[at] ^= next() as u8;
                }
                b
            };
            match parse(&bytes) {
                Ok(message) => {
                    parsed += 1;
                    assert!(message.questions.len() <= MAX_QUESTIONS);
                    assert!(message.answers.len() <= MAX_ANSWERS);
                    for q in &message.questions {
                        assert!(q.name.len() <= 253, "{}", q.name);
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert_eq!(parsed + refused, 50_000, "every input accounted for");
        assert!(
            parsed > 0 && refused > 0,
            "parsed {parsed}, refused {refused}"
        );
    }
}
