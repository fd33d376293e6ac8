//! The control API (`ironclad-api`'s gRPC service) served by `run` on a Unix socket.
//!
//! The server runs on a thread of its own (a Tokio runtime), so a slow or hostile
//! client never holds the control loop. What only reads (`GetStatus`, `ListRules`,
//! `StreamEvents`) is answered there, from the pins, the health report, the list of
//! rules the loop publishes after each change, and a subscription to the event
//! fan-out. What changes the rules (`AddRule`, `RemoveRule`) is queued to the control
//! loop, which compiles the policy file with the runtime rules, applies it as a reload
//! is applied, stores the rules (`STATE_DIR/runtime-rules.json`), writes the audit
//! record and only then answers: when the call returns, the kernel enforces it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ironclad_api::server::TlsFiles;
use ironclad_api::v1::control_server::Control;
use ironclad_api::v1::{
    AddRuleRequest, AddRuleResponse, ApplyPolicyRequest, ApplyPolicyResponse, ConfirmRequest,
    ConfirmResponse, Feature, GetStatusRequest, GetStatusResponse, ListRulesRequest,
    ListRulesResponse, RemoveRuleRequest, RemoveRuleResponse, RuleEntry, Section,
    StreamEventsRequest, StreamEventsResponse,
};
use ironclad_events::{Event, Fanout};
use ironclad_policy::config::CompiledConfig;
use ironclad_policy::runtime::{RuleSection, RuntimeRule};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

/// Rule changes waiting for the control loop at most; more are refused
/// (`RESOURCE_EXHAUSTED`) rather than queued without bound.
const QUEUE: usize = 64;

/// How long calls in progress may take to finish when the daemon stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// A stream's queue by default, and at most.
const STREAM_QUEUE: (usize, usize) = (4096, 65536);

/// The socket's name in the run directory, by default.
pub(crate) const SOCKET_NAME: &str = "api.sock";

/// The rules in force with their origins, in the run directory (read by `status`).
pub(crate) const RULES_REPORT: &str = "rules.json";

/// The list a rule belongs to, as the policy names it.
pub(crate) fn section_name(section: i32) -> &'static str {
    match Section::try_from(section) {
        Ok(Section::ShieldDeny) => "shield.deny",
        Ok(Section::ShieldAllow) => "shield.allow",
        Ok(Section::EgressRules) => "egress.rules",
        Ok(Section::FirewallRules) => "firewall.rules",
        _ => "?",
    }
}

/// A rule as `rules list --json` and `RUN_DIR/rules.json` write it.
pub(crate) fn rule_json(r: &RuleEntry) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "section": section_name(r.section),
        "rule": r.rule,
        "origin": r.origin,
        "added_unix": r.added_unix,
        "added_by": r.added_by,
    })
}

/// The name of the runtime rules' file in the state directory.
pub(crate) const RULES_FILE: &str = "runtime-rules.json";

/// A rule change for the control loop, with where to send its answer.
pub(crate) enum Change {
    /// `AddRule`.
    Add {
        rule: RuntimeRule,
        comment: String,
        by: String,
        received: Instant,
        reply: tokio::sync::oneshot::Sender<Result<AddRuleResponse, Status>>,
    },
    /// `ApplyPolicy`.
    Apply {
        request: ApplyPolicyRequest,
        by: String,
        received: Instant,
        reply: tokio::sync::oneshot::Sender<Result<ApplyPolicyResponse, Status>>,
    },
    /// `RemoveRule`.
    Remove {
        id: String,
        by: String,
        received: Instant,
        reply: tokio::sync::oneshot::Sender<Result<RemoveRuleResponse, Status>>,
    },
    /// `Confirm`: the pending reload's confirmation window is the control loop's.
    Confirm {
        by: String,
        reply: tokio::sync::oneshot::Sender<Result<ConfirmResponse, Status>>,
    },
}

