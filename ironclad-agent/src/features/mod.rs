//! The kernel features as an agent runs them: one [`Feature`] trait, one supervisor.
//!
//! Each feature (the Shield, the identity firewall, the stateful firewall, TLS capture,
//! telemetry, the Sentinel) is a module here that implements [`Feature`] and is listed once in
//! [`KINDS`]: how to tell whether a policy configures it, and how to start it.
//! [`Features`] does the rest for all of them alike:
//!
//! - [`start`](Features::start): starts every configured feature in a fixed order (the
//!   Sentinel first, so everything loaded after is put under its protection). A feature
//!   that cannot start is *down* with its reason, and the agent keeps the others (it
//!   fails open, and says so in [`states`](Features::states)), unless its failure
//!   [stops the agent](AgentError::stops_the_agent) (a required Sentinel, a stale pin)
//!   or [`Settings::require_all`] is set.
//! - One [`EventReader`] over every running feature's ring buffer, rebuilt when a
//!   feature starts or stops, with the process cache's `process` block on every event.
//! - [`reload`](Features::reload): hands each running feature the new compiled policy,
//!   starts the features it newly configures, stops (and detaches) those whose section
//!   it removed, and says whether everything applied.
//! - [`roll_back`](Features::roll_back): puts a [`Snapshot`] of an earlier policy back
//!   (the commit-confirm window of [`crate::confirm`]).
//! - [`tick`](Features::tick) for periodic work (bandwidth reports), and
//!   [`stop`](Features::stop), which leaves enforcement pinned unless asked to detach.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ironclad_agent::features::{Features, Settings};
//! use ironclad_bpf::Loader;
//! use ironclad_events::{Fanout, Overflow};
//!
//! let policy = ironclad_policy::config::compile_file("/etc/agent/policy.yaml".as_ref())?;
//! let loader = Loader::builder().build()?;
//! let fanout = Arc::new(Fanout::new());
//! let events = fanout.subscribe("forwarder", 4096, Overflow::DropOldest);
//! let settings = Settings::new("/sys/fs/cgroup").iface("eth0").require_all(true);
//! let mut features = Features::start(&loader, settings, &policy, fanout)?;
//! for _ in 0..10 {
//!     features.poll(Duration::from_millis(100));
//!     features.tick();
//!     for event in events.receiver().try_iter() {
//!         println!("{}", serde_json::to_string(&event)?);
//!     }
//! }
//! features.stop(false)?; // enforcement stays pinned
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod egress;
mod firewall;
mod sentinel;
mod shield;
mod telemetry;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironclad_bpf::{EventReader, EventSource, LoadedObject, Loader, ProcessMonitor};
use ironclad_events::{Event, Fanout};
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::host::{InterfaceChange, InterfaceChoice};
use ironclad_policy::process::ProcessPolicy;
use tracing::{debug, error, info, warn};

use crate::health::FeatureState;
use crate::{AgentError, Result};

/// What a feature did with a new policy ([`Feature::reload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reloaded {
    /// The new policy is enforced; the message says what changed.
    Applied(String),
    /// The feature runs on as it was (it takes its settings only at start, or, as the
    /// Sentinel, starts and stops only with the agent); the message says why.
    Kept(String),
    /// The new policy has no section for it: the supervisor stops it, detaching its
    /// hooks and removing its pins (a removed section is removed enforcement).
    Stop(String),
}

/// What periodic work may publish ([`Feature::tick`]).
pub struct Publisher<'a> {
    fanout: &'a Fanout<Event>,
    processes: Option<&'a ProcessMonitor>,
}

impl Publisher<'_> {
    /// Publishes an event to every subscriber, with the process cache's `process`
    /// block when the cache runs.
    pub fn publish(&self, mut event: Event) {
        if let Some(p) = self.processes {
            p.enrich(&mut event);
        }
        self.fanout.publish(&event);
    }
}

/// One kernel feature as an agent runs it. A new feature implements this and adds a
/// [`Kind`] to [`KINDS`]; nothing else in the agent changes.
pub trait Feature: Send {
    /// Its name in health reports, metrics and logs (`shield`, `egress`, ...).
    fn name(&self) -> &'static str;

    /// What runs, in one line (`XDP on eth0 (native) enforce`).
    fn describe(&self) -> String;

    /// Applies this feature's part of a new policy. On an error the old policy stays
    /// in force.
    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded>;

    /// The ring buffer its events come from, if it has one.
    fn event_source(&self) -> Option<Result<EventSource>>;

