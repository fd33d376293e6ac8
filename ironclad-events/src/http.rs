//! Recognising HTTP in captured TLS plaintext.

use serde::Serialize;

/// What the start of a plaintext buffer says about HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Http {
    /// An HTTP/1.x request.
    Request {
        /// `GET`, `POST`...
        method: String,
        /// The `Host` header, if present in the captured bytes.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The request target (`/secret-path`), the values of its secret query
        /// parameters redacted (`/p?token=[redacted]&page=2`).
        path: String,
        /// `HTTP/1.1` or `HTTP/1.0`.
        version: String,
    },
    /// An HTTP/1.x response.
    Response {
        /// The status code.
        status: u16,
        /// `HTTP/1.1` or `HTTP/1.0`.
        version: String,
    },
    /// The HTTP/2 connection preface (the content is binary frames).
    Http2 {
        /// Always `HTTP/2`.
        version: String,
    },
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn first_line(data: &[u8]) -> Option<&str> {
    let end = data.windows(2).position(|w| w == b"\r\n")?;
    std::str::from_utf8(&data[..end]).ok()
}

/// Recognises an HTTP/1.x request or response line (and a request's `Host` header) or
/// the HTTP/2 preface at the start of `data`. Never panics; `None` when it is not HTTP.
pub fn parse(data: &[u8]) -> Option<Http> {
    if data.starts_with(H2_PREFACE) {
        return Some(Http::Http2 {
            version: "HTTP/2".to_string(),
        });
    }
    let line = first_line(data)?;
    let mut parts = line.split(' ');
    let (a, b, c) = (parts.next()?, parts.next()?, parts.next());
    if a.starts_with("HTTP/1.") {
        let status = b.parse().ok().filter(|s| (100..1000).contains(s))?;
        return Some(Http::Response {
            status,
            version: a.to_string(),
        });
    }
    let version = c?;
    if !METHODS.contains(&a) || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let text = String::from_utf8_lossy(data);
    let host = text
        .split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().to_string())
        });
    Some(Http::Request {
        method: a.to_string(),
        host,
        // A token or signature in the query is a credential: never in an event's field.
        path: crate::process::redact_query(b),
        version: version.to_string(),
    })
}

/// Renders bytes as text: valid UTF-8 as it is, a backslash as `\\`, every byte that is
/// not part of valid UTF-8 as `\xNN`.
pub fn escape(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for chunk in data.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(ch);
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_requests_responses_and_h2() {
        let req = b"GET /secret-path HTTP/1.1\r\nUser-Agent: x\r\nhost: example.test:8443\r\n\r\n";
        assert_eq!(
            parse(req),
            Some(Http::Request {
                method: "GET".into(),
                host: Some("example.test:8443".into()),
                path: "/secret-path".into(),
                version: "HTTP/1.1".into()
            })
        );
        assert!(matches!(
            parse(b"GET /p?token=tok-1&page=2 HTTP/1.1\r\n\r\n"),
            Some(Http::Request { path, .. }) if path == "/p?token=[redacted]&page=2"
        ));
        assert_eq!(
            parse(b"HTTP/1.0 200 ok\r\nContent-type: text/html\r\n\r\n"),
            Some(Http::Response {
                status: 200,
                version: "HTTP/1.0".into()
            })
        );
        assert!(matches!(parse(H2_PREFACE), Some(Http::Http2 { .. })));
        for not_http in [
            &b""[..],
            b"GET /x\r\n",
            b"FETCH /x HTTP/1.1\r\n",
            b"HTTP/1.1 abc\r\n",
            b"\xff\xfe\r\n",
            b"GET / HTTP/1.1",
        ] {
            assert_eq!(parse(not_http), None, "{not_http:?}");
        }
    }

    #[test]
    fn escapes_only_what_is_not_utf8() {
        assert_eq!(escape(b"GET / \xe2\x9c\x93"), "GET / \u{2713}");
        assert_eq!(escape(b"a\\b\x00\xff\xc3"), "a\\\\b\u{0}\\xff\\xc3");
    }
}
