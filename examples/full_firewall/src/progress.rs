//! What a long operation is doing while it runs: a `tracing` layer follows the spans
//! the daemon and the library open around their long steps (`full_firewall.start`,
//! `full_firewall.reload`, `ironclad.policy.compile`, `ironclad.shield.replace`,
//! `ironclad.shield.plan`, `ironclad.shield.write`, `ironclad.load`, ...), and a
//! watcher thread reports a step that lasts:
//!
//! - in the log, once it has run `--progress-after` (1 s) and then every two seconds
//!   (`busy 2.0 s: full_firewall.reload > ironclad.shield.replace rules=1000001`);
//! - in the health report (`activity`), so `full_firewall status` shows it and the
//!   liveness probe knows the control loop is busy, not hung.
//!
//! It sees only spans, so it costs nothing between operations; the filter of the log
//! (`IRONCLAD_LOG`) does not hide them from it.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ironclad_agent::health::{Activity, Health};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{info, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A step is reported once it has run `--progress-after` (default 1 s), and again this
/// often in the log.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// The spans entered now, oldest first: (span, its label, when it was entered).
type Active = Arc<Mutex<Vec<(Id, String, Instant, SystemTime)>>>;

fn active() -> &'static Active {
    static ACTIVE: OnceLock<Active> = OnceLock::new();
    ACTIVE.get_or_init(Active::default)
}

/// A span's name and fields, as the report shows them.
struct Label(String);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

/// The layer that follows the daemon's and the library's spans.
pub(crate) struct ProgressLayer;

fn followed(name: &str) -> bool {
    name.starts_with("ironclad.") || name.starts_with("full_firewall.")
}

impl<S> Layer<S> for ProgressLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let name = attrs.metadata().name();
        if !followed(name) {
            return;
        }
        let mut label = name.to_string();
        attrs.record(&mut Fields(&mut label));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Label(label));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(label) = span.extensions().get::<Label>().map(|l| l.0.clone()) else {
            return;
        };
        active()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id.clone(), label, Instant::now(), SystemTime::now()));
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let mut active = active().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = active.iter().rposition(|(a, ..)| a == id) {
            active.remove(i);
        }
    }
}

/// The step running now, once it has run `after`: the chain of spans and when the
/// outermost began.
fn current(after: Duration) -> Option<(String, Instant, SystemTime)> {
    let active = active().lock().unwrap_or_else(PoisonError::into_inner);
    let (_, _, began, since) = active.first()?;
    if began.elapsed() < after {
        return None;
    }
    let steps: Vec<&str> = active.iter().map(|(_, label, ..)| label.as_str()).collect();
    Some((steps.join(" > "), *began, *since))
}

/// Starts the watcher: every quarter second (or `after`, if shorter) it puts a step
/// that has run `after` into `health` (and its file), and logs it every [`LOG_EVERY`].
pub(crate) fn watch(health: Health, after: Duration) {
    let tick = after.clamp(Duration::from_millis(20), Duration::from_millis(250));
    let spawned = std::thread::Builder::new()
        .name("progress".to_string())
        .spawn(move || {
            let mut last_log: Option<Instant> = None;
            let mut reported = false;
            loop {
                std::thread::sleep(tick);
                match current(after) {
                    Some((what, began, since)) => {
                        let elapsed = began.elapsed();
                        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                            info!("busy {:.1} s: {what}", elapsed.as_secs_f64());
                            last_log = Some(Instant::now());
                        }
                        health.activity(Some(Activity::new(what, since)));
                        reported = true;
                    }
                    None if reported => {
                        health.activity(None);
                        reported = false;
                        last_log = None;
                    }
                    None => {}
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("progress reports are off: {e}");
    }
}