    /// More ring buffers it reads events from (the firewall's IDS snippets).
    fn more_event_sources(&self) -> Vec<Result<EventSource>> {
        Vec::new()
    }

    /// Whether the last reload changed which ring buffers it reads (the reader is then
    /// rebuilt); reading it clears it.
    fn take_sources_changed(&mut self) -> bool {
        false
    }

    /// The loaded object the Sentinel protects (its maps and pins), if any.
    fn object(&self) -> Option<&LoadedObject> {
        None
    }

    /// The kernel ids of the links it attached, which the Sentinel protects from
    /// detaching and updating by anyone but the agent.
    fn link_ids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// The interfaces whose tc hooks carry its programs, by index, for the Sentinel
    /// to protect (no tc change or tcx attach there but the agent's). The default:
    /// none.
    fn protected_ifaces(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Periodic work, once per turn of the agent's loop.
    fn tick(&mut self, _out: &Publisher<'_>) {}

    /// The counters it keeps in the kernel besides its events, by name, read now:
    /// `events_lost` (records its ring buffer had no room for) and what else it counts
    /// (TLS capture's `withheld_bytes`). The default: none. The Shield, the stateful
    /// firewall and egress are read whole from their pins instead (their `status`
    /// readers), so they answer none here.
    fn kernel_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        Ok(Vec::new())
    }

    /// Checks what the feature attached against what the kernel holds, and puts back
    /// what was undone from outside (a link detached or given another program, a pin
    /// removed). The default: nothing to check.
    fn verify(&mut self) -> Verified {
        Verified::default()
    }

    /// Its last periodic output before it stops.
    fn flush(&mut self, _out: &Publisher<'_>) {}

    /// The Sentinel, for the supervisor to put the other features under its
    /// protection. Only the Sentinel answers.
    fn as_guard(&mut self) -> Option<&mut ironclad_sentinel::Sentinel> {
        None
    }

    /// The Shield, for single-rule edits in place ([`Features::shield`]). Only the
    /// Shield answers.
    fn as_shield(&self) -> Option<&ironclad_bpf::Shield> {
        None
    }

    /// The stateful firewall, for what it knows of its live rules
    /// ([`Features::firewall`]). Only the firewall answers.
    fn as_firewall(&self) -> Option<&ironclad_bpf::Firewall> {
        None
    }

    /// Stops the feature. With `detach` its hooks and pins are removed; otherwise
    /// pinned enforcement stays in the kernel. Returns what was done, for the log.
    fn stop(self: Box<Self>, loader: &Loader, detach: bool) -> Result<String>;
}

/// What [`Feature::verify`] found, one line per attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Found undone from outside and put back.
    pub repaired: Vec<String>,
    /// Found undone from outside and not put back: the feature does not enforce there.
    pub broken: Vec<String>,
}

impl Verified {
    /// What the checks of one feature's links found (one result per link), each
    /// failure named by `on`.
    fn of(
        results: impl IntoIterator<Item = ironclad_bpf::Result<Option<String>>>,
        on: &str,
    ) -> Self {
        let mut found = Self::default();
        found.add(results, on);
        found
    }

    /// Adds what more checks found.
    fn add(
        &mut self,
        results: impl IntoIterator<Item = ironclad_bpf::Result<Option<String>>>,
        on: &str,
    ) {
        for result in results {
            match result {
                Ok(None) => {}
                Ok(Some(what)) => self.repaired.push(what),
                Err(e) if on.is_empty() => self.broken.push(e.to_string()),
                Err(e) => self.broken.push(format!("{on}: {e}")),
            }
        }
    }
}

/// How the agent starts one feature.
pub struct Kind {
    /// The feature's name ([`Feature::name`]).
    pub name: &'static str,
    /// Whether a policy configures it.
    pub configured: fn(&CompiledConfig) -> bool,
    /// Starts it from the policy's section; called only when `configured` holds.
    pub start: fn(&Start<'_>, &CompiledConfig) -> Result<Box<dyn Feature>>,
    /// It registers the agent itself, so it starts only with the agent, before the
    /// process cache and every other feature, never on a reload (the Sentinel).
    pub with_the_agent_only: bool,
}

/// Every feature, in start order: the Sentinel first (it registers the agent and then
/// protects what is loaded after it), the Shield, TLS capture, the identity firewall,
/// the stateful firewall, telemetry. Stopping goes the other way.
pub const KINDS: &[Kind] = &[
    sentinel::KIND,
    shield::KIND,
    tls::KIND,
    egress::KIND,
    firewall::KIND,
    telemetry::KIND,
];

/// What a feature's start needs besides its policy section.
pub struct Start<'a> {
    /// The audited loader every object goes through.
    pub loader: &'a Loader,
    /// Where the agent attaches.
    pub settings: &'a Settings,
}

/// Where an agent's features attach, and how strict the start is.
#[derive(Debug, Clone)]
pub struct Settings {
    ifaces: Vec<String>,
    cgroup: PathBuf,
    require_all: bool,
}

impl Settings {
    /// Features on the cgroup v2 directory `cgroup` (the identity firewall and
    /// telemetry; the cgroup v2 root covers every process on the host).
    pub fn new(cgroup: impl Into<PathBuf>) -> Self {
        Self {
            ifaces: Vec::new(),
            cgroup: cgroup.into(),
            require_all: false,
        }
    }

