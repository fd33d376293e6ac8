//! Feeds fetched over HTTPS, with a last-known-good copy on disk.
//!
//! A feed with `url` is read from its cached copy (`CACHE/NAME.feed`) whenever the
//! policy is loaded, so start-up never waits for the network; [`fetch`] updates the copy.
//! A download replaces it only when it is complete (status 200, not cut short, within
//! the size limit, in time) and parses in the feed's format; anything else leaves the
//! last good copy in place. Requests are conditional (`If-None-Match` with the last
//! `ETag`, `If-Modified-Since` with the last `Last-Modified`): `304 Not Modified` changes
//! nothing.
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use ironclad_policy::feeds::{FeedFormat, Strictness};
//! use ironclad_policy::fetch::{fetch, FetchSpec, Fetched};
//!
//! let mut spec = FetchSpec::new(
//!     "drop",
//!     "https://www.spamhaus.org/drop/drop.txt",
//!     FeedFormat::Spamhaus,
//!     "/var/lib/ironclad/feeds",
//! );
//! spec.strictness = Strictness::Lenient; // skip bad lines instead of refusing the body
//! spec.max_bytes = 16 << 20;
//! spec.timeout = Duration::from_secs(30);
//! match fetch(&spec)? {
//!     Fetched::Updated { prefixes, .. } => println!("{prefixes} prefixes"),
//!     Fetched::NotModified => println!("unchanged"),
//! }
//! # Ok::<(), ironclad_policy::fetch::FetchError>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::feeds::{FeedFormat, Strictness};
use crate::ConfigError;

/// Default download limit of a fetched feed.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default time limit of one download (connect, headers and body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default interval between two fetches of a feed with `url`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

/// One fetched feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchSpec {
    /// The feed's name (its cache files are `NAME.feed` and `NAME.meta.json`).
    pub name: String,
    /// `https://...` (or `http://...`).
    pub url: String,
    /// The format the body must parse in.
    pub format: FeedFormat,
    /// Strict: a body with any bad entry is refused.
    pub strictness: Strictness,
    /// Bodies larger than this are refused.
    pub max_bytes: u64,
    /// The whole request must finish within this.
    pub timeout: Duration,
    /// PEM certificates to trust instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The cache directory.
    pub cache: PathBuf,
}

impl FetchSpec {
    /// The feed `name` at `url` in `format`, cached in `cache`, with a policy file's
    /// defaults: strict, at most [`DEFAULT_MAX_BYTES`], within [`DEFAULT_TIMEOUT`], the
    /// built-in roots. Set the other fields after.
    pub fn new(
        name: impl Into<String>,
        url: impl Into<String>,
        format: FeedFormat,
        cache: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            format,
            strictness: Strictness::Strict,
            max_bytes: DEFAULT_MAX_BYTES,
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
            cache: cache.into(),
        }
    }

    /// The cached copy the policy reads.
    pub fn data_path(&self) -> PathBuf {
        cache_data_path(&self.cache, &self.name)
    }

    fn meta_path(&self) -> PathBuf {
        self.cache.join(format!("{}.meta.json", self.name))
    }

    /// What the last successful fetch recorded, if any.
    pub fn meta(&self) -> Option<CacheMeta> {
        let bytes = std::fs::read(self.meta_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The cached copy of feed `name` in `cache`.
pub fn cache_data_path(cache: &Path, name: &str) -> PathBuf {
    cache.join(format!("{name}.feed"))
}

/// Written next to a cached copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacheMeta {
    /// The URL it came from.
    pub url: String,
    /// The server's `ETag`.
    pub etag: Option<String>,
    /// The server's `Last-Modified`.
    pub last_modified: Option<String>,
    /// When the server last confirmed the copy (200 or 304), Unix seconds.
    pub checked_unix: u64,
    /// When the copy's content last changed, Unix seconds.
    pub changed_unix: u64,
}

impl CacheMeta {
    /// When the server last confirmed the copy.
    pub fn checked(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.checked_unix)
    }
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A new copy was stored.
    Updated {
        /// Body size.
        bytes: usize,
        /// Entries it holds.
        prefixes: usize,
        /// Entries skipped (lenient feeds).
        skipped: usize,
    },
    /// The server said 304, or sent the same content: nothing changed.
    NotModified,
}

