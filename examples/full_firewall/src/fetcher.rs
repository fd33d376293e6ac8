//! The background fetcher of feeds with a `url`: each is downloaded at start and then
//! every `refresh`; a new copy in the cache asks the main loop for a reload, which reads
//! it. The policy is always compiled from the cache, so start-up never waits for the
//! network and a failed download leaves the last good copy enforced.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironclad_policy::fetch::{fetch, FetchSpec, Fetched};
use ironclad_policy::shield::CompiledShield;
use ironclad_policy::sources::SourceKind;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// The feeds to fetch, shared with the fetch thread.
type Specs = Arc<Mutex<Vec<(FetchSpec, Duration)>>>;

/// The running fetcher.
pub(crate) struct Fetcher {
    specs: Specs,
    updated: Arc<AtomicBool>,
}

/// The fetched feeds of a compiled policy, with their intervals.
fn specs_of(shield: Option<&CompiledShield>) -> Vec<(FetchSpec, Duration)> {
    shield
        .map(|s| s.sources.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|source| match &source.kind {
            SourceKind::Feed {
                fetch: Some(spec),
                refresh,
                ..
            } => Some((
                spec.clone(),
                refresh.unwrap_or(ironclad_policy::fetch::DEFAULT_REFRESH),
            )),
            _ => None,
        })
        .collect()
}

impl Fetcher {
    /// Starts the fetch thread for the fetched feeds of `shield` (it runs until `stop`).
    pub(crate) fn start(
        shield: Option<&CompiledShield>,
        stop: Arc<AtomicBool>,
        metrics: Option<Metrics>,
    ) -> std::io::Result<Self> {
        let specs: Specs = Arc::new(Mutex::new(specs_of(shield)));
        let updated = Arc::new(AtomicBool::new(false));
        let (shared, flag) = (specs.clone(), updated.clone());
        std::thread::Builder::new()
            .name("feed-fetcher".into())
            .spawn(move || run(&shared, &flag, &stop, metrics.as_ref()))?;
        Ok(Self { specs, updated })
    }

    /// The feeds of a newly applied policy (each fetched again when due).
    pub(crate) fn replace(&self, shield: Option<&CompiledShield>) {
        *self
            .specs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = specs_of(shield);
    }

    /// True once after a download stored a new copy: time to reload.
    pub(crate) fn take_update(&self) -> bool {
        self.updated.swap(false, Ordering::Relaxed)
    }
}

fn run(specs: &Specs, updated: &AtomicBool, stop: &AtomicBool, metrics: Option<&Metrics>) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let list = specs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (spec, every) in &list {
            let key = format!("{}\u{0}{}", spec.name, spec.url);
            if due.get(&key).is_some_and(|at| Instant::now() < *at) {
                continue;
            }
            due.insert(key, Instant::now() + *every);
            match fetch(spec) {
                Ok(Fetched::Updated {
                    bytes,
                    prefixes,
                    skipped,
                }) => {
                    info!(
                        "feed `{}` fetched: {bytes} bytes, {prefixes} entries ({skipped} skipped); reloading",
                        spec.name
                    );
                    updated.store(true, Ordering::Relaxed);
                    if let Some(m) = metrics {
                        m.fetch_result(&spec.name, true);
                    }
                }
                Ok(Fetched::NotModified) => {
                    info!("feed `{}`: not modified", spec.name);
                    if let Some(m) = metrics {
                        m.fetch_result(&spec.name, true);
                    }
                }
                Err(e) => {
                    warn!(
                        "feed `{}`: fetch failed, the last good copy stays: {e}",
                        spec.name
                    );
                    if let Some(m) = metrics {
                        m.fetch_result(&spec.name, false);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