fn rule_section(section: i32) -> Result<RuleSection, Status> {
    match Section::try_from(section) {
        Ok(Section::ShieldDeny) => Ok(RuleSection::ShieldDeny),
        Ok(Section::ShieldAllow) => Ok(RuleSection::ShieldAllow),
        Ok(Section::EgressRules) => Ok(RuleSection::EgressRules),
        Ok(Section::FirewallRules) => Ok(RuleSection::FirewallRules),
        Ok(Section::Unspecified) => Err(Status::invalid_argument(
            "section: say which list the rule belongs to (SECTION_SHIELD_DENY, ...)",
        )),
        Err(_) => Err(Status::invalid_argument(format!(
            "section: {section} is not a section of ironclad.control.v1"
        ))),
    }
}

/// A rule added through the API, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredRule {
    id: u64,
    section: String,
    rule: String,
    #[serde(default)]
    comment: String,
    added_unix: u64,
    added_by: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    next_id: u64,
    rules: Vec<StoredRule>,
}

/// The runtime rules, kept in `STATE_DIR/runtime-rules.json` (mode 0600, replaced
/// whole by a rename): they survive reloads and restarts until removed.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    file: StoreFile,
}

impl Store {
    /// Reads the store (none yet: empty). A file that cannot be read or understood is
    /// an error naming it: the daemon does not start without rules it was told to keep.
    pub(crate) fn load(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(RULES_FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: StoreFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a runtime-rules file", path.display()))?;
                for r in &file.rules {
                    let section = RuleSection::from_field(&r.section).with_context(|| {
                        format!(
                            "{}: rule {}: no section `{}`",
                            path.display(),
                            r.id,
                            r.section
                        )
                    })?;
                    RuntimeRule::new(r.id, section, &r.rule)
                        .validate()
                        .map_err(|e| {
                            anyhow::anyhow!("{}: rule api-{}: {e}", path.display(), r.id)
                        })?;
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile {
                version: 1,
                next_id: 1,
                rules: Vec::new(),
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut store = Self { path, file };
        // A change made under --confirm-within that the daemon stopped before anyone
        // confirmed: the rules before it come back, as at the deadline.
        if store.roll_back()? {
            tracing::warn!(
                "a change to the runtime rules was not confirmed before the daemon stopped: the rules before it are back"
            );
        }
        Ok(store)
    }

    /// The rules, for the compiler.
    pub(crate) fn rules(&self) -> Vec<RuntimeRule> {
        self.file
            .rules
            .iter()
            .filter_map(|r| {
                RuleSection::from_field(&r.section).map(|s| RuntimeRule::new(r.id, s, &r.rule))
            })
            .collect()
    }

    fn stored(&self, label: &str) -> Option<&StoredRule> {
        self.file
            .rules
            .iter()
            .find(|r| format!("api-{}", r.id) == label)
    }

    /// The next rule's number.
    pub(crate) fn next_id(&self) -> u64 {
        self.file.next_id.max(1)
    }

    /// The store with `rule` added (not saved).
    pub(crate) fn with(&self, rule: &RuntimeRule, comment: &str, by: &str) -> StoreFileChange {
        let mut file = self.file.clone();
        file.next_id = rule.id + 1;
        file.rules.push(StoredRule {
            id: rule.id,
            section: rule.section.field().to_string(),
            rule: rule.rule.clone(),
            comment: comment.to_string(),
            added_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            added_by: by.to_string(),
        });
        StoreFileChange(file)
    }

    /// The store without rule `label` (`api-N`), or `None` when it has no such rule.
    pub(crate) fn without(&self, label: &str) -> Option<StoreFileChange> {
        let mut file = self.file.clone();
        let before = file.rules.len();
        file.rules.retain(|r| format!("api-{}", r.id) != label);
        (file.rules.len() < before).then_some(StoreFileChange(file))
    }

    /// Writes `change` (a temporary file renamed over the store) and keeps it.
    pub(crate) fn save(&mut self, change: StoreFileChange) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
        }
        write_private(&self.path, &serde_json::to_vec_pretty(&change.0)?)?;
        self.file = change.0;
        Ok(())
    }

    /// Where the rules before an unconfirmed change wait (`runtime-rules.json.unconfirmed`).
    fn before_path(path: &Path) -> PathBuf {
        path.with_extension("json.unconfirmed")
    }

    /// Keeps the rules in force now until the change about to be saved is confirmed
    /// (`--confirm-within`): the first unconfirmed change's rules come back at the
    /// deadline ([`Store::roll_back`]) or, should the daemon stop first, at its next
    /// start. A later change in the same window keeps the same rules to come back to.
    pub(crate) fn keep_until_confirmed(&self) -> Result<()> {
        let before = Self::before_path(&self.path);
        if before.exists() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
        }
        write_private(&before, &serde_json::to_vec_pretty(&self.file)?)
    }

