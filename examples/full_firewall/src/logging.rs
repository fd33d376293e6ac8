//! Logging: `tracing` events as one line each on stderr, in a form journald understands.
//!
//! A line reads `full_firewall: message` (`full_firewall: warning: …`, `full_firewall:
//! error: …` above info). Under systemd (stderr is the journal stream named by
//! `$JOURNAL_STREAM`) each line starts with its syslog priority (`<6>`, `<4>`, `<3>`), so
//! `journalctl -p warning` works; the journal adds its own timestamps. `IRONCLAD_LOG`
//! sets the level: `error`, `warn`, `info` (default), `debug` or `trace`.

use std::fmt;
use std::os::fd::AsFd;

use rustix::fs::fstat;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
pub(crate) fn init() {
    let level = match std::env::var("IRONCLAD_LOG").as_deref() {
        Ok("error") => Level::ERROR,
        Ok("warn") => Level::WARN,
        Ok("debug") => Level::DEBUG,
        Ok("trace") => Level::TRACE,
        _ => Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(level)
        .event_format(Line {
            journal: stderr_is_journal(),
        })
        .init();
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
    fn journal_stream_names_device_and_inode() {
        assert!(names_stream("64768:1234", 64768, 1234));
        assert!(!names_stream("64768:1235", 64768, 1234));
        assert!(!names_stream("1:1234", 64768, 1234));
        assert!(!names_stream("garbage", 64768, 1234));
        assert!(!names_stream("", 0, 0));
    }
}