    /// An interface the Shield attaches to (a policy with a `shield` section needs
    /// one). Called again, it adds another: the Shield enforces one policy on each.
    #[must_use]
    pub fn iface(mut self, iface: impl Into<String>) -> Self {
        let iface = iface.into();
        if !self.ifaces.contains(&iface) {
            self.ifaces.push(iface);
        }
        self
    }

    /// Every configured feature must start, or [`Features::start`] fails (having
    /// stopped what it started). Without it the agent fails open: the feature is down
    /// with its reason, and the agent is not ready.
    #[must_use]
    pub fn require_all(mut self, yes: bool) -> Self {
        self.require_all = yes;
        self
    }

    /// The first interface, if one was given.
    pub fn interface(&self) -> Option<&str> {
        self.ifaces.first().map(String::as_str)
    }

    /// Every interface the Shield attaches to, in the order given.
    pub fn interfaces(&self) -> &[String] {
        &self.ifaces
    }

    /// The cgroup v2 directory.
    pub fn cgroup(&self) -> &std::path::Path {
        &self.cgroup
    }
}

/// The policy a rollback puts back: the whole of an earlier applied policy. Rolling
/// back is a reload of it ([`Features::roll_back`]): features it configures take their
/// part again (or start again, when the policy since removed their section), features
/// it lacks stop.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Snapshot {
    /// The earlier policy (`None`: none was applied yet).
    pub config: Option<CompiledConfig>,
}

impl Snapshot {
    /// The snapshot of an applied `config`.
    pub fn of(config: &CompiledConfig) -> Self {
        Self {
            config: Some(config.clone()),
        }
    }
}

/// The process cache is wanted when a feature that reports processes is configured
/// (the IDS's alerts name the local process of a connection), or the policy has a
/// `processes` section.
fn process_policy(config: &CompiledConfig) -> Option<ProcessPolicy> {
    let wanted = config.egress.is_some()
        || config.tls.is_some()
        || config.sentinel.is_some()
        || config.telemetry.is_some_and(|t| t.dns || t.bandwidth)
        || config.firewall.as_ref().is_some_and(|f| f.ids.is_some())
        || config.processes.is_some();
    wanted.then(|| config.processes.clone().unwrap_or_default())
}

/// The running features of one agent, their event reader and the process cache.
pub struct Features<'l> {
    loader: &'l Loader,
    settings: Settings,
    running: Vec<Box<dyn Feature>>,
    /// Why a configured feature is not running, by name.
    reasons: BTreeMap<&'static str, String>,
    /// The features the last policy configures.
    configured: BTreeSet<&'static str>,
    fanout: Arc<Fanout<Event>>,
    processes: Option<Arc<ProcessMonitor>>,
    /// The `processes` settings the cache runs with (a reload that leaves them as they
    /// are does not redact the cache again).
    processes_policy: Option<ProcessPolicy>,
    reader: Option<EventReader>,
    /// What the last [`reload`](Self::reload) did to each feature.
    last_reload: BTreeMap<&'static str, ReloadOutcome>,
    /// Running features whose attachments the kernel no longer holds and that could
    /// not be put back ([`verify`](Self::verify)), with what is missing.
    broken: BTreeMap<&'static str, String>,
    /// Features whose pins this start made (none were there before it): a start that
    /// fails removes them, and leaves adopted ones enforcing.
    fresh: BTreeSet<&'static str>,
    /// The interfaces the running firewall's policy chose, and by which selectors.
    interfaces: Option<InterfaceChoice>,
    /// What [`interface_change`](Self::interface_change) last reported.
    interfaces_reported: Option<InterfaceChange>,
}