    /// The change waiting for confirmation is confirmed: its rules stay.
    pub(crate) fn confirmed(&self) {
        let _ = std::fs::remove_file(Self::before_path(&self.path));
    }

    /// The change waiting for confirmation was not confirmed: the rules kept by
    /// [`Store::keep_until_confirmed`] come back (in the store; the caller enforces
    /// them). `false` when none were kept.
    pub(crate) fn roll_back(&mut self) -> Result<bool> {
        let before = Self::before_path(&self.path);
        let bytes = match std::fs::read(&before) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", before.display())),
        };
        let mut file: StoreFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a runtime-rules file", before.display()))?;
        // Numbers are never given twice: `api-N` names one rule in the audit log.
        file.next_id = file.next_id.max(self.file.next_id);
        write_private(&self.path, &serde_json::to_vec_pretty(&file)?)?;
        let _ = std::fs::remove_file(&before);
        self.file = file;
        Ok(true)
    }

    /// The rules of `change`, for the compiler.
    pub(crate) fn rules_of(change: &StoreFileChange) -> Vec<RuntimeRule> {
        Self::view(change).rules()
    }

    /// A store holding `change`, to read (not to save).
    pub(crate) fn view(change: &StoreFileChange) -> Self {
        Store {
            path: PathBuf::new(),
            file: change.0.clone(),
        }
    }

    /// What it holds now, as a change (to enforce it again).
    pub(crate) fn current(&self) -> StoreFileChange {
        StoreFileChange(self.file.clone())
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file renamed over it, synced
/// first: a crash leaves the old file or the new one, never half of one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut out = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// A store's next content, not yet written.
#[derive(Debug)]
pub(crate) struct StoreFileChange(StoreFile);

/// One firewall rule in a line with its comment:
/// `in tcp src 203.0.113.0/24 dport 22 accept  # ssh from admins`.
fn firewall_rule_text(r: &ironclad_policy::firewall::FwRule) -> String {
    match &r.comment {
        Some(c) => format!("{}  # {c}", r.summary()),
        None => r.summary(),
    }
}

/// Every rule of `config` with where it came from, for `ListRules`.
pub(crate) fn rule_entries(config: &CompiledConfig, store: &Store, policy: &str) -> Vec<RuleEntry> {
    let entry = |origin: &str, section: Section, rule: String| match store.stored(origin) {
        Some(s) => RuleEntry {
            id: origin.to_string(),
            section: section as i32,
            rule,
            origin: "api".to_string(),
            added_unix: s.added_unix,
            added_by: s.added_by.clone(),
        },
        None => RuleEntry {
            id: origin.to_string(),
            section: section as i32,
            rule,
            origin: policy.to_string(),
            added_unix: 0,
            added_by: String::new(),
        },
    };
    let mut out = Vec::new();
    if let Some(shield) = &config.shield {
        for r in &shield.rules {
            let section = match r.action {
                ironclad_core::abi::Action::Allow => Section::ShieldAllow,
                _ => Section::ShieldDeny,
            };
            out.push(entry(&r.origin, section, r.cidr.to_string()));
        }
        for set in &shield.sets {
            let section = match set.action {
                ironclad_core::abi::Action::Allow => Section::ShieldAllow,
                _ => Section::ShieldDeny,
            };
            out.push(entry(
                &format!("set {}", set.name),
                section,
                format!("set {} ({} prefixes)", set.name, set.prefixes.len()),
            ));
        }
    }
    if let Some(egress) = &config.egress {
        for r in &egress.rules {
            out.push(entry(&r.origin, Section::EgressRules, r.summary.clone()));
        }
    }
    if let Some(firewall) = &config.firewall {
        for r in &firewall.rules {
            out.push(entry(
                &r.origin.field,
                Section::FirewallRules,
                firewall_rule_text(r),
            ));
        }
    }
    out
}

/// What the API thread shares with the control loop.
#[derive(Clone)]
struct Shared {
    changes: std::sync::mpsc::SyncSender<Change>,
    wake: Arc<std::os::fd::OwnedFd>,
    rules: Arc<Mutex<Vec<RuleEntry>>>,
    pin_dir: PathBuf,
    run_dir: PathBuf,
    policy: String,
    /// The event streams and their hub.
    streams: Arc<crate::streams::Streams>,
}

/// The running API: the control loop takes rule changes from it.
pub(crate) struct Api {
    changes: std::sync::mpsc::Receiver<Change>,
    wake: Arc<std::os::fd::OwnedFd>,
    rules: Arc<Mutex<Vec<RuleEntry>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
    run_dir: PathBuf,
}

impl Api {
    /// Binds the socket (before anything is enforced: a bad path changes nothing).
    pub(crate) fn bind(socket: &Path) -> Result<std::os::unix::net::UnixListener> {
        ironclad_api::server::bind(socket)
            .with_context(|| format!("the control API's socket {}", socket.display()))
    }

    /// Binds the TCP listener (mutual TLS) and checks its certificate files, before
    /// anything is enforced.
    pub(crate) fn bind_tcp(
        addr: std::net::SocketAddr,
        tls: TlsFiles,
    ) -> Result<(std::net::TcpListener, TlsFiles)> {
        tls.check().context(
            "the control API's TLS files (--api-tls-cert, --api-tls-key, --api-tls-client-ca)",
        )?;
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("the control API's address {addr}"))?;
        Ok((listener, tls))
    }

    /// Serves the API on `listener` (and on `tcp`) from a thread of its own.
    pub(crate) fn start(
        listener: std::os::unix::net::UnixListener,
        tcp: Option<(std::net::TcpListener, TlsFiles)>,
        socket: &Path,
        fanout: Arc<Fanout<Event>>,
        pin_dir: &Path,
        run_dir: &Path,
        policy: &Path,
    ) -> Result<Self> {
        let (changes_tx, changes) = std::sync::mpsc::sync_channel(QUEUE);
        // Written with each queued change: the control loop's wait ends at once.
        let wake = Arc::new(
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .context("the control API's eventfd")?,
        );
        let rules = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            changes: changes_tx,
            wake: wake.clone(),
            rules: rules.clone(),
            streams: crate::streams::Streams::new(fanout),
            pin_dir: pin_dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            policy: policy.display().to_string(),
        };
        let tcp_addr = tcp.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("the control API's runtime")?;
        let thread = std::thread::Builder::new()
            .name("ironclad-api".to_string())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let (closing, closed) = tokio::sync::watch::channel(false);
                    let signal = |mut closed: tokio::sync::watch::Receiver<bool>| async move {
                        let _ = closed.changed().await;
                    };
                    let unix = ironclad_api::server::serve(
                        listener,
                        DaemonControl(shared.clone()),
                        signal(closed.clone()),
                    );
                    let tcp = async {
                        match tcp {
                            Some((listener, tls)) => {
                                ironclad_api::server::serve_tcp(
                                    listener,
                                    &tls,
                                    DaemonControl(shared),
                                    signal(closed),
                                )
                                .await
                            }
                            None => Ok(()),
                        }
                    };
                    let serve = async { tokio::try_join!(unix, tcp).map(|_| ()) };
                    tokio::pin!(serve);
                    tokio::select! {
                        served = &mut serve => served,
                        _ = stopped => {
                            // Calls in progress get a moment to finish; streams (which
                            // never do) are cut when the runtime goes.
                            let _ = closing.send(true);
                            tokio::time::timeout(STOP_GRACE, serve).await.unwrap_or(Ok(()))
                        }
                    }
                });
                if let Err(e) = served {
                    tracing::error!("the control API stopped: {e}");
                }
            })
            .context("starting the control API's thread")?;
        tracing::info!("control API on {}", socket.display());
        if let Some(addr) = &tcp_addr {
            tracing::info!("control API on tcp {addr} (mutual TLS)");
        }
        Ok(Self {
            changes,
            wake,
            rules,
            stop: Some(stop),
            thread: Some(thread),
            socket: socket.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
        })
    }

    /// Readable when a change was queued: the control loop waits on it with its rings
    /// ([`Features::poll_or_woken`](ironclad_agent::features::Features::poll_or_woken)).
    pub(crate) fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.wake.as_fd()
    }

    /// The next waiting change (the wake-up cleared first, so a change queued while the
    /// loop works wakes it again).
    pub(crate) fn next_change(&self) -> Option<Change> {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&*self.wake, &mut count);
        self.changes.try_recv().ok()
    }

    /// The prefix of the Shield rule `id` (`api-N`) in force, if it is one.
    pub(crate) fn shield_rule(&self, id: &str) -> Option<ipnetwork::IpNetwork> {
        self.rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|r| {
                r.id == id
                    && matches!(
                        Section::try_from(r.section),
                        Ok(Section::ShieldDeny | Section::ShieldAllow)
                    )
            })
            .and_then(|r| r.rule.parse().ok())
    }

    /// Publishes the rules in force, for `ListRules`, and for `status` in
    /// `RUN_DIR/rules.json` (where each rule came from).
    pub(crate) fn publish_rules(&self, rules: Vec<RuleEntry>) {
        let json: Vec<serde_json::Value> = rules.iter().map(rule_json).collect();
        let path = self.run_dir.join(RULES_REPORT);
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, serde_json::Value::from(json).to_string())
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!("writing {}: {e}", path.display());
        }
        *self.rules.lock().unwrap_or_else(PoisonError::into_inner) = rules;
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(self.run_dir.join(RULES_REPORT));
    }
}

