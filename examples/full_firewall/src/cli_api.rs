//! `rules list|add|rm` and `events`: the command line over the control API (the
//! daemon's Unix socket), as any other client uses it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ironclad_api::v1::{
    stream_events_response, AddRuleRequest, ListRulesRequest, RemoveRuleRequest, Section,
    StreamEventsRequest,
};
use ironclad_policy::runtime::RuleSection;

/// Where the daemon serves its API, by default.
fn default_socket() -> PathBuf {
    PathBuf::from(crate::rollout::DEFAULT_RUN_DIR).join(crate::api::SOCKET_NAME)
}

/// How to reach the daemon's control API.
#[derive(clap::Args)]
pub(crate) struct ConnectArgs {
    /// The daemon's control API socket (default: `/run/ironclad/api.sock`).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Reach the API on TCP instead (`host:port`, the daemon's `--api-listen`), with
    /// mutual TLS.
    #[arg(long, global = true, value_name = "HOST:PORT", conflicts_with = "socket", requires_all = ["tls_ca", "tls_cert", "tls_key"])]
    tcp: Option<String>,
    /// The CA that issued the daemon's certificate (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), issued by the daemon's `--api-tls-client-ca`.
    #[arg(long, global = true, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The name the daemon's certificate must carry (default: the host of `--tcp`).
    #[arg(long, global = true, value_name = "NAME")]
    tls_server_name: Option<String>,
}