/// What a reload did to one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// Its new policy is in the kernel.
    Applied,
    /// The new policy leaves it as it was (no section for it, or nothing changed).
    Kept,
    /// The new policy has it no more: stopped.
    Stopped,
    /// Configured anew and started.
    Started,
    /// The kernel (or a check) refused; its old policy stays.
    Failed,
}

impl ReloadOutcome {
    /// The outcome as a metric label: `applied`, `kept`, `stopped`, `started`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Kept => "kept",
            Self::Stopped => "stopped",
            Self::Started => "started",
            Self::Failed => "failed",
        }
    }
}

impl<'l> Features<'l> {
    /// Starts every feature `config` configures (see the [module docs](self)), and
    /// the process cache when a feature reports processes. Events go to `fanout`.
    pub fn start(
        loader: &'l Loader,
        settings: Settings,
        config: &CompiledConfig,
        fanout: Arc<Fanout<Event>>,
    ) -> Result<Self> {
        let mut features = Self {
            loader,
            settings,
            running: Vec::new(),
            reasons: BTreeMap::new(),
            configured: BTreeSet::new(),
            fanout,
            processes: None,
            processes_policy: None,
            reader: None,
            last_reload: BTreeMap::new(),
            broken: BTreeMap::new(),
            fresh: BTreeSet::new(),
            interfaces: None,
            interfaces_reported: None,
        };
        let mut cache_tried = false;
        for kind in KINDS {
            if !kind.with_the_agent_only && !cache_tried {
                // The process cache right after the Sentinel and before the rest: it
                // seeds from /proc, and every later feature's events name processes.
                cache_tried = true;
                features.processes = features.start_processes(config);
            }
            if !(kind.configured)(config) {
                continue;
            }
            features.configured.insert(kind.name);
            if let Err(e) = features.start_one(kind, config) {
                if e.stops_the_agent() || features.settings.require_all {
                    // A start that fails takes back what it made: the features it
                    // started on pins of their own are detached and their pins removed;
                    // those that adopted an earlier run's pins go on enforcing.
                    let _ = features.stop_failed_start();
                    return Err(e);
                }
            }
        }
        features.reader = features.event_reader();
        features.interfaces = config
            .firewall
            .as_ref()
            .filter(|_| features.get(firewall::KIND.name).is_some())
            .map(InterfaceChoice::of);
        Ok(features)
    }

    /// Interfaces that appeared under the running firewall's selectors
    /// (`firewall.interfaces: [eth*]`, `auto`, ...) or chosen ones that vanished since
    /// its policy was applied, read from the calling thread's network namespace; each
    /// change is reported once (a reload that fails over it is not asked for again
    /// until the interfaces change once more). The agent answers with a reload: the
    /// policy compiled again chooses the interfaces there are, and the firewall attaches
    /// to the new ones and lets the vanished go. The reference daemon asks every second.
    pub fn interface_change(&mut self) -> Option<InterfaceChange> {
        let choice = self.interfaces.as_ref()?;
        let host = choice
            .read_host()
            .inspect_err(|e| debug!("reading the interfaces: {e}"))
            .ok()?;
        let Some(change) = choice.changes_on(&host) else {
            self.interfaces_reported = None;
            return None;
        };
        if self.interfaces_reported.as_ref() == Some(&change) {
            return None;
        }
        self.interfaces_reported = Some(change.clone());
        Some(change)
    }

    fn start_processes(&mut self, config: &CompiledConfig) -> Option<Arc<ProcessMonitor>> {
        let policy = process_policy(config)?;
        match ProcessMonitor::start(self.loader, &policy) {
            Ok(m) => {
                self.processes_policy = Some(policy.clone());
                info!(
                    "process cache: lineage depth {}, capacity {}, arguments {}",
                    policy.lineage_depth,
                    policy.capacity,
                    if policy.args {
                        "recorded (redacted)"
                    } else {
                        "not recorded"
                    }
                );
                Some(Arc::new(m))
            }
            Err(e) => {
                warn!("process cache disabled, events name processes from /proc only: {e}");
                self.reasons.insert("processes", e.to_string());
                None
            }
        }
    }

