"""Checks the Kubernetes files, as kustomize renders them, and prints the DaemonSet's command.

    manifest.py BASE MONITORING CHANGED OUT

BASE is `kustomize build kubernetes/base` (its schema is checked by kubernetes-validate),
MONITORING `kustomize build kubernetes/monitoring` (the base plus a ServiceMonitor, a
CRD it has no schema for), CHANGED the base rendered again with a changed policy.yaml.
Checked here: the Service selects the DaemonSet's pods and names its metrics port, the
ServiceMonitor selects the Service and scrapes that port, the probes and the
prometheus.io annotations use the port --metrics listens on; the ConfigMap's name
carries its contents' hash and the DaemonSet mounts that name, so a changed policy is a
new ConfigMap and a new pod template (the rollout), while the overlay changes nothing
of the base. Written to OUT: the ConfigMap's policy.yaml; args.json, the container's
command and arguments with $(VAR) references left for the caller, so the test suite
runs the DaemonSet's exact command line; servicemonitor.json, the ServiceMonitor, whose
schema servicemonitor.mjs checks.
"""
import json
import os
import re
import sys

import yaml


def fail(msg: str) -> None:
    sys.exit(f"kubernetes files: {msg}")


def main() -> None:
    base_file, monitoring_file, changed_file, out = sys.argv[1:5]

    def load(path):
        return [d for d in yaml.safe_load_all(open(path)) if d]

    docs, overlay, changed = load(base_file), load(monitoring_file), load(changed_file)
    by_kind = {d["kind"]: d for d in docs}
    ds, svc, cm = by_kind["DaemonSet"], by_kind["Service"], by_kind["ConfigMap"]
    monitors = [d for d in overlay if d["kind"] == "ServiceMonitor"]
    if len(monitors) != 1:
        fail(f"the monitoring overlay holds {len(monitors)} ServiceMonitors, not one")
    [monitor] = monitors
    if [d for d in overlay if d["kind"] != "ServiceMonitor"] != docs:
        fail("the monitoring overlay changes the base (it must only add the ServiceMonitor)")

    # The checksum rollout: the ConfigMap's name carries a hash of its data and the
    # DaemonSet mounts it by that name, so a new policy changes the pod template.
    def policy_volume(daemonset):
        vols = [v for v in daemonset["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
        if len(vols) != 1:
            fail(f"the DaemonSet mounts {len(vols)} ConfigMaps, not one")
        return vols[0]["configMap"]["name"]

    name = cm["metadata"]["name"]
    if not re.fullmatch(r"ironclad-policy-[a-z0-9]{10}", name):
        fail(f"the ConfigMap `{name}` has no content hash in its name (configMapGenerator)")
    if policy_volume(ds) != name:
        fail(f"the DaemonSet mounts `{policy_volume(ds)}`, the ConfigMap is `{name}`")
    changed_kinds = {d["kind"]: d for d in changed}
    new_name = changed_kinds["ConfigMap"]["metadata"]["name"]
    if new_name == name:
        fail("a changed policy.yaml kept the ConfigMap's name: the pods would not roll")
    if policy_volume(changed_kinds["DaemonSet"]) != new_name:
        fail(f"with a changed policy the DaemonSet mounts `{policy_volume(changed_kinds['DaemonSet'])}`, not `{new_name}`")

    pod = ds["spec"]["template"]
    labels = pod["metadata"]["labels"]
    [container] = pod["spec"]["containers"]
    args = container["args"]
    metrics = [a.split("=", 1)[1] for a in args if a.startswith("--metrics=")]
    if len(metrics) != 1:
        fail("the container needs one --metrics=ADDR:PORT")
    port = int(metrics[0].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports.get("metrics") != port:
        fail(f"containerPort `metrics` is {ports.get('metrics')}, --metrics listens on {port}")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
        fail(f"prometheus.io annotations do not name port {port}: {ann}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("metrics", port):
            fail(f"{probe} must GET {path} on the metrics port: {get}")
    if not all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()):
        fail(f"the Service selector {svc['spec']['selector']} does not match the pods {labels}")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    if "metrics" not in svc_ports or svc_ports["metrics"]["targetPort"] not in ("metrics", port):
        fail(f"the Service has no `metrics` port to the pods': {svc['spec']['ports']}")
    if monitor["kind"] != "ServiceMonitor" or monitor["metadata"]["namespace"] != svc["metadata"]["namespace"]:
        fail("servicemonitor.yaml: a ServiceMonitor in the Service's namespace")
    want = monitor["spec"]["selector"]["matchLabels"]
    if not all(svc["metadata"]["labels"].get(k) == v for k, v in want.items()):
        fail(f"the ServiceMonitor selects {want}, the Service is labelled {svc['metadata']['labels']}")
    if [e["port"] for e in monitor["spec"]["endpoints"]] != ["metrics"]:
        fail("the ServiceMonitor must scrape the Service's `metrics` port")
    env = {e["name"] for e in container.get("env", [])}
    for ref in re.findall(r"\$\((\w+)\)", " ".join(args)):
        if ref not in env:
            fail(f"$({ref}) in the arguments is not in the container's env")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for need in ("/sys/fs/bpf", "/sys/kernel/security", "/sys/kernel/tracing", "/etc/ironclad"):
        if need not in mounts:
            fail(f"{need} is not mounted")
    with open(os.path.join(out, "policy.yaml"), "w") as f:
        f.write(cm["data"]["policy.yaml"])
    with open(os.path.join(out, "args.json"), "w") as f:
        json.dump(container["command"] + args, f)
    with open(os.path.join(out, "servicemonitor.json"), "w") as f:
        json.dump(monitor, f)
    print(f"kubernetes files: consistent (metrics port {port}, probes, Service, ServiceMonitor, mounts;"
          f" ConfigMap {name}, {new_name} after a policy change, the DaemonSet following it)")


if __name__ == "__main__":
    main()
