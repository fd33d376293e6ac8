"""Checks the Grafana dashboard against a live metrics page.

    grafana.py DASHBOARD.json METRICS.txt

The page is parsed with the Prometheus project's parser (prometheus_client); every
series a panel's query names must be on it, and every label it groups or filters by
(`by (rule)`, `{action="deny"}`) must be a label of that series. A renamed metric or
label fails the check instead of leaving an empty panel.
"""
import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

SERIES = re.compile(r"\b((?:ironclad|process)_[a-z_]+)\b(\{[^}]*\})?")
BY = re.compile(r"\bby \(([^)]*)\)")


def main() -> None:
    dashboard = json.load(open(sys.argv[1]))
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(open(sys.argv[2]).read()):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        sys.exit("grafana: panel ids repeat")
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            names = SERIES.findall(expr)
            if not names:
                sys.exit(f"grafana: `{panel['title']}`: no Ironclad series in {expr}")
            for name, selector in names:
                if name not in labels:
                    sys.exit(f"grafana: `{panel['title']}`: {name} is not on the metrics page")
                used = set(re.findall(r"(\w+)\s*=~?", selector or ""))
                for group in BY.findall(expr):
                    used |= {g.strip() for g in group.split(",") if g.strip()}
                # Labels the scraper adds, not the daemon.
                used -= {"instance", "job"}
                missing = used - labels[name]
                if missing and not any(missing <= labels[n] for n, _ in names):
                    sys.exit(f"grafana: `{panel['title']}`: {name} has no label {sorted(missing)}")
            checked += 1
    print(f"grafana dashboard: {len(dashboard['panels'])} panels, {checked} queries, every series and label on the page")


if __name__ == "__main__":
    main()
