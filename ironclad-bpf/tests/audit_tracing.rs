//! The audit log as `tracing` events.
//!
//! This test is alone in its own binary on purpose: `tracing` caches each
//! call site's interest process-wide, and a test in the same process that
//! reaches the audit call site while no subscriber is set can cache "never"
//! after this test's scoped subscriber was registered — the records then
//! vanish. CI saw that once with the test among the library's unit tests.

use std::sync::{Arc, Mutex};

use ironclad_bpf::auditlog::{AuditAction, AuditLog, NullSink, Outcome};

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_record_is_a_tracing_event_at_its_level() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let log = AuditLog::new(Arc::new(NullSink));
    tracing::subscriber::with_default(subscriber, || {
        log.record(AuditAction::Load, "shield", "", Outcome::Ok, "4 programs");
        log.record(
            AuditAction::Audit,
            "tls",
            "",
            Outcome::Refused,
            "probe_write_user",
        );
        log.record(
            AuditAction::MapUpdate,
            "shield",
            "ic_v4_fast",
            Outcome::Ok,
            "1 entry",
        );
    });
    let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "debug records stay below info: {text}");
    assert!(
        lines[0].contains("INFO")
            && lines[0].contains("ironclad::audit")
            && lines[0].contains("action=Load")
            && lines[0].contains("object=\"shield\"")
            && lines[0].contains("4 programs"),
        "{text}"
    );
    assert!(
        lines[1].contains("WARN") && lines[1].contains("outcome=Refused"),
        "{text}"
    );
}