    /// Starts one feature, records why when it cannot, and puts it under the
    /// Sentinel's protection when one runs.
    fn start_one(&mut self, kind: &Kind, config: &CompiledConfig) -> Result<()> {
        let start = Start {
            loader: self.loader,
            settings: &self.settings,
        };
        let pins = self.loader.pin_dir(kind.name);
        let fresh = !pins.exists();
        match (kind.start)(&start, config) {
            Ok(feature) => {
                self.reasons.remove(kind.name);
                if fresh {
                    self.fresh.insert(kind.name);
                }
                self.running.push(feature);
                self.guard_last();
                Ok(())
            }
            Err(e) => {
                warn!("{} disabled, {e}", kind.name);
                self.reasons.insert(kind.name, e.to_string());
                // What this failed start pinned (maps of tens of MB, for the Shield)
                // goes with it; pins that were there before it stay.
                if fresh && pins.exists() {
                    match self.loader.remove_pins(kind.name) {
                        Ok(n) => info!("{}: the {n} pins of its failed start removed", kind.name),
                        Err(r) => warn!("{}: the pins of its failed start stay: {r}", kind.name),
                    }
                }
                Err(e)
            }
        }
    }

    /// Puts the newest feature's object and links under the Sentinel's protection.
    fn guard_last(&mut self) {
        let Some((newest, earlier)) = self.running.split_last_mut() else {
            return;
        };
        let Some(guard) = earlier.iter_mut().find_map(|f| f.as_guard()) else {
            return;
        };
        if let Some(object) = newest.object() {
            if let Err(e) = guard.protect_bpf(object) {
                warn!("sentinel: could not protect `{}`: {e}", object.name());
            }
        }
        if let Err(e) = guard.protect_links(newest.link_ids()) {
            warn!(
                "sentinel: could not protect the links of {}: {e}",
                newest.name()
            );
        }
        self.guard_interfaces();
    }

    /// Makes the interfaces of every running feature's tc programs the Sentinel's
    /// protected ones (interfaces no feature uses any more are let go).
    fn guard_interfaces(&mut self) {
        let mut ifaces: Vec<u32> = self
            .running
            .iter()
            .flat_map(|f| f.protected_ifaces())
            .collect();
        ifaces.sort_unstable();
        ifaces.dedup();
        let Some(guard) = self.running.iter_mut().find_map(|f| f.as_guard()) else {
            return;
        };
        if let Err(e) = guard.protect_interfaces(&ifaces) {
            warn!("sentinel: could not protect the tc hooks of the firewall's interfaces: {e}");
        }
    }

    /// Puts the links of the running features at `indices` under the Sentinel's
    /// protection again (new links, after a repair or a reload), and the pins with
    /// them: one update of the protected set and one scan of the pin root for all.
    fn guard_links(&mut self, indices: &[usize]) {
        if indices.is_empty() {
            return;
        }
        let ids: Vec<u32> = indices
            .iter()
            .filter_map(|i| self.running.get(*i))
            .flat_map(|f| f.link_ids())
            .collect();
        let Some(guard) = self.running.iter_mut().find_map(|f| f.as_guard()) else {
            return;
        };
        if let Err(e) = guard.protect_links(ids).and_then(|()| guard.refresh_pins()) {
            warn!("sentinel: could not protect the new links: {e}");
        }
        self.guard_interfaces();
    }

    /// One reader of every running feature's ring buffer (one epoll set, one drain per
    /// turn), with the process cache's `process` block on every event. Records waiting
    /// in a ring while the reader is rebuilt stay there for the new one.
    fn event_reader(&self) -> Option<EventReader> {
        let mut sources = Vec::new();
        for feature in &self.running {
            for source in feature
                .event_source()
                .into_iter()
                .chain(feature.more_event_sources())
            {
                match source {
                    Ok(source) => sources.push(source),
                    Err(e) => warn!("{}: its events cannot be read: {e}", feature.name()),
                }
            }
        }
        if sources.is_empty() {
            return None;
        }
        let reader = match &self.processes {
            Some(p) => EventReader::with_processes(sources, self.fanout.clone(), p.clone()),
            None => EventReader::new(sources, self.fanout.clone()),
        };
        match reader {
            Ok(reader) => {
                info!("reading events of {}", reader.sources());
                Some(reader)
            }
            Err(e) => {
                error!("no events are read: {e}");
                None
            }
        }
    }

    /// Waits up to `timeout` for a ring that wakes its reader, then publishes what
    /// every ring holds (TLS records are written without a wakeup). Without a reader
    /// it sleeps `timeout`.
    pub fn poll(&self, timeout: Duration) {
        match &self.reader {
            Some(r) => {
                if let Err(e) = r.poll(timeout) {
                    warn!("reading events: {e}");
                    std::thread::sleep(timeout);
                }
            }
            None => std::thread::sleep(timeout),
        }
    }

