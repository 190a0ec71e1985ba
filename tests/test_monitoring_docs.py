"""docs/monitoring.md and docs/grafana-dashboard.json are used as they are (pasted into
Prometheus, imported into Grafana): their YAML and JSON must parse into what those tools take,
and every metric they query, with every label they select on, must be one the reference
section of docs/monitoring.md lists (the metrics contract the hub and runner implement)."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "monitoring.md"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
REFERENCE = "## Reference: the metrics"
# Metric names: the project's, and the standard ones the reference lists at its end.
METRIC = re.compile(r"\b(?:semaphore|process|python)_[a-z0-9_]+\b|\bup\b(?=\s*\{)")
SELECTOR = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\{([^}]*)\}")
# Labels every series has (Prometheus adds them), and a histogram's buckets have.
TARGET_LABELS = {"job", "instance"}
SERIES_SUFFIXES = {"_bucket": "histogram", "_sum": "histogram", "_count": "histogram"}


def doc_parts() -> tuple[str, str]:
    """The doc before its reference section, and the reference section."""
    text = DOC.read_text()
    assert REFERENCE in text, f"docs/monitoring.md has no {REFERENCE!r} section"
    head, reference = text.split(REFERENCE, 1)
    return head, reference


def reference_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names) of every row of the reference's tables."""
    metrics: dict[str, tuple[str, set[str]]] = {}
    for line in doc_parts()[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 4 or cells[0] in ("name", "---"):
            continue
        # "app, status (success, error, stopped)": the names before each parenthesis.
        labels = {label.strip() for label in re.sub(r"\([^)]*\)", "", cells[2]).split(",")
                  if label.strip()}
        # "semaphore_tasks_running, semaphore_tasks_total{status}": labels may be in braces.
        for name, braced in re.findall(r"([a-z_][a-z0-9_]*)(?:\{([^}]*)\})?", cells[0]):
            metrics[name] = (cells[1], labels | {b.strip() for b in braced.split(",") if b})
    return metrics


def yaml_blocks() -> list:
    head, _ = doc_parts()
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", head, re.S)]


def known(name: str, metrics: dict[str, tuple[str, set[str]]]) -> tuple[str, set[str]] | None:
    """The reference's row for a series name (a histogram's _bucket/_sum/_count included)."""
    if name in metrics:
        return metrics[name]
    for suffix, kind in SERIES_SUFFIXES.items():
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and base in metrics and kind in metrics[base][0]:
            kind_, labels = metrics[base]
            return kind_, labels | ({"le"} if suffix == "_bucket" else set())
    return None


def unknown_uses(text: str, metrics: dict[str, tuple[str, set[str]]]) -> list[str]:
    """The metrics, and the labels in selectors, of a text that the reference lacks."""
    problems = [f"metric {name}" for name in sorted(set(METRIC.findall(text)))
                if known(name, metrics) is None]
    for name, matchers in SELECTOR.findall(text):
        row = known(name, metrics)
        if row is None:
            continue
        for label in re.findall(r"([a-z_][a-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if label not in row[1] | TARGET_LABELS:
                problems.append(f"label {label} of {name}")
    return problems


def promql_of_rules(rules_doc: dict) -> list[str]:
    return [rule["expr"] for group in rules_doc["groups"] for rule in group["rules"]]


def test_the_reference_is_the_contract():
    """The reference section holds the contract's tables: every name of the contract's first
    cells is in it, with its type."""
    metrics = reference_metrics()
    assert metrics["semaphore_hub_dispatch_latency_seconds"][0] == "histogram"
    assert metrics["semaphore_hub_runners"][1] == {"state", "scope"}
    assert metrics["semaphore_hub_tasks_finished_total"][1] == {"app", "status"}
    assert {"semaphore_tasks_running", "semaphore_tasks_total", "semaphore_runner_connected",
            "semaphore_runner_heartbeats_sent_total", "semaphore_hub_ready"} <= set(metrics)
    assert len([name for name in metrics if name.startswith("semaphore_")]) >= 36


def test_the_scrape_config_scrapes_the_hub_with_its_token_and_the_runners():
    scrape = next(block for block in yaml_blocks() if "scrape_configs" in block)
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    hub = jobs["semaphore-hub"]
    assert hub["metrics_path"] == "/metrics"
    assert hub["authorization"]["type"] == "Bearer"
    assert hub["authorization"].get("credentials_file") or hub["authorization"].get("credentials")
    runners = jobs["semaphore-runners"]
    assert runners["metrics_path"] == "/metrics"
    for job in jobs.values():
        assert all(":" in target for config in job["static_configs"]
                   for target in config["targets"])
    assert '"scrape_token"' in doc_parts()[0] and "health_addr" in doc_parts()[0]


def test_the_alert_rules_parse_into_five_alerts_each_complete():
    rules_doc = next(block for block in yaml_blocks() if "groups" in block)
    rules = [rule for group in rules_doc["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in rules}
    assert len(rules) == len(names) == 5, names
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                             "annotations"}, rule
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert rule["annotations"]["summary"], rule
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        # Balanced brackets: the expressions are pasted as they are.
        for opening, closing in ("()", "[]", "{}"):
            assert rule["expr"].count(opening) == rule["expr"].count(closing), rule


def test_the_grafana_dashboard_is_an_importable_dashboard():
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 30
    assert dashboard["title"] and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"}, panel
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in "hwxy"), panel
        assert 0 < grid["w"] and grid["x"] + grid["w"] <= 24, panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target
    # The panels the dashboard is for.
    queries = " ".join(t["expr"] for panel in panels for t in panel["targets"])
    for wanted in ("semaphore_hub_runners", "semaphore_hub_queue_waiting_tasks",
                   "semaphore_hub_queue_oldest_waiting_seconds",
                   "histogram_quantile(0.5, sum by (le, stage) "
                   "(rate(semaphore_hub_dispatch_latency_seconds_bucket",
                   "histogram_quantile(0.99, sum by (le, stage) "
                   "(rate(semaphore_hub_dispatch_latency_seconds_bucket",
                   "semaphore_hub_tasks_finished_total", "semaphore_hub_output_bytes_total",
                   "semaphore_hub_event_loop_lag",
                   'process_cpu_seconds_total{job="semaphore-runners"}',
                   'process_resident_memory_bytes{job="semaphore-runners"}'):
        assert wanted in queries, wanted


def test_every_metric_and_label_used_is_in_the_reference():
    metrics = reference_metrics()
    head, _ = doc_parts()
    rules_doc = next(block for block in yaml_blocks() if "groups" in block)
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard_queries = "\n".join(t["expr"] for panel in dashboard["panels"]
                                  for t in panel["targets"])
    # Not vacuous: the texts use many metrics.
    assert len(set(METRIC.findall(head))) >= 6
    assert len(set(METRIC.findall(dashboard_queries))) >= 10
    problems = [f"docs/monitoring.md: {p}" for p in unknown_uses(head, metrics)]
    problems += [f"alert rules: {p}" for p in
                 unknown_uses("\n".join(promql_of_rules(rules_doc)), metrics)]
    problems += [f"grafana-dashboard.json: {p}" for p in
                 unknown_uses(dashboard_queries, metrics)]
    problems += [f"grafana-dashboard.json: {p}" for p in
                 unknown_uses(DASHBOARD.read_text(), metrics)]
    assert not problems, "\n".join(problems)
    # And the checks bite: a name or a label not in the reference is found.
    assert unknown_uses("rate(semaphore_hub_no_such_total[5m])", metrics)
    assert unknown_uses('semaphore_hub_runners{runner_id="3"}', metrics)
    assert not unknown_uses('semaphore_hub_runners{state="offline", job="x"}', metrics)
