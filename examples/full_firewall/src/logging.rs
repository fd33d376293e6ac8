//! Logging: `tracing` events as one line each on stderr, as text journald understands
//! or as JSON for a log collector.
//!
//! Text (`--log-format text`, the default): a line reads `full_firewall: message`
//! (`full_firewall: warning: …`, `full_firewall: error: …` above info), then the event's
//! fields. Under systemd (stderr is the journal stream named by `$JOURNAL_STREAM`) each
//! line starts with its syslog priority (`<6>`, `<4>`, `<3>`), so `journalctl -p
//! warning` works; the journal adds its own timestamps.
//!
//! JSON (`--log-format json`): one object per line with `timestamp` (RFC 3339, UTC),
//! `level`, `target` and `fields` (`message` and the event's own fields, e.g. the audit
//! records' `action`, `object`, `outcome`).
//!
//! `IRONCLAD_LOG` takes `tracing` filter directives: a level (`error`, `warn`, `info`
//! (default), `debug`, `trace`), and per target (`info,ironclad::audit=warn`). A value
//! that does not parse, or a bare word that is neither a level nor one of this
//! program's targets (a typo such as `infoo`), is reported on the first log line.

use std::fmt;
use std::os::fd::AsFd;

use rustix::fs::fstat;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// `full_firewall: message`, with syslog priorities under systemd.
    Text,
    /// One JSON object per line.
    Json,
}

/// The level names a bare directive may be.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The filter from `IRONCLAD_LOG` (`None`: unset), and what is wrong with the value.
fn filter(value: Option<&str>, default: &str) -> (EnvFilter, Option<String>) {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return (EnvFilter::new(default), None);
    };
    match EnvFilter::try_new(value) {
        Err(e) => (
            EnvFilter::new("info"),
            Some(format!(
                "IRONCLAD_LOG=`{value}` is not a filter ({e}); logging at info"
            )),
        ),
        Ok(filter) => {
            // A bare word parses as a target: say so when it is no level and names none
            // of this program's targets.
            let unknown: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && !d.contains(['=', '[', ':']))
                .filter(|d| {
                    !LEVELS.contains(&d.to_ascii_lowercase().as_str())
                        && !d.starts_with("ironclad")
                        && !d.starts_with("full_firewall")
                })
                .collect();
            if unknown.is_empty() {
                return (filter, None);
            }
            let problem = format!(
                "IRONCLAD_LOG: `{}` is neither a level ({}) nor a target of this program \
                 (ironclad…, full_firewall…)",
                unknown.join("`, `"),
                LEVELS.join(", ")
            );
            // Without a level of its own the filter would log nothing else: info, then
            // what the value says.
            let has_level = value
                .split(',')
                .any(|d| LEVELS.contains(&d.trim().to_ascii_lowercase().as_str()));
            if has_level {
                (filter, Some(problem))
            } else {
                let with_info = EnvFilter::try_new(format!("info,{value}")).unwrap_or(filter);
                (
                    with_info,
                    Some(format!("{problem}; logging at info otherwise")),
                )
            }
        }
    }
}

/// Formats one event as `[<N>]full_firewall: [level: ]message fields`.
struct Line {
    journal: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.journal {
            write!(writer, "<{}>", syslog_priority(level))?;
        }
        write!(writer, "full_firewall: ")?;
        match level {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The syslog priority journald reads from a `<N>` prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// True when stderr is the journal stream systemd connected (`$JOURNAL_STREAM` is
/// `DEVICE:INODE` of it).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    names_stream(&stream.to_string_lossy(), stat.st_dev, stat.st_ino)
}

/// True when a `$JOURNAL_STREAM` value (`DEVICE:INODE`, decimal) names this file.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| {
        d.parse::<u64>().is_ok_and(|d| d == dev) && i.parse::<u64>().is_ok_and(|i| i == ino)
    })
}

/// Installs the stderr subscriber. Call once, first thing in `main`.
/// The log's format, once [`init`] ran.
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Diagnostics of a refused policy (`FILE:LINE:COLUMN: message` lines): as they are on
/// stderr with the text log, as compilers print them; one ERROR record holding them
/// with the JSON log, so a collector gets them with the line that says what they mean.
pub(crate) fn diagnostics(text: &str) {
    match FORMAT.get() {
        Some(LogFormat::Json) => tracing::error!(diagnostics = %text, "policy diagnostics"),
        _ => eprintln!("{text}"),
    }
}

/// Logs at `default` (`info`; the demo `warn`, its own output being what it shows)
/// unless `IRONCLAD_LOG` says otherwise.
pub(crate) fn init(format: LogFormat, default: &str) {
    let _ = FORMAT.set(format);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let (filter, problem) = filter(std::env::var("IRONCLAD_LOG").ok().as_deref(), default);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // The filter applies to the log lines only: progress follows the spans whatever
    // the log shows.
    let lines = match format {
        LogFormat::Text => lines
            .event_format(Line {
                journal: stderr_is_journal(),
            })
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(false)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(crate::progress::ProgressLayer)
        .init();
    // Written past the filter: a filter with a typo may well hide its own warning.
    if let Some(problem) = problem {
        let line = match format {
            LogFormat::Text => format!(
                "{}full_firewall: warning: {problem}",
                if stderr_is_journal() { "<4>" } else { "" }
            ),
            LogFormat::Json => serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": "WARN",
                "fields": {"message": problem},
                "target": module_path!(),
            })
            .to_string(),
        };
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
    }

    #[test]
    fn the_filter_takes_directives_and_names_typos() {
        assert!(filter(None, "info").1.is_none());
        assert!(filter(Some("warn"), "info").1.is_none());
        assert!(filter(Some("info,ironclad::audit=warn"), "info")
            .1
            .is_none());
        assert!(filter(Some("DEBUG,full_firewall=trace"), "info")
            .1
            .is_none());
        let typo = filter(Some("infoo"), "info").1.unwrap_or_default();
        assert!(typo.contains("`infoo` is neither a level"), "{typo}");
        let bad = filter(Some("info,ironclad=lots"), "info")
            .1
            .unwrap_or_default();
        assert!(bad.contains("is not a filter"), "{bad}");
    }

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(names_stream("64768:1234", 64768, 1234));
        assert!(!names_stream("64768:1235", 64768, 1234));
        assert!(!names_stream("1:1234", 64768, 1234));
        assert!(!names_stream("garbage", 64768, 1234));
        assert!(!names_stream("", 0, 0));
    }
}
