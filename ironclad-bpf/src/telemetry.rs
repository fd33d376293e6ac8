//! Telemetry: bytes per process and DNS queries at the socket layer
//! (`bpf-src/telemetry.bpf.c`).
//!
//! Sockets created in the watched cgroup are tagged with their owner at creation
//! (`cgroup/sock_create`); `cgroup_skb` hooks attribute every packet to that owner and
//! copy DNS payloads (UDP and TCP port 53) into a ring buffer, parsed in user space.
//! Sockets that existed before telemetry started have no owner and are not counted.
//!
//! ```no_run
//! use std::path::Path;
//! use ironclad_bpf::{Loader, Telemetry};
//! use ironclad_policy::telemetry::TelemetryPolicy;
//!
//! let loader = Loader::builder().build()?;
//! let mut policy = TelemetryPolicy::default();
//! policy.dns = true;
//! policy.bandwidth = true;
//! let telemetry = Telemetry::start(&loader, &policy, Path::new("/sys/fs/cgroup/unified"))?;
//! for sample in telemetry.bandwidth()? {
//!     println!("{} {:?}: {} bytes out", sample.pid, sample.comm, sample.tx_bytes);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Minimum kernel
//! `cgroup/sock_release`: 5.9; socket cookies in `cgroup/sock_create`: 5.9; ring
//! buffer: 5.8.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use ironclad_core::abi::{Bandwidth, ProcExe, TelemetryConfig};
use ironclad_events::{BandwidthSample, Event, Fanout};
use ironclad_policy::telemetry::TelemetryPolicy;
use libbpf_rs::Link;

use crate::error::{BpfError, Result};
use crate::events::{EventReader, EventSource};
use crate::loader::{LoadedObject, Loader};
use crate::names;

const HOOKS: &[&str] = &[
    names::telemetry::ic_sock_create,
    names::telemetry::ic_sock_release,
    names::telemetry::ic_skb_egress,
    names::telemetry::ic_skb_ingress,
];

