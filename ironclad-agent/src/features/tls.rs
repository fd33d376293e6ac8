//! TLS plaintext capture (uprobes on the TLS library) as an agent feature.

use ironclad_bpf::{EventSource, Loader, TlsMonitor};
use ironclad_policy::config::CompiledConfig;
use tracing::info;

use super::{Feature, Kind, Reloaded, Start};
use crate::{AgentError, Result};

pub(super) const KIND: Kind = Kind {
    name: "tls",
    configured: |config| config.tls.is_some(),
    start,
    with_the_agent_only: false,
};

fn start(start: &Start<'_>, config: &CompiledConfig) -> Result<Box<dyn Feature>> {
    let Some(policy) = &config.tls else {
        return Err(AgentError::NotConfigured { feature: "tls" });
    };
    let monitor = TlsMonitor::start(start.loader, policy).map_err(AgentError::bpf(KIND.name))?;
    info!(
        "tls capture on {}: {} scope entries, {} bytes per call",
        monitor.library().display(),
        policy.scope.len(),
        policy.max_bytes
    );
    Ok(Box::new(monitor))
}

impl Feature for TlsMonitor {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn describe(&self) -> String {
        format!("uprobes on {}", self.library().display())
    }

    fn reload(&mut self, config: &CompiledConfig) -> Result<Reloaded> {
        match &config.tls {
            Some(policy) => {
                self.configure(policy).map_err(AgentError::bpf(KIND.name))?;
                Ok(Reloaded::Applied("tls scope reloaded".to_string()))
            }
            None => Ok(Reloaded::Stop(
                "tls capture stopped: no tls section any more".to_string(),
            )),
        }
    }

    fn event_source(&self) -> Option<Result<EventSource>> {
        Some(TlsMonitor::event_source(self).map_err(AgentError::bpf(KIND.name)))
    }

    fn kernel_counters(&self) -> Result<Vec<(&'static str, u64)>> {
        let read = AgentError::bpf(KIND.name);
        Ok(vec![
            ("events_lost", self.lost_chunks().map_err(&read)?),
            ("withheld_bytes", self.withheld_bytes().map_err(&read)?),
        ])
    }

    fn stop(self: Box<Self>, _loader: &Loader, _detach: bool) -> Result<String> {
        // Nothing of TLS capture is pinned: its probes go with the monitor.
        TlsMonitor::stop(*self);
        Ok("tls capture stopped".to_string())
    }
}