    /// [`poll`](Self::poll), also ending the wait as soon as `wake` is readable (an
    /// eventfd another thread writes when it has work for the caller's loop, such as
    /// a control API's request). The caller reads `wake` to clear it.
    pub fn poll_or_woken(&self, timeout: Duration, wake: std::os::fd::BorrowedFd<'_>) {
        use rustix::event::{PollFd, PollFlags};
        let wait = rustix::time::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let mut fds = vec![PollFd::from_borrowed_fd(wake, PollFlags::IN)];
        if let Some(r) = &self.reader {
            fds.push(PollFd::new(r, PollFlags::IN));
        }
        // EINTR (a signal: SIGHUP) ends the wait early, as it should.
        let _ = rustix::event::poll(&mut fds, Some(&wait));
        drop(fds);
        if let Some(r) = &self.reader {
            if let Err(e) = r.drain() {
                warn!("reading events: {e}");
            }
        }
    }

    /// Every feature's periodic work (bandwidth reports when due).
    pub fn tick(&mut self) {
        let out = Publisher {
            fanout: &self.fanout,
            processes: self.processes.as_deref(),
        };
        for feature in &mut self.running {
            feature.tick(&out);
        }
    }

    /// Checks every running feature's attachments against what the kernel holds and
    /// puts back what was undone from outside ([`Feature::verify`]): each repair is
    /// logged and an audit record (an event too where the agent tees its audit log to
    /// its fan-out with `ironclad_bpf::FanoutSink`). A feature with an attachment that could not be put back is reported
    /// down by [`states`](Self::states), naming it, until a later check finds it whole.
    /// Returns whether any feature's state changed. An agent calls it on a short period
    /// (the reference daemon: every second).
    pub fn verify(&mut self) -> bool {
        let mut changed = false;
        let mut repaired = Vec::new();
        for (index, feature) in self.running.iter_mut().enumerate() {
            let name = feature.name();
            let found = feature.verify();
            for what in &found.repaired {
                warn!("{name}: {what}");
            }
            if !found.repaired.is_empty() {
                repaired.push(index);
            }
            if found.broken.is_empty() {
                changed |= self.broken.remove(name).is_some() || !found.repaired.is_empty();
            } else {
                let why = found.broken.join("; ");
                if self.broken.get(name) != Some(&why) {
                    error!("{name} is NOT enforcing: {why}");
                    self.broken.insert(name, why);
                    changed = true;
                }
            }
        }
        self.guard_links(&repaired);
        changed
    }

