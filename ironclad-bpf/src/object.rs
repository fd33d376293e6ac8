//! The BPF objects compiled from `bpf-src/` and embedded in the binary.
//!
//! `build.rs` compiles every `bpf-src/*.bpf.c` with clang (CO-RE, `-target bpf`) through
//! libbpf-cargo and embeds the resulting ELF here with `include_bytes!`: nothing is read
//! from disk at run time.

/// Wrapper that gives embedded bytes the 8-byte alignment ELF parsing needs.
#[repr(C, align(8))]
pub(crate) struct Aligned<T: ?Sized>(pub(crate) T);

/// One compiled BPF object (ELF), embedded in the binary.
#[derive(Debug)]
pub struct EmbeddedObject {
    name: &'static str,
    elf: &'static [u8],
    fallback: Option<&'static EmbeddedObject>,
}

impl EmbeddedObject {
    pub(crate) const fn new(
        name: &'static str,
        elf: &'static [u8],
        fallback: Option<&'static EmbeddedObject>,
    ) -> Self {
        Self {
            name,
            elf,
            fallback,
        }
    }

    /// The same source built for older kernels (with `IC_COMPAT`), if the object has
    /// one: the loader loads it, under the same name and pins, where the running kernel
    /// lacks what this build needs ([`crate::kernel`]).
    pub fn fallback(&self) -> Option<&'static EmbeddedObject> {
        self.fallback
    }

    /// The object's name: its source file `bpf-src/<name>.bpf.c` without the suffix.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The ELF bytes exactly as they are handed to libbpf.
    pub fn elf(&self) -> &'static [u8] {
        self.elf
    }
}

mod generated {
    include!(concat!(env!("OUT_DIR"), "/objects.rs"));
}

/// The Shield's XDP object (`bpf-src/shield.bpf.c`).
pub fn shield() -> &'static EmbeddedObject {
    &generated::SHIELD
}

/// The TLS capture object (`bpf-src/tls.bpf.c`).
pub fn tls() -> &'static EmbeddedObject {
    &generated::TLS
}

/// The identity firewall object (`bpf-src/egress.bpf.c`).
pub fn egress() -> &'static EmbeddedObject {
    &generated::EGRESS
}

/// The telemetry object (`bpf-src/telemetry.bpf.c`).
pub fn telemetry() -> &'static EmbeddedObject {
    &generated::TELEMETRY
}

/// The Sentinel's BPF-LSM object (`bpf-src/sentinel.bpf.c`).
pub fn sentinel() -> &'static EmbeddedObject {
    &generated::SENTINEL
}

/// The process monitor (`bpf-src/process.bpf.c`): exec, fork and exit of every process.
pub fn process() -> &'static EmbeddedObject {
    &generated::PROCESS
}

/// An XDP program that passes every frame and does nothing else
/// (`bpf-src/baseline.bpf.c`): the reference benchmarks subtract.
pub fn baseline() -> &'static EmbeddedObject {
    &generated::BASELINE
}

/// The stateful firewall object (`bpf-src/firewall.bpf.c`).
pub fn firewall() -> &'static EmbeddedObject {
    &generated::FIREWALL
}

/// The packet scrubber (`bpf-src/scrub.bpf.c`): TTL, MSS, DF and IP ID normalisation.
pub fn scrub() -> &'static EmbeddedObject {
    &generated::SCRUB
}

/// The quarantine (`bpf-src/quarantine.bpf.c`): IOC sources tagged or redirected.
pub fn quarantine() -> &'static EmbeddedObject {
    &generated::QUARANTINE
}

/// Every object embedded in this build.
pub fn all() -> [&'static EmbeddedObject; 10] {
    [
        shield(),
        firewall(),
        scrub(),
        quarantine(),
        process(),
        tls(),
        egress(),
        telemetry(),
        sentinel(),
        baseline(),
    ]
}

/// Deliberately bad objects used by the audit tests (feature `test-objects`).
#[cfg(feature = "test-objects")]
pub mod test_objects {
    use super::EmbeddedObject;

    /// `bpf-src/tests/audit_forbidden.bpf.c`: calls `bpf_probe_write_user` directly and
    /// `bpf_send_signal` from a non-inlined subprogram. Must never load.
    pub fn audit_forbidden() -> &'static EmbeddedObject {
        &super::generated::AUDIT_FORBIDDEN
    }
}