/// Why a fetch kept the last good copy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not `http(s)://`.
    #[error("`{url}` is not an http:// or https:// URL")]
    BadUrl {
        /// The URL.
        url: String,
    },
    /// The server answered with another status than 200 or 304.
    #[error("HTTP {status}")]
    Status {
        /// The status code.
        status: u16,
    },
    /// The body is larger than the limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The request did not finish in time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, TLS, or reading failed (a body cut short lands here).
    #[error("{0}")]
    Transport(String),
    /// The body is not a valid feed in its format.
    #[error("the download is not a valid feed:\n{0}")]
    Invalid(ConfigError),
    /// The CA file or the cache could not be read or written.
    #[error("{path}: {message}")]
    Local {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

#[cfg(feature = "fetch")]
pub use client::fetch;

/// The HTTP client (feature `fetch`, the default): an embedder that never downloads
/// feeds builds without it and its TLS stack.
#[cfg(feature = "fetch")]
mod client {
    use super::*;
    use crate::feeds::parse_feed;

    fn now_unix() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn agent(spec: &FetchSpec) -> Result<ureq::Agent, FetchError> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &spec.ca_file {
            let local = |message: String| FetchError::Local {
                path: ca.clone(),
                message,
            };
            let pem = crate::feeds::read_regular_file(ca, 1 << 20).map_err(local)?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(local("no PEM certificate in the file".to_string()));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        Ok(ureq::Agent::config_builder()
            .timeout_global(Some(spec.timeout))
            .http_status_as_error(false)
            .max_redirects(5)
            .tls_config(tls.build())
            .build()
            .new_agent())
    }

    fn transport(e: ureq::Error, spec: &FetchSpec) -> FetchError {
        match e {
            ureq::Error::Timeout(_) => FetchError::Timeout(spec.timeout),
            ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge {
                limit: spec.max_bytes,
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                FetchError::Transport(format!("the body was cut short: {io}"))
            }
            other => FetchError::Transport(other.to_string()),
        }
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    fn store(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
        let local = |message: String| FetchError::Local {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| local(e.to_string()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| local(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| local(e.to_string()))
    }

    /// Fetches `spec.url` and, if the answer is a complete, valid feed, makes it the cached
    /// copy. On any error the cached copy is left as it was.
    pub fn fetch(spec: &FetchSpec) -> Result<Fetched, FetchError> {
        if !(spec.url.starts_with("https://") || spec.url.starts_with("http://")) {
            return Err(FetchError::BadUrl {
                url: spec.url.clone(),
            });
        }
        let agent = agent(spec)?;
        let previous = spec.meta().filter(|m| m.url == spec.url);
        let have_copy = spec.data_path().is_file();
        let mut request = agent.get(&spec.url);
        if let (Some(meta), true) = (&previous, have_copy) {
            if let Some(etag) = &meta.etag {
                request = request.header("If-None-Match", etag);
            }
            if let Some(modified) = &meta.last_modified {
                request = request.header("If-Modified-Since", modified);
            }
        }
        let mut response = request.call().map_err(|e| transport(e, spec))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (etag, last_modified) = (header("etag"), header("last-modified"));
        if status == 304 && have_copy {
            if let Some(mut meta) = previous {
                meta.checked_unix = now_unix();
                let text = serde_json::to_vec(&meta).unwrap_or_default();
                store(&spec.meta_path(), &text)?;
            }
            return Ok(Fetched::NotModified);
        }
        if status != 200 {
            return Err(FetchError::Status { status });
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(spec.max_bytes)
            .read_to_vec()
            .map_err(|e| transport(e, spec))?;
        let text = String::from_utf8(body).map_err(|_| {
            FetchError::Invalid(ConfigError {
                diagnostics: vec![crate::Diagnostic {
                    path: PathBuf::from(&spec.url),
                    line: 0,
                    column: 0,
                    message: "the body is not UTF-8 text".to_string(),
                }],
            })
        })?;
        let parsed = parse_feed(&text, Path::new(&spec.url), &spec.format, spec.strictness)
            .map_err(FetchError::Invalid)?;
        let unchanged =
            have_copy && std::fs::read(spec.data_path()).is_ok_and(|old| old == text.as_bytes());
        let now = now_unix();
        let meta = CacheMeta {
            url: spec.url.clone(),
            etag,
            last_modified,
            checked_unix: now,
            changed_unix: match (&previous, unchanged) {
                (Some(p), true) => p.changed_unix,
                _ => now,
            },
        };
        if !unchanged {
            store(&spec.data_path(), text.as_bytes())?;
        }
        store(
            &spec.meta_path(),
            &serde_json::to_vec(&meta).unwrap_or_default(),
        )?;
        if unchanged {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Updated {
            bytes: text.len(),
            prefixes: parsed.prefixes.len(),
            skipped: parsed.skipped,
        })
    }
}