struct DaemonControl(Shared);

impl DaemonControl {
    /// Queues the change `make` builds around its answer's sender, and waits for the
    /// control loop's answer (`what` names the change in the error when it never comes).
    async fn ask<T>(
        &self,
        what: &str,
        make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, Status>>) -> Change,
    ) -> Result<Response<T>, Status> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue(make(reply))?;
        answer
            .await
            .map_err(|_| Status::unavailable(format!("the daemon stopped before {what}")))?
            .map(Response::new)
    }

    /// Queues `change` for the control loop.
    fn queue(&self, change: Change) -> Result<(), Status> {
        self.0.changes.try_send(change).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => Status::resource_exhausted(format!(
                "{QUEUE} rule changes are already waiting: try again"
            )),
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                Status::unavailable("the daemon is stopping")
            }
        })?;
        let _ = rustix::io::write(&*self.0.wake, &1u64.to_ne_bytes());
        Ok(())
    }
}

/// Whether `event` passes the stream's filter.
fn wanted(filter: &StreamEventsRequest, event: &Event, json: &serde_json::Value) -> bool {
    let kind = json["kind"].as_str().unwrap_or_default();
    if !filter.kinds.is_empty() && !filter.kinds.iter().any(|k| k == kind) {
        return false;
    }
    if filter.pid != 0 && event.process_subject().map(|(pid, _, _)| pid) != Some(filter.pid) {
        return false;
    }
    if filter.rule_id != 0 && json["rule_id"].as_u64() != Some(u64::from(filter.rule_id)) {
        return false;
    }
    if !filter.exe.is_empty() {
        // An `exe` field anywhere (the event's, its process block's, an ancestor's),
        // written as a path or as an object with one.
        fn names(v: &serde_json::Value, exe: &str) -> bool {
            match v {
                serde_json::Value::Array(a) => a.iter().any(|v| names(v, exe)),
                serde_json::Value::Object(o) => o.iter().any(|(k, v)| {
                    (k == "exe" && (v.as_str() == Some(exe) || v["path"].as_str() == Some(exe)))
                        || names(v, exe)
                }),
                _ => false,
            }
        }
        if !names(json, &filter.exe) {
            return false;
        }
    }
    true
}

