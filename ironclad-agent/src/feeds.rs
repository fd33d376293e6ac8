//! Keeping feeds fresh: [`FeedWatch`] notices when a feed file with a `refresh`
//! interval changed on disk; [`FeedFetcher`] (feature `fetch`) downloads feeds with a
//! `url` in the background into their cache files. Either one asks the agent for a
//! reload; the policy is always compiled from the files, so start-up never waits for
//! the network and a failed download leaves the last good copy enforced.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ironclad_policy::shield::CompiledShield;
use ironclad_policy::sources::SourceKind;

/// A file's modification time and size.
type FileStamp = (SystemTime, u64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Feed files with a `refresh` interval, checked for changes (modification time and
/// size) at the shortest of their intervals.
#[derive(Debug)]
pub struct FeedWatch {
    every: Option<Duration>,
    last: Instant,
    files: Vec<(String, PathBuf, Option<FileStamp>)>,
}

impl FeedWatch {
    /// The watched feeds of a compiled Shield policy (none without one).
    pub fn of(shield: Option<&CompiledShield>) -> Self {
        let mut files = Vec::new();
        let mut every: Option<Duration> = None;
        for source in shield.map(|s| s.sources.as_slice()).unwrap_or_default() {
            if let SourceKind::Feed {
                path,
                refresh: Some(refresh),
                fetch: None,
                ..
            } = &source.kind
            {
                every = Some(every.map_or(*refresh, |e| e.min(*refresh)));
                files.push((source.name.clone(), path.clone(), file_stamp(path)));
            }
        }
        Self {
            every,
            last: Instant::now(),
            files,
        }
    }

    /// Also watches `path` (a policy file, say) under `name`, checked at least every
    /// `every`: [`changed`](Self::changed) reports `name` when it changes.
    #[must_use]
    pub fn with_file(mut self, name: impl Into<String>, path: &Path, every: Duration) -> Self {
        self.every = Some(self.every.map_or(every, |e| e.min(every)));
        self.files
            .push((name.into(), path.to_path_buf(), file_stamp(path)));
        self
    }

    /// How many feed files are watched.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No feed file is watched.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The name of a feed whose file changed, when a check is due (call it from the
    /// control loop). A file that is still changing is left for the next check, and a
    /// change is reported once: a reload that refuses the new content is not retried
    /// until the file changes again.
    pub fn changed(&mut self) -> Option<String> {
        let every = self.every?;
        if self.last.elapsed() < every {
            return None;
        }
        self.last = Instant::now();
        let mut changed = None;
        for (name, path, stamp) in &mut self.files {
            let now = file_stamp(path);
            if now == *stamp {
                continue;
            }
            // A file being written (truncated, half full) must look the same a moment
            // later. Writers should still replace feed files atomically (a temporary
            // file renamed over it).
            std::thread::sleep(Duration::from_millis(100));
            if file_stamp(path) != now {
                continue;
            }
            *stamp = now;
            changed.get_or_insert_with(|| name.clone());
        }
        changed
    }
}

#[cfg(feature = "fetch")]
pub use fetcher::{FeedFetcher, FetchObserver};

#[cfg(feature = "fetch")]
mod fetcher {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::{Duration, Instant};

    use ironclad_policy::fetch::{fetch, FetchSpec, Fetched};
    use ironclad_policy::shield::CompiledShield;
    use ironclad_policy::sources::SourceKind;
    use tracing::{info, warn};

    /// Told the outcome of every download: the feed's name and whether it succeeded
    /// (a new copy or not modified). A metrics exporter counts them.
    pub type FetchObserver = Arc<dyn Fn(&str, bool) + Send + Sync>;

    /// The feeds to fetch, shared with the fetch thread.
    type Specs = Arc<Mutex<Vec<(FetchSpec, Duration)>>>;

    /// The background downloader of a policy's feeds with a `url`: each is fetched at
    /// start and then every `refresh`, into its cache file.
    pub struct FeedFetcher {
        specs: Specs,
        updated: Arc<AtomicBool>,
    }

    impl std::fmt::Debug for FeedFetcher {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let feeds: Vec<String> = self
                .specs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(spec, _)| spec.name.clone())
                .collect();
            f.debug_struct("FeedFetcher")
                .field("feeds", &feeds)
                .finish()
        }
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

    impl FeedFetcher {
        /// Starts the fetch thread for the fetched feeds of `shield`; it runs until
        /// `stop` is set.
        pub fn start(
            shield: Option<&CompiledShield>,
            stop: Arc<AtomicBool>,
            observer: Option<FetchObserver>,
        ) -> std::io::Result<Self> {
            let specs: Specs = Arc::new(Mutex::new(specs_of(shield)));
            let updated = Arc::new(AtomicBool::new(false));
            let (shared, flag) = (specs.clone(), updated.clone());
            std::thread::Builder::new()
                .name("feed-fetcher".into())
                .spawn(move || run(&shared, &flag, &stop, observer.as_ref()))?;
            Ok(Self { specs, updated })
        }

        /// The feeds of a newly applied policy (each fetched again when due).
        pub fn replace(&self, shield: Option<&CompiledShield>) {
            *self.specs.lock().unwrap_or_else(PoisonError::into_inner) = specs_of(shield);
        }

        /// True once after a download stored a new copy: time to reload.
        pub fn take_update(&self) -> bool {
            self.updated.swap(false, Ordering::Relaxed)
        }
    }

    fn run(
        specs: &Specs,
        updated: &AtomicBool,
        stop: &AtomicBool,
        observer: Option<&FetchObserver>,
    ) {
        let mut due: HashMap<String, Instant> = HashMap::new();
        let tell = |name: &str, ok: bool| {
            if let Some(observer) = observer {
                observer(name, ok);
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let list = specs.lock().unwrap_or_else(PoisonError::into_inner).clone();
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
                        tell(&spec.name, true);
                    }
                    Ok(Fetched::NotModified) => {
                        info!("feed `{}`: not modified", spec.name);
                        tell(&spec.name, true);
                    }
                    Err(e) => {
                        warn!(
                            "feed `{}`: fetch failed, the last good copy stays: {e}",
                            spec.name
                        );
                        tell(&spec.name, false);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_feed_file_is_reported_once_when_the_check_is_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let feed = dir.path().join("drop.txt");
        std::fs::write(&feed, "192.0.2.0/24\n").expect("feed");
        let policy = format!(
            "shield:\n  deny_feeds:\n    - path: {}\n      format: plain\n      refresh: 1s\n",
            feed.display()
        );
        let config =
            ironclad_policy::config::compile_str(&policy, Path::new("p.yaml")).expect("policy");
        let mut watch = FeedWatch::of(config.shield.as_ref());
        assert_eq!(watch.len(), 1);
        assert_eq!(watch.changed(), None, "not due yet");

        std::fs::write(&feed, "192.0.2.0/24\n198.51.100.0/24\n").expect("feed");
        assert_eq!(watch.changed(), None, "changed, but the check is not due");
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(watch.changed().as_deref(), Some("drop"));
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(watch.changed(), None, "reported once");

        assert!(FeedWatch::of(None).is_empty());
        assert_eq!(FeedWatch::of(None).changed(), None);
    }
}