    /// Every running feature's [kernel counters](Feature::kernel_counters), and the
    /// process cache's (`records` the kernel wrote, `events_lost`, `not_cached`: new
    /// processes a full cache had no room for), by feature name; a feature whose
    /// counters could not be read is left out, with a debug line. An agent reads them
    /// for its metrics on a period of its choice (the reference daemon: every second).
    pub fn kernel_counters(&self) -> BTreeMap<&'static str, Vec<(&'static str, u64)>> {
        let mut out = BTreeMap::new();
        for feature in &self.running {
            match feature.kernel_counters() {
                Ok(counters) if counters.is_empty() => {}
                Ok(counters) => {
                    out.insert(feature.name(), counters);
                }
                Err(e) => debug!("{}: reading its kernel counters: {e}", feature.name()),
            }
        }
        if let Some(processes) = &self.processes {
            match processes.stats() {
                Ok(s) => {
                    out.insert(
                        "processes",
                        vec![
                            ("records", s.records),
                            ("events_lost", s.lost),
                            ("not_cached", s.overflows),
                        ],
                    );
                }
                Err(e) => debug!("processes: reading the cache's counters: {e}"),
            }
        }
        out
    }

    /// The process cache, when it runs.
    pub fn processes(&self) -> Option<&Arc<ProcessMonitor>> {
        self.processes.as_ref()
    }

    /// The event reader over every running feature's ring, when one runs.
    pub fn reader(&self) -> Option<&EventReader> {
        self.reader.as_ref()
    }

    /// Hands the event reader to the caller, for an agent that waits on it itself (an
    /// `EventStream` of ironclad-bpf's `tokio` feature). [`poll`](Self::poll) then
    /// only sleeps and [`drain`](Self::drain) only flushes the features' periodic
    /// output; a [`reload`](Self::reload) that starts or stops a feature builds a new
    /// reader, which this hands out again.
    pub fn take_reader(&mut self) -> Option<EventReader> {
        self.reader.take()
    }

    /// The running feature called `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Feature> {
        self.running
            .iter()
            .find(|f| f.name() == name)
            .map(|f| &**f as &dyn Feature)
    }

    /// The running Shield, for edits of single rules in place
    /// ([`Shield::insert_rule`](ironclad_bpf::Shield::insert_rule),
    /// [`remove_rule`](ironclad_bpf::Shield::remove_rule)) between reloads: the next
    /// [`reload`](Self::reload) plans the whole policy again.
    pub fn shield(&self) -> Option<&ironclad_bpf::Shield> {
        self.running.iter().find_map(|f| f.as_shield())
    }

    /// The running stateful firewall: its rules' names by counter id
    /// ([`Firewall::rule_labels`](ironclad_bpf::Firewall::rule_labels)) and its
    /// counters.
    pub fn firewall(&self) -> Option<&ironclad_bpf::Firewall> {
        self.running.iter().find_map(|f| f.as_firewall())
    }

    /// The names of the running features, in start order.
    pub fn running(&self) -> Vec<&'static str> {
        self.running.iter().map(|f| f.name()).collect()
    }

    /// Every configured or running feature: up with what runs, or down with the
    /// reason it does not.
    pub fn states(&self) -> BTreeMap<String, FeatureState> {
        let mut out = BTreeMap::new();
        for kind in KINDS {
            let state = match self.running.iter().find(|f| f.name() == kind.name) {
                Some(f) => match self.broken.get(kind.name) {
                    Some(why) => FeatureState {
                        up: false,
                        detail: format!("not enforcing: {why} ({})", f.describe()),
                    },
                    None => FeatureState {
                        up: true,
                        detail: f.describe(),
                    },
                },
                None if self.configured.contains(kind.name) => FeatureState {
                    up: false,
                    detail: self.reasons.get(kind.name).map_or_else(
                        || "configured, not running (see the log)".to_string(),
                        |r| format!("not running: {r}"),
                    ),
                },
                None => continue,
            };
            out.insert(kind.name.to_string(), state);
        }
        out
    }

    /// Applies a new policy: each running feature takes its part (or stops, when it
    /// cannot run without its section), features the policy newly configures start.
    /// Returns `true` when everything applied; on a feature's error its old policy
    /// stays, and the error is logged.
    pub fn reload(&mut self, config: &CompiledConfig) -> bool {
        let mut failed = false;
        let mut stopping = Vec::new();
        self.last_reload.clear();
        // The process cache runs as long as the agent; its settings reload with the
        // rest (a redaction pattern added hides its secret from the next event on).
        let wanted = config.processes.clone().unwrap_or_default();
        let unchanged = self.processes_policy.as_ref() == Some(&wanted);
        if let (Some(processes), false) = (&self.processes, unchanged) {
            let policy = wanted;
            match processes.reconfigure(&policy) {
                Ok(capacity_changed) => {
                    info!(
                        "process cache reloaded: {} redaction patterns, arguments {}, lineage depth {}{}",
                        policy.redact_args.len(),
                        if policy.args { "kept" } else { "dropped" },
                        policy.lineage_depth,
                        if capacity_changed {
                            "; its capacity applies at the next start"
                        } else {
                            ""
                        }
                    );
                    self.processes_policy = Some(policy);
                }
                Err(e) => {
                    failed = true;
                    warn!("process cache reload failed, its old settings stay: {e}");
                }
            }
        }
        for (i, feature) in self.running.iter_mut().enumerate() {
            let outcome = match feature.reload(config) {
                Ok(Reloaded::Applied(what)) => {
                    if !what.is_empty() {
                        info!("{what}");
                    }
                    ReloadOutcome::Applied
                }
                Ok(Reloaded::Kept(what)) => {
                    if !what.is_empty() {
                        info!("{what}");
                    }
                    ReloadOutcome::Kept
                }
                Ok(Reloaded::Stop(why)) => {
                    info!("{why}");
                    stopping.push(i);
                    ReloadOutcome::Stopped
                }
                Err(e) => {
                    failed = true;
                    warn!(
                        "{} reload failed, the old policy stays: {e}",
                        feature.name()
                    );
                    ReloadOutcome::Failed
                }
            };
            self.last_reload.insert(feature.name(), outcome);
        }
        // Every feature's flag read (and cleared), not only up to the first set one.
        let mut sources_changed = false;
        for f in &mut self.running {
            sources_changed |= f.take_sources_changed();
        }
        let mut started_or_stopped = !stopping.is_empty() || sources_changed;
        if started_or_stopped {
            // The stopping features' last records first: the reader goes with them.
            if let Some(r) = &self.reader {
                let _ = r.drain();
            }
            self.reader = None;
            for i in stopping.into_iter().rev() {
                let feature = self.running.remove(i);
                self.broken.remove(feature.name());
                // Its section is gone: so is its enforcement, hooks and pins alike.
                match feature.stop(self.loader, true) {
                    Ok(what) => info!("{what}"),
                    Err(e) => {
                        failed = true;
                        warn!("stopping: {e}");
                    }
                }
            }
        }
        self.configured = KINDS
            .iter()
            .filter(|k| (k.configured)(config))
            .map(|k| k.name)
            .collect();
        for kind in KINDS {
            let running = self.running.iter().any(|f| f.name() == kind.name);
            if running || !(kind.configured)(config) || kind.with_the_agent_only {
                continue;
            }
            match self.start_one(kind, config) {
                Ok(()) => {
                    started_or_stopped = true;
                    self.last_reload.insert(kind.name, ReloadOutcome::Started);
                }
                Err(e @ AgentError::NoInterface) => {
                    failed = true;
                    warn!("reload refused: {e}");
                    self.last_reload.insert(kind.name, ReloadOutcome::Failed);
                }
                Err(e) => {
                    warn!("{} still disabled: {e}", kind.name);
                    self.last_reload.insert(kind.name, ReloadOutcome::Failed);
                }
            }
        }
        if started_or_stopped {
            // The old reader goes first: two readers of one ring would split its
            // records between them.
            drop(self.reader.take());
            self.reader = self.event_reader();
        }
        // A reload may attach more (scrubbing on another interface, the SYN-flood
        // defence): those links are protected too.
        let all: Vec<usize> = (0..self.running.len()).collect();
        self.guard_links(&all);
        // The interfaces of the firewall's policy as it now runs (the old choice stays
        // where its reload failed).
        match self.last_reload.get(firewall::KIND.name) {
            Some(ReloadOutcome::Failed) => {}
            _ if self.get(firewall::KIND.name).is_none() => self.interfaces = None,
            _ => {
                self.interfaces = config.firewall.as_ref().map(InterfaceChoice::of);
                self.interfaces_reported = None;
            }
        }
        !failed
    }

    /// What the last [`reload`](Self::reload) did to each feature it touched, by name.
    pub fn reload_outcomes(&self) -> &BTreeMap<&'static str, ReloadOutcome> {
        &self.last_reload
    }

    /// Puts `previous` back: a [`reload`](Self::reload) of the whole earlier policy, so
    /// a feature whose section the newer policy removed starts again and one it added
    /// stops. Returns whether everything was restored (`false` with no earlier policy).
    pub fn roll_back(&mut self, previous: &Snapshot) -> bool {
        let Some(config) = &previous.config else {
            error!("rolling back: no earlier policy was kept");
            return false;
        };
        self.reload(config)
    }

    /// Publishes what every ring still holds and every feature's last periodic output.
    pub fn drain(&mut self) {
        if let Some(r) = &self.reader {
            let _ = r.drain();
        }
        let out = Publisher {
            fanout: &self.fanout,
            processes: self.processes.as_deref(),
        };
        for feature in &mut self.running {
            feature.flush(&out);
        }
    }

    /// Stops every feature, the last started first. Without `detach`, pinned
    /// enforcement stays in the kernel (the next start adopts it); with it every hook
    /// and pin goes. The first error is returned after every feature was stopped.
    /// Every ring's last records and every feature's last periodic output are published
    /// first ([`drain`](Self::drain)): a subscriber reads them after `stop` returns.
    pub fn stop(mut self, detach: bool) -> Result<()> {
        self.drain();
        self.stop_all(detach)
    }

    /// Stops every feature after a start that failed: those whose pins this start
    /// made are detached and their pins removed, adopted ones stay pinned.
    fn stop_failed_start(&mut self) -> Result<()> {
        let fresh = std::mem::take(&mut self.fresh);
        self.stop_each(|name| fresh.contains(name))
    }

    fn stop_all(&mut self, detach: bool) -> Result<()> {
        self.stop_each(|_| detach)
    }

    /// Stops every feature, the last started first, detaching those `detach` names.
    fn stop_each(&mut self, detach: impl Fn(&str) -> bool) -> Result<()> {
        // The reader goes before anything is stopped: it holds their rings open.
        drop(self.reader.take());
        let mut first = None;
        while let Some(feature) = self.running.pop() {
            let detach = detach(feature.name());
            match feature.stop(self.loader, detach) {
                Ok(what) => info!("{what}"),
                Err(e) => {
                    error!("stopping: {e}");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
