//! Data-loss prevention on TLS plaintext: detectors for secrets that must not leave a
//! host (payment card numbers, cloud keys, private keys, tokens, the user's own
//! patterns), run over what the TLS capture reads before encryption.
//!
//! Every finding carries the match **redacted** (`************1111`), never the secret;
//! [`Dlp::redact`] overwrites the matches in the captured data as well.
//!
//! ```
//! use ironclad_policy::dlp::{Detector, Dlp};
//! let dlp = Dlp::new(&Detector::ALL, &[])?;
//! let found = dlp.scan(b"card=4111 1111 1111 1111&exp=12/29");
//! assert_eq!(found[0].detector, "credit_card");
//! assert_eq!(found[0].redacted, "************1111");
//! # Ok::<(), ironclad_policy::dlp::DlpError>(())
//! ```

use regex::bytes::{Regex, RegexBuilder};

/// The built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Detector {
    /// Payment card numbers: 13 to 19 digits (single spaces or dashes between groups
    /// allowed) that pass the Luhn check and start like a card (2-6).
    CreditCard,
    /// AWS access key ids (`AKIA…`, `ASIA…`) and secret keys written after their name
    /// (`aws_secret_access_key = …`).
    AwsKeys,
    /// Google Cloud API keys (`AIza…`) and service-account key ids
    /// (`"private_key_id": "…"`).
    GcpKeys,
    /// PEM private key blocks (`-----BEGIN … PRIVATE KEY-----`).
    PrivateKeys,
    /// JSON Web Tokens (three base64url parts, the first two JSON objects).
    Jwt,
}

impl Detector {
    /// Every built-in detector.
    pub const ALL: [Detector; 5] = [
        Detector::CreditCard,
        Detector::AwsKeys,
        Detector::GcpKeys,
        Detector::PrivateKeys,
        Detector::Jwt,
    ];

    /// Its name in the policy and in events.
    pub fn name(self) -> &'static str {
        match self {
            Detector::CreditCard => "credit_card",
            Detector::AwsKeys => "aws_keys",
            Detector::GcpKeys => "gcp_keys",
            Detector::PrivateKeys => "private_keys",
            Detector::Jwt => "jwt",
        }
    }

    /// The detector called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Errors building a [`Dlp`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlpError {
    /// A user pattern is not a valid regular expression, or too big.
    #[error("pattern `{name}`: {source}")]
    Pattern {
        /// The pattern's name.
        name: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// A user pattern's name is empty or not `[a-z0-9_-]`.
    #[error("pattern name `{0}`: use lower-case letters, digits, `_` and `-` (it labels events)")]
    Name(String),
}

/// The largest compiled user pattern: 1 MiB (a pattern that would compile bigger is
/// refused).
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// One secret found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The detector (`credit_card`...) or the user pattern's name.
    pub detector: String,
    /// Where it starts in the scanned bytes.
    pub start: usize,
    /// Where it ends.
    pub end: usize,
    /// The match with its secret part masked: a card's last four digits, a key's
    /// public prefix, a PEM block's kind; never enough to use.
    pub redacted: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Card,
    AwsId,
    AwsSecret,
    GcpApi,
    GcpKeyId,
    Pem,
    Jwt,
    User(String),
}

/// Detectors ready to scan.
#[derive(Debug, Clone)]
pub struct Dlp {
    checks: Vec<(Kind, Regex)>,
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// The Luhn check over the digits of `text` (separators skipped).
pub fn luhn(text: &[u8]) -> bool {
    let digits: Vec<u32> = text
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `keep` bytes at each end shown, the rest as `*` (at most 32 of them).
fn mask(text: &[u8], head: usize, tail: usize) -> String {
    let len = text.len();
    if len <= head + tail + 4 {
        return "*".repeat(len.min(32));
    }
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    format!(
        "{}{}{}",
        shown(&text[..head]),
        "*".repeat((len - head - tail).min(32)),
        shown(&text[len - tail..])
    )
}

impl Dlp {
    /// The `detectors` and the user's `(name, regex)` patterns.
    pub fn new(detectors: &[Detector], patterns: &[(String, String)]) -> Result<Self, DlpError> {
        // Built-in patterns are constants: a failure here is a bug in this file, and
        // the detector is left out rather than the process stopped.
        let mut checks: Vec<(Kind, Regex)> = Vec::new();
        let mut add = |kind: Kind, pattern: &str| {
            if let Ok(re) = build(pattern) {
                checks.push((kind, re));
            }
        };
        for detector in detectors {
            match detector {
                Detector::CreditCard => add(
                    Kind::Card,
                    r"(?:^|[^0-9])([2-6][0-9]{3}(?:[ -]?[0-9]{2,4}){2,4}[0-9]?)(?:$|[^0-9])",
                ),
                Detector::AwsKeys => {
                    add(Kind::AwsId, r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b");
                    add(
                        Kind::AwsSecret,
                        r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})\b"#,
                    );
                }
                Detector::GcpKeys => {
                    add(Kind::GcpApi, r"\b(AIza[0-9A-Za-z_\-]{35})");
                    add(Kind::GcpKeyId, r#""private_key_id"\s*:\s*"([0-9a-f]{40})""#);
                }
                Detector::PrivateKeys => add(
                    Kind::Pem,
                    r"(-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY)-----)",
                ),
                Detector::Jwt => add(
                    Kind::Jwt,
                    r"\b(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,})",
                ),
            }
        }
        for (name, pattern) in patterns {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(DlpError::Name(name.clone()));
            }
            let re = build(pattern).map_err(|source| DlpError::Pattern {
                name: name.clone(),
                source,
            })?;
            checks.push((Kind::User(name.clone()), re));
        }
        Ok(Self { checks })
    }

    /// Whether it has any detector.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Every secret in `data`, in order of position.
    pub fn scan(&self, data: &[u8]) -> Vec<Finding> {
        let mut found = Vec::new();
        for (kind, re) in &self.checks {
            for caps in re.captures_iter(data) {
                // The secret is the first group where the pattern has one.
                let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                    continue;
                };
                let text = m.as_bytes();
                let (detector, redacted) = match kind {
                    Kind::Card => {
                        if !luhn(text) {
                            continue;
                        }
                        let digits: Vec<u8> =
                            text.iter().copied().filter(u8::is_ascii_digit).collect();
                        (
                            "credit_card".to_string(),
                            format!(
                                "{}{}",
                                "*".repeat(digits.len() - 4),
                                String::from_utf8_lossy(&digits[digits.len() - 4..])
                            ),
                        )
                    }
                    Kind::AwsId => ("aws_keys".to_string(), mask(text, 4, 0)),
                    Kind::AwsSecret => ("aws_keys".to_string(), mask(text, 0, 0)),
                    Kind::GcpApi => ("gcp_keys".to_string(), mask(text, 4, 0)),
                    Kind::GcpKeyId => ("gcp_keys".to_string(), mask(text, 0, 0)),
                    Kind::Pem => (
                        "private_keys".to_string(),
                        caps.get(2).map_or_else(
                            || "PRIVATE KEY".to_string(),
                            |k| String::from_utf8_lossy(k.as_bytes()).into_owned(),
                        ),
                    ),
                    Kind::Jwt => ("jwt".to_string(), mask(text, 3, 0)),
                    Kind::User(name) => (name.clone(), mask(text, 0, 0)),
                };
                found.push(Finding {
                    detector,
                    start: m.start(),
                    end: m.end(),
                    redacted,
                });
            }
        }
        found.sort_by_key(|f| (f.start, f.end));
        found
    }

