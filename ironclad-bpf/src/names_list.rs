// The maps, programs and BTF types of every embedded object, as `object_names!`
// invocations. Included twice: by `names.rs`, which makes each a constant, and by the
// workspace's `ironclad-bpf-check` crate, which checks each against the skeleton
// libbpf-cargo generates from the compiled object (a name renamed or removed in
// `bpf-src/` is a compile error there).

object_names! {
    /// `bpf-src/shield.bpf.c`: the Shield.
    shield = shield_skel::{
        ShieldMaps: [
            ic_totals, ic_v4_fast, ic_valve_v4, ic_v4_trie, ic_valve_v6, ic_v6_trie,
            ic_v4_book, ic_v4_spans, ic_v6_fast, ic_v6_book, ic_shield_active, ic_rule_info, ic_rule_counters, ic_shield_config,
            ic_rate_buckets, ic_sample_seq, ic_shield_events,
        ],
        ShieldProgs: [ic_shield_xdp],
        types: [
            ic_rule, ic_lpm_v4_key, ic_lpm_v6_key, ic_v4_block, ic_v4_span, ic_book_page,
            ic_v6_node,
        ],
    }
}

object_names! {
    /// `bpf-src/egress.bpf.c`: the identity firewall.
    egress = egress_skel::{
        EgressMaps: [
            ic_egress_config, ic_procs, ic_egress_rules0, ic_egress_rules1,
            ic_egress_index0, ic_egress_index1, ic_egress_counters, ic_egress_rule_keys,
            ic_egress_totals,
            ic_egress_rate, ic_egress_events, ic_egress_addr, ic_egress_ports, ic_egress_words,
            ic_egress_summaries, ic_egress_slots, ic_egress_dst, ic_egress_dst_trie,
            ic_egress_dst_lengths, ic_dns_config, ic_dns_names, ic_dns_rules, ic_dns_addrs,
            ic_dns_denied, ic_dns_socks, ic_dns_totals, ic_dns_feed_counters, ic_dns_work,
            ic_dns_patterns, ic_dns_feed_names, ic_dns_exe_paths, ic_dns_encrypted,
            ic_dns_seen_names, ic_dns_owners,
        ],
        EgressProgs: [
            ic_proc_exec, ic_proc_fork, ic_proc_exit, ic_connect4, ic_connect6,
            ic_sendmsg4, ic_sendmsg6, ic_dns_out, ic_dns_in,
        ],
    }
}

object_names! {
    /// `bpf-src/firewall.bpf.c`: the stateful firewall.
    firewall = firewall_skel::{
        FirewallMaps: [
            ic_fw_ct, ic_fw_config, ic_fw_totals, ic_fw_addr, ic_fw_ports, ic_fw_words, ic_fw_untranslated,
            ic_fw_summaries, ic_fw_rules, ic_fw_rule_counters, ic_fw_rate, ic_fw_default_log, ic_fw_events,
            ic_fw_syn_config, ic_fw_syn_ports, ic_fw_syn_state, ic_fw_syn_scratch,
            ic_fw_limit_config, ic_fw_limits, ic_nat_config, ic_nat_dnat, ic_nat_snat,
            ic_nat_map, ic_nat_counters, ic_nat_scratch, ic_ids_config, ic_ids_ports,
            ic_ids_flows, ic_ids_ring, ic_ids_prefixes, ic_ids_prefix_scratch,
        ],
        FirewallProgs: [ic_fw_in, ic_fw_out, ic_fw_syn, ic_fw_accept],
    }
}

object_names! {
    /// `bpf-src/scrub.bpf.c`: packet normalisation.
    scrub = scrub_skel::{
        ScrubMaps: [ic_scrub_config, ic_scrub_totals],
        ScrubProgs: [ic_scrub_out, ic_scrub_in],
    }
}

object_names! {
    /// `bpf-src/quarantine.bpf.c`: IOC sources tagged or redirected.
    quarantine = quarantine_skel::{
        QuarantineMaps: [ic_quarantine_v4, ic_quarantine_v6, ic_quarantine_totals],
        QuarantineProgs: [ic_quarantine_in, ic_quarantine_out],
    }
}

object_names! {
    /// `bpf-src/telemetry.bpf.c`: bandwidth and DNS.
    telemetry = telemetry_skel::{
        TelemetryMaps: [
            ic_sock_owners, ic_procs, ic_bandwidth, ic_telemetry_config,
            ic_telemetry_stats, ic_dns_events,
        ],
        TelemetryProgs: [
            ic_proc_exec, ic_proc_fork, ic_proc_exit, ic_sock_create, ic_sock_release,
            ic_skb_egress, ic_skb_ingress,
        ],
    }
}

object_names! {
    /// `bpf-src/tls.bpf.c`: TLS plaintext capture.
    tls = tls_skel::{
        TlsMaps: [
            ic_procs, ic_tls_inflight, ic_tls_scope_pid, ic_tls_scope_cgroup,
            ic_tls_scope_comm, ic_tls_scope_exe, ic_tls_config, ic_tls_budget,
            ic_tls_stats, ic_tls_events, ic_tls_starts, ic_tls_socks,
        ],
        TlsProgs: [
            ic_proc_exec, ic_tls_exec, ic_proc_fork, ic_tls_fork, ic_proc_exit,
            ic_ssl_write, ic_ssl_write_ex, ic_ssl_read, ic_ssl_read_ex, ic_ssl_write_ret,
            ic_ssl_write_ex_ret, ic_ssl_read_ret, ic_ssl_read_ex_ret, ic_tls_sock_read,
            ic_ssl_handshake, ic_ssl_handshake_ret,
        ],
    }
}

object_names! {
    /// `bpf-src/sentinel.bpf.c`: the Sentinel's BPF-LSM hooks.
    sentinel = sentinel_skel::{
        SentinelMaps: [
            ic_sentinel_nodes, ic_sentinel_objects, ic_sentinel_config, ic_sentinel_state,
            ic_sentinel_agent, ic_sentinel_events, ic_sentinel_lost,
        ],
        SentinelProgs: [
            ic_file_open, ic_file_permission, ic_path_truncate, ic_path_chmod,
            ic_path_chown, ic_inode_setxattr, ic_inode_removexattr, ic_inode_unlink,
            ic_inode_rmdir, ic_inode_rename, ic_inode_link, ic_inode_create,
            ic_inode_mkdir, ic_inode_mknod, ic_inode_symlink, ic_sb_mount, ic_move_mount,
            ic_bpf_map, ic_bpf, ic_netlink_send, ic_task_kill, ic_ptrace_access_check,
            ic_task_prctl,
            ic_task_free,
        ],
    }
}

object_names! {
    /// `bpf-src/process.bpf.c`: the process cache's exec/fork/exit records.
    process = process_skel::{
        ProcessMaps: [ic_process_events, ic_process_stats],
        ProcessProgs: [ic_process_exec, ic_process_fork, ic_process_exit],
    }
}