type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<StreamEventsResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl Control for DaemonControl {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let (pin_dir, run_dir) = (self.0.pin_dir.clone(), self.0.run_dir.clone());
        let api_rules = self
            .0
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| r.origin == "api")
            .count();
        // Reading every counter takes a while at a million rules: off the reactor.
        let status = tokio::task::spawn_blocking(move || {
            (
                crate::status::status_json(&pin_dir, &run_dir),
                ironclad_agent::health::read(&run_dir),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let (json, report) = status;
        let json = json.map_err(|e| Status::unavailable(format!("{e:#}")))?;
        let report = report.ok_or_else(|| Status::unavailable("no health report yet"))?;
        Ok(Response::new(GetStatusResponse {
            ready: report.ready,
            features: report
                .features
                .iter()
                .map(|(name, f)| Feature {
                    name: name.clone(),
                    up: f.up,
                    detail: f.detail.clone(),
                })
                .collect(),
            status_json: json.to_string(),
            policy: self.0.policy.clone(),
            api_rules: u32::try_from(api_rules).unwrap_or(u32::MAX),
        }))
    }

    async fn list_rules(
        &self,
        request: Request<ListRulesRequest>,
    ) -> Result<Response<ListRulesResponse>, Status> {
        let section = request.into_inner().section;
        if section != 0 {
            rule_section(section)?;
        }
        let rules = self
            .0
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| section == 0 || r.section == section)
            .cloned()
            .collect();
        Ok(Response::new(ListRulesResponse { rules }))
    }

    async fn add_rule(
        &self,
        request: Request<AddRuleRequest>,
    ) -> Result<Response<AddRuleResponse>, Status> {
        let received = Instant::now();
        let by = ironclad_api::server::caller(&request);
        let AddRuleRequest {
            section,
            rule,
            comment,
        } = request.into_inner();
        let section = rule_section(section)?;
        if comment.len() > 1024 || comment.contains(['\n', '\r']) {
            return Err(Status::invalid_argument(
                "comment: one line of at most 1024 bytes",
            ));
        }
        // Checked here first: a bad rule never waits for the control loop.
        RuntimeRule::new(0, section, &rule)
            .validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.ask("applying the rule", |reply| Change::Add {
            rule: RuntimeRule::new(0, section, rule),
            comment,
            by,
            received,
            reply,
        })
        .await
    }

    async fn remove_rule(
        &self,
        request: Request<RemoveRuleRequest>,
    ) -> Result<Response<RemoveRuleResponse>, Status> {
        let received = Instant::now();
        let by = ironclad_api::server::caller(&request);
        let id = request.into_inner().id;
        if !id.starts_with("api-") {
            return Err(Status::invalid_argument(format!(
                "id `{id}`: only rules added through the API (api-N) can be removed; the policy file's rules are changed in the file"
            )));
        }
        self.ask("removing the rule", |reply| Change::Remove {
            id,
            by,
            received,
            reply,
        })
        .await
    }

    async fn apply_policy(
        &self,
        request: Request<ApplyPolicyRequest>,
    ) -> Result<Response<ApplyPolicyResponse>, Status> {
        let received = Instant::now();
        let by = ironclad_api::server::caller(&request);
        let request = request.into_inner();
        if request.policy_yaml.is_empty() == request.bundle_files.is_empty() {
            return Err(Status::invalid_argument(
                "give either policy_yaml or bundle_files",
            ));
        }
        self.ask("applying the policy", |reply| Change::Apply {
            request,
            by,
            received,
            reply,
        })
        .await
    }

    /// Answered by the control loop, which holds the confirmation window: no signal to
    /// this process and no wait on the run directory's files, so other calls and
    /// streams go on meanwhile.
    async fn confirm(
        &self,
        request: Request<ConfirmRequest>,
    ) -> Result<Response<ConfirmResponse>, Status> {
        let by = ironclad_api::server::caller(&request);
        self.ask("confirming", |reply| Change::Confirm { by, reply })
            .await
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let filter = request.into_inner();
        // A kind no event has would match nothing, forever: refused, with the kinds.
        if let Some(bad) = filter
            .kinds
            .iter()
            .find(|k| !Event::KINDS.contains(&k.as_str()))
        {
            return Err(Status::invalid_argument(format!(
                "no event kind `{bad}`; the kinds are {}",
                Event::KINDS.join(", ")
            )));
        }
        let queue = match filter.queue {
            0 => STREAM_QUEUE.0,
            n => (n as usize).min(STREAM_QUEUE.1),
        };
        // One hub encodes each event once for every stream; this stream holds what its
        // client has not read, within its bounds, and loses (counts) the rest.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        self.0.streams.open(filter, queue, wanted, tx)?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// The answer to a change that could not be applied.
pub(crate) fn refused(message: String) -> Status {
    Status::failed_precondition(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironclad_core::abi::EgressAction;
    use ironclad_events::{Actor, EgressDecision};

    fn connect(pid: u32, exe: &str, rule_id: u32) -> (Event, serde_json::Value) {
        let event = Event::Connect({
            let mut ev =
                EgressDecision::new(EgressAction::Deny, "192.0.2.1".parse().expect("addr"));
            ev.ktime_ns = 1;
            ev.actor = {
                let mut ev = Actor::default();
                ev.pid = pid;
                ev.tid = Some(pid);
                ev.comm = "curl".to_string();
                ev.exe = Some(exe.to_string());
                ev.exe_dev = 1;
                ev.exe_ino = 2;
                ev
            };
            ev.cgroup_id = 1;
            ev.dport = 443;
            ev.proto = "tcp".to_string();
            ev.rule_id = rule_id;
            ev.hook = "connect4";
            ev
        });
        let json = serde_json::from_str(&event.to_json()).expect("json");
        (event, json)
    }

    #[test]
    fn a_stream_s_filter_takes_kind_process_executable_and_rule() {
        let (event, json) = connect(4121, "/usr/bin/curl", 3);
        let pass = |filter: StreamEventsRequest| wanted(&filter, &event, &json);
        assert!(
            pass(StreamEventsRequest::default()),
            "no filter: everything"
        );
        let kinds = |k: &[&str]| StreamEventsRequest {
            kinds: k.iter().map(ToString::to_string).collect(),
            ..Default::default()
        };
        assert!(pass(kinds(&["shield_drop", "connect"])));
        assert!(!pass(kinds(&["shield_drop"])));
        for (pid, ok) in [(4121, true), (4122, false)] {
            assert_eq!(
                pass(StreamEventsRequest {
                    pid,
                    ..Default::default()
                }),
                ok
            );
        }
        for (exe, ok) in [
            ("/usr/bin/curl", true),
            ("/usr/bin/wget", false),
            ("curl", false),
        ] {
            assert_eq!(
                pass(StreamEventsRequest {
                    exe: exe.to_string(),
                    ..Default::default()
                }),
                ok,
                "{exe}"
            );
        }
        for (rule_id, ok) in [(3, true), (4, false)] {
            assert_eq!(
                pass(StreamEventsRequest {
                    rule_id,
                    ..Default::default()
                }),
                ok
            );
        }
        // All at once: every one must hold.
        assert!(pass(StreamEventsRequest {
            kinds: vec!["connect".to_string()],
            pid: 4121,
            exe: "/usr/bin/curl".to_string(),
            rule_id: 3,
            queue: 0,
        }));
        assert!(!pass(StreamEventsRequest {
            kinds: vec!["connect".to_string()],
            pid: 4121,
            exe: "/usr/bin/curl".to_string(),
            rule_id: 9,
            queue: 0,
        }));
    }
}