/// Running telemetry. Dropping it detaches every hook; its maps (counters, process
/// table, loss counts) stay pinned under `<pin root>/telemetry/` for the next start and
/// for `status`.
#[derive(Debug)]
pub struct Telemetry {
    object: LoadedObject,
    /// The process-tracking tracepoints (links the kernel cannot detach).
    _tracepoints: Vec<Link>,
    /// The socket hooks on the cgroup, each with what the kernel should hold of it.
    hooks: Vec<(&'static str, Link, crate::attach::LinkWatch)>,
    cgroup: std::path::PathBuf,
    known_exes: HashMap<ProcExe, String>,
}

impl Telemetry {
    /// Audits and loads the programs, starts tracking processes (seeded from /proc),
    /// configures what to observe and attaches the socket hooks to `cgroup`.
    pub fn start(loader: &Loader, policy: &TelemetryPolicy, cgroup: &Path) -> Result<Self> {
        // Pinned maps: counters survive a restart, and `status` reads the losses.
        let object = loader.load(crate::object::telemetry())?;
        let tracepoints = object.attach_tracepoints(crate::procs::TRACEPOINTS)?;
        let known_exes = crate::procs::seed(&object)?;
        let config = TelemetryConfig {
            dns: u32::from(policy.dns),
            bandwidth: u32::from(policy.bandwidth),
        };
        object
            .map(names::telemetry::ic_telemetry_config)?
            .update(&0u32.to_ne_bytes(), &config.to_bytes())?;
        let dir = std::fs::File::open(cgroup).map_err(|source| BpfError::Io {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let mut hooks = Vec::with_capacity(HOOKS.len());
        for name in HOOKS {
            let result = object.program(name)?.attach_cgroup(dir.as_raw_fd());
            object.audit_log().result(
                crate::auditlog::AuditAction::Attach,
                "telemetry",
                &format!("{name} on {}", cgroup.display()),
                "",
                &result,
            );
            let link = result.map_err(|source| BpfError::Attach {
                program: (*name).to_string(),
                target: format!("cgroup {}", cgroup.display()),
                source: crate::error::KernelError::from_libbpf(source),
            })?;
            let watch = crate::attach::LinkWatch::of(&link);
            hooks.push((*name, link, watch));
        }
        Ok(Self {
            object,
            _tracepoints: tracepoints,
            hooks,
            cgroup: cgroup.to_path_buf(),
            known_exes,
        })
    }

    /// The socket hooks' link ids (as `bpftool link show` lists them), e.g. for the
    /// Sentinel to protect them.
    pub fn link_ids(&self) -> Result<Vec<u32>> {
        self.hooks
            .iter()
            .map(|(_, link, _)| crate::sentinel::link_id(link))
            .collect()
    }

    /// Checks the socket hooks against the kernel and puts back what was undone from
    /// outside (a link detached is attached anew, a program swapped into it is swapped
    /// out), each with an audit record (`repair`); one result per hook: `Ok(None)` all
    /// was well, `Ok(Some(what))` what was put back, an error what could not be.
    pub fn verify(&mut self) -> Vec<Result<Option<String>>> {
        let on = self.cgroup.display().to_string();
        let links = self
            .hooks
            .iter_mut()
            .map(|(name, link, watch)| (*name, format!("{name} on {on}"), link, watch));
        crate::attach::verify_links(
            &self.object,
            "telemetry",
            links,
            crate::attach::cgroup_attacher(&self.cgroup),
        )
    }

    fn exe_path(&self, pid: u32, exe: &ProcExe) -> Option<String> {
        self.known_exes.get(exe).cloned().or_else(|| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .map(|p| p.display().to_string())
        })
    }

    /// Bytes and packets of every process seen so far, with its comm and executable
    /// when known (stamped with the current time).
    pub fn bandwidth(&self) -> Result<Vec<BandwidthSample>> {
        let counters = self.object.map(names::telemetry::ic_bandwidth)?;
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let mut out = Vec::new();
        for key in counters.keys() {
            let Some(pid) = key
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
            else {
                continue;
            };
            let Some(bw) = counters
                .lookup(&key)?
                .and_then(|v| Bandwidth::from_bytes(&v))
            else {
                continue;
            };
            let len = bw.comm.iter().position(|c| *c == 0).unwrap_or(16);
            let comm = (len > 0).then(|| String::from_utf8_lossy(&bw.comm[..len]).into_owned());
            let exe = (bw.exe != ProcExe::default())
                .then(|| self.exe_path(pid, &bw.exe))
                .flatten();
            out.push({
                let mut ev = BandwidthSample::default();
                ev.time = time.clone();
                ev.pid = pid;
                ev.comm = comm;
                ev.exe = exe;
                ev.tx_bytes = bw.tx_bytes;
                ev.tx_packets = bw.tx_packets;
                ev.tx_payload = bw.tx_payload;
                ev.rx_bytes = bw.rx_bytes;
                ev.rx_packets = bw.rx_packets;
                ev.rx_payload = bw.rx_payload;
                ev
            });
        }
        out.sort_by_key(|s| s.pid);
        Ok(out)
    }

    /// The traffic of process `pid`, if it has any.
    pub fn bandwidth_of(&self, pid: u32) -> Result<Option<BandwidthSample>> {
        Ok(self.bandwidth()?.into_iter().find(|s| s.pid == pid))
    }

    /// Name of the BPF object (and of its pin directory).
    pub const OBJECT: &'static str = "telemetry";

    /// DNS records lost for lack of ring-buffer space, read from the pinned maps under
    /// `pin_root` without loading anything.
    pub fn lost_dns_events_from_pins(pin_root: &Path) -> Result<u64> {
        use libbpf_rs::{MapCore, MapFlags, MapHandle};
        let path = pin_root
            .join(Self::OBJECT)
            .join(names::telemetry::ic_telemetry_stats);
        let map = MapHandle::from_pinned_path(&path).map_err(|e| BpfError::Pin {
            what: "map ic_telemetry_stats".to_string(),
            path: path.clone(),
            reason: e.to_string(),
            source: Some(crate::error::KernelError::from_libbpf(e)),
        })?;
        Ok(map
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|source| BpfError::Map {
                op: "lookup",
                map: names::telemetry::ic_telemetry_stats.to_string(),
                source: crate::error::KernelError::from_libbpf(source),
            })?
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
            .map(u64::from_ne_bytes)
            .sum())
    }

    /// DNS records the ring buffer had no room for, summed over CPUs.
    pub fn lost_dns_events(&self) -> Result<u64> {
        self.object
            .map(names::telemetry::ic_telemetry_stats)?
            .sum_percpu_u64(&0u32.to_ne_bytes())
    }

    /// The DNS ring buffer with its executable-path enrichment, to read together with
    /// other sources in one [`EventReader`].
    pub fn event_source(&self) -> Result<EventSource> {
        let mut known: HashMap<(u32, u64), String> = self
            .known_exes
            .iter()
            .map(|(id, path)| ((id.dev, id.ino), path.clone()))
            .collect();
        let enrich = Box::new(move |event: &mut Event| {
            if let Event::Dns(d) = event {
                let d = &mut d.actor;
                let key = (d.exe_dev, d.exe_ino);
                if key != (0, 0) && !known.contains_key(&key) {
                    // Learn the path while the process still runs.
                    if let Ok(path) = std::fs::read_link(format!("/proc/{}/exe", d.pid)) {
                        if known.len() > 65_536 {
                            known.clear();
                        }
                        known.insert(key, path.display().to_string());
                    }
                }
                d.exe = known.get(&key).cloned();
            }
        });
        Ok(EventSource::new(
            self.object.map(names::telemetry::ic_dns_events)?.handle()?,
            names::telemetry::ic_dns_events,
            Some(enrich),
        ))
    }

    /// Opens the DNS ring buffer alone; each record is published to `fanout`.
    pub fn events(&self, fanout: Arc<Fanout<Event>>) -> Result<EventReader> {
        EventReader::new(vec![self.event_source()?], fanout)
    }
}