    /// Overwrites every finding's bytes in `data` with `*` (what was scanned: the
    /// findings' offsets are `data`'s). A PEM block's header stays; the key after it is
    /// not found by the pattern and must be masked by the caller if wanted.
    pub fn redact(data: &mut [u8], findings: &[Finding]) {
        for f in findings {
            if let Some(span) = data.get_mut(f.start..f.end) {
                span.iter_mut().for_each(|b| *b = b'*');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Dlp {
        Dlp::new(&Detector::ALL, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn detectors(data: &[u8]) -> Vec<(String, String)> {
        all()
            .scan(data)
            .into_iter()
            .map(|f| (f.detector, f.redacted))
            .collect()
    }

    #[test]
    fn card_numbers_pass_luhn_whatever_their_separators() {
        for text in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500 0000 0000 0004",
            "378282246310005",
        ] {
            let found = detectors(format!("pay {text} now").as_bytes());
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].0, "credit_card");
            let last4: String = text
                .chars()
                .filter(char::is_ascii_digit)
                .rev()
                .take(4)
                .collect();
            let last4: String = last4.chars().rev().collect();
            assert!(found[0].1.ends_with(&last4), "{found:?}");
            assert!(
                !found[0].1.contains(&text[..6]),
                "the number is not in the event"
            );
        }
        // Failing Luhn, too short, or part of a longer number: not a card.
        for text in [
            "4111111111111112",
            "411111111111",
            "order 12345678901234567890123",
        ] {
            assert!(detectors(text.as_bytes()).is_empty(), "{text}");
        }
    }

    #[test]
    fn cloud_keys_private_keys_and_tokens_are_found_and_masked() {
        let data = concat!(
            "id=AKIAIOSFODNN7EXAMPLE\n",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
            "key=AIzaSyA-1234567890abcdefghijklmnopqrstu\n",
            "\"private_key_id\": \"0123456789abcdef0123456789abcdef01234567\"\n",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\n",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\n",
        );
        let found = detectors(data.as_bytes());
        let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "aws_keys",
                "aws_keys",
                "gcp_keys",
                "gcp_keys",
                "private_keys",
                "jwt"
            ]
        );
        assert!(found[0].1.starts_with("AKIA") && !found[0].1.contains("EXAMPLE"));
        assert!(!found[1].1.contains("wJalr"));
        assert_eq!(found[4].1, "RSA PRIVATE KEY");
        assert!(found[5].1.starts_with("eyJ") && !found[5].1.contains("dozjg"));
    }

    #[test]
    fn user_patterns_are_named_bounded_and_redacted_in_the_data() {
        let dlp = Dlp::new(
            &[Detector::CreditCard],
            &[("employee_id".to_string(), r"EMP-[0-9]{6}".to_string())],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut data = b"user EMP-123456 card 4111111111111111 end".to_vec();
        let found = dlp.scan(&data);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].detector, "employee_id");
        Dlp::redact(&mut data, &found);
        assert_eq!(data, b"user ********** card **************** end".to_vec());
        assert!(matches!(
            Dlp::new(&[], &[("x".into(), "(".into())]),
            Err(DlpError::Pattern { .. })
        ));
        assert!(matches!(
            Dlp::new(&[], &[("Bad Name".into(), "x".into())]),
            Err(DlpError::Name(_))
        ));
        assert!(
            Dlp::new(&[], &[("big".into(), "x{1000}{1000}".into())]).is_err(),
            "a pattern past the size limit is refused"
        );
    }
}