impl ConnectArgs {
    async fn connect(
        &self,
    ) -> Result<ironclad_api::v1::control_client::ControlClient<tonic::transport::Channel>> {
        let read = |p: &Option<PathBuf>| -> Result<Vec<u8>> {
            let p = p
                .as_deref()
                .context("--tcp needs --tls-ca, --tls-cert and --tls-key")?;
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        match &self.tcp {
            Some(addr) => {
                let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                let name = self.tls_server_name.as_deref().unwrap_or(host);
                ironclad_api::client::connect_tls(
                    addr,
                    name.trim_start_matches('[').trim_end_matches(']'),
                    &read(&self.tls_ca)?,
                    &read(&self.tls_cert)?,
                    &read(&self.tls_key)?,
                )
                .await
                .with_context(|| format!("connecting to the daemon at {addr}"))
            }
            None => {
                let socket = self.socket.clone().unwrap_or_else(default_socket);
                ironclad_api::client::connect(&socket)
                    .await
                    .with_context(|| format!("connecting to the daemon at {}", socket.display()))
            }
        }
    }
}

/// `rules`.
#[derive(clap::Args)]
pub(crate) struct RulesArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(clap::Subcommand)]
enum RulesCommand {
    /// Every rule in force: the policy file's and those added through the API.
    List {
        /// Only this list (`shield.deny`, `shield.allow`, `egress.rules`,
        /// `firewall.rules`).
        #[arg(long)]
        section: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a rule to a list of the policy, written as the policy file writes one item
    /// (`rules add shield.deny 203.0.113.0/24`; `rules add egress.rules '{exe:
    /// /usr/bin/curl, action: deny}'`). Returns once the kernel enforces it; it stays
    /// across reloads and restarts until removed.
    Add {
        /// The list.
        section: String,
        /// The rule.
        rule: String,
        /// Why (kept in the audit log and the rule list).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Remove a rule added through the API, by its id (`api-3`).
    Rm {
        /// The rule's id.
        id: String,
    },
}

/// `apply`.
#[derive(clap::Args)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A policy file, for a daemon run with `--config`.
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    policy: Option<PathBuf>,
    /// A signed bundle directory, for a daemon run with `--bundle`.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

/// `events`.
#[derive(clap::Args)]
pub(crate) struct EventsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Follow the events as they come (the only mode: accepted for habit's sake).
    #[arg(long)]
    follow: bool,
    /// Only events of this kind (`shield_drop`, `connect`, `firewall`, `dns`, ...);
    /// repeat for several.
    #[arg(long)]
    kind: Vec<String>,
    /// Only events of this process id.
    #[arg(long)]
    pid: Option<u32>,
    /// Only events naming this executable.
    #[arg(long)]
    exe: Option<String>,
    /// Only events of this rule id.
    #[arg(long)]
    rule_id: Option<u32>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the client's runtime")
}

/// A refused call's exit: 2 for a bad request (as `check` exits for a bad policy), 1
/// otherwise.
fn failed(status: &tonic::Status) -> ExitCode {
    eprintln!("{}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn api_section(field: &str) -> Result<Section> {
    match RuleSection::from_field(field) {
        Some(RuleSection::ShieldDeny) => Ok(Section::ShieldDeny),
        Some(RuleSection::ShieldAllow) => Ok(Section::ShieldAllow),
        Some(RuleSection::EgressRules) => Ok(Section::EgressRules),
        Some(RuleSection::FirewallRules) => Ok(Section::FirewallRules),
        _ => anyhow::bail!(
            "no list `{field}`: one of {}",
            RuleSection::ALL.map(RuleSection::field).join(", ")
        ),
    }
}

pub(crate) fn rules(args: RulesArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let mut api = args.connect.connect().await?;
        match args.command {
            RulesCommand::List { section, json } => {
                let section = section.as_deref().map(api_section).transpose()?;
                let listed = match api
                    .list_rules(ListRulesRequest {
                        section: section.map_or(0, |s| s as i32),
                    })
                    .await
                {
                    Ok(r) => r.into_inner().rules,
                    Err(status) => return Ok(failed(&status)),
                };
                let mut out = std::io::stdout().lock();
                if json {
                    for r in &listed {
                        writeln!(out, "{}", crate::api::rule_json(r))?;
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                let mut table = crate::status::table(&["rule", "list", "matches", "from"], &[]);
                for r in &listed {
                    table.add_row(vec![
                        r.id.clone(),
                        crate::api::section_name(r.section).to_string(),
                        r.rule.clone(),
                        if r.origin == "api" {
                            format!("api ({})", r.added_by)
                        } else {
                            r.origin.clone()
                        },
                    ]);
                }
                if !listed.is_empty() {
                    writeln!(out, "{}", table.trim_fmt())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            RulesCommand::Add {
                section,
                rule,
                comment,
            } => {
                let section = api_section(&section)?;
                match api
                    .add_rule(AddRuleRequest {
                        section: section as i32,
                        rule,
                        comment,
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        for w in &r.warnings {
                            eprintln!("{w}");
                        }
                        println!(
                            "{} (enforced in {} us{})",
                            r.id,
                            r.applied_micros,
                            provisional(r.confirm_before_unix)
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(status) => Ok(failed(&status)),
                }
            }
            RulesCommand::Rm { id } => match api.remove_rule(RemoveRuleRequest { id }).await {
                Ok(r) => {
                    let r = r.into_inner();
                    println!(
                        "removed (in {} us{})",
                        r.applied_micros,
                        provisional(r.confirm_before_unix)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(status) => Ok(failed(&status)),
            },
        }
    })
}

/// What a change's answer adds when it waits for confirmation (`confirm_before_unix`
/// not 0): `, provisionally: run ... before TIME`.
fn provisional(confirm_before_unix: u64) -> String {
    if confirm_before_unix == 0 {
        return String::new();
    }
    let until = std::time::UNIX_EPOCH + std::time::Duration::from_secs(confirm_before_unix);
    format!(
        ", provisionally: run `full_firewall confirm` before {}",
        humantime::format_rfc3339_seconds(until)
    )
}

/// A file to send, read as a regular file of at most what one request carries: a
/// device, a FIFO or a file too large is refused before any of it is held (`apply
/// /dev/zero` grew without bound).
fn request_file(path: &std::path::Path, sent: &mut usize) -> Result<Vec<u8>> {
    let limit = ironclad_api::server::MAX_POLICY_REQUEST_BYTES;
    let left = limit.saturating_sub(*sent) as u64;
    let bytes = ironclad_core::fsutil::read_regular_file(path, left).map_err(|e| match e {
        ironclad_core::fsutil::ReadFileError::TooLarge { .. } => anyhow::anyhow!(
            "{}: the request would pass the {} MiB the control API takes for a policy; write \
             the policy (or the bundle's directory) on the host and reload the daemon with \
             SIGHUP instead",
            path.display(),
            limit >> 20
        ),
        other => anyhow::Error::new(other).context(format!("reading {}", path.display())),
    })?;
    *sent += bytes.len();
    Ok(bytes)
}

/// A bundle directory's files by their path in it.
fn bundle_files(dir: &std::path::Path) -> Result<std::collections::HashMap<String, Vec<u8>>> {
    let mut sent = 0usize;
    let mut files = std::collections::HashMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                let name = rel
                    .to_str()
                    .with_context(|| format!("{}: not UTF-8", rel.display()))?
                    .to_string();
                let bytes = request_file(&path, &mut sent)?;
                files.insert(name, bytes);
            }
        }
    }
    Ok(files)
}

pub(crate) fn apply(args: ApplyArgs) -> Result<ExitCode> {
    let request = match (&args.policy, &args.bundle) {
        (Some(policy), _) => ironclad_api::v1::ApplyPolicyRequest {
            policy_yaml: String::from_utf8(request_file(policy, &mut 0)?)
                .with_context(|| format!("{}: not UTF-8", policy.display()))?,
            ..Default::default()
        },
        (None, Some(bundle)) => ironclad_api::v1::ApplyPolicyRequest {
            bundle_files: bundle_files(bundle)?,
            ..Default::default()
        },
        (None, None) => anyhow::bail!("give a policy file or --bundle DIR"),
    };
    runtime()?.block_on(async move {
        let mut api = args.connect.connect().await?;
        match api.apply_policy(request).await {
            Ok(r) => {
                let r = r.into_inner();
                for w in &r.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "applied in {} us{}",
                    r.applied_micros,
                    provisional(r.confirm_before_unix)
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(status) => Ok(failed(&status)),
        }
    })
}

pub(crate) fn events(args: EventsArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let mut api = args.connect.connect().await?;
        let mut stream = match api
            .stream_events(StreamEventsRequest {
                kinds: args.kind.clone(),
                pid: args.pid.unwrap_or(0),
                exe: args.exe.clone().unwrap_or_default(),
                rule_id: args.rule_id.unwrap_or(0),
                queue: 0,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) => return Ok(failed(&status)),
        };
        let mut seen = 0u64;
        let mut out = std::io::stdout().lock();
        loop {
            let item = match stream.message().await {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(ExitCode::SUCCESS),
                Err(status) => return Ok(failed(&status)),
            };
            match item.item {
                Some(stream_events_response::Item::Event(e)) => {
                    writeln!(out, "{}", e.json)?;
                    out.flush()?;
                    seen += 1;
                    if args.count.is_some_and(|n| seen >= n) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Some(stream_events_response::Item::Lost(l)) => {
                    eprintln!("{} events lost so far (this reader fell behind)", l.total);
                }
                None => {}
            }
        }
    })
}
