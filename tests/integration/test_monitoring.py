"""What operators watch: the alert rules (PrometheusRule ``cocreate-alerts``) and the Grafana dashboard.

The set of metric names the platform exports is derived from the code, never written down here:
every prometheus-client metric declared in ``services.kernel.metrics`` (with the sample suffixes
the exposition gives it: ``_total`` for counters, ``_bucket``/``_sum``/``_count`` for histograms),
plus the scrape-time domain gauges each service definition's ``collectors(container)`` returns
(collected for real, on an empty SQLite database). The dashboard may reference only those; the
alerts may also use ``up`` and kube-state-metrics. Metric names are read out of the PromQL by a
small tokenizer (strings, label matchers, ranges and grouping labels removed; every identifier
left must be a PromQL function or keyword, or it is a metric name).

The rules are checked with ``promtool check rules`` and unit-tested with ``promtool test rules``
(``alerts-test.yaml``), where every alert must have a case in which it fires and one in which it
stays quiet. The dashboard's queries are syntax-checked by promtool too.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "k8s" / "base" / "monitoring"
RULE_FILE = MONITORING / "prometheusrule.yaml"
ALERT_TESTS = MONITORING / "alerts-test.yaml"
DASHBOARD = MONITORING / "dashboard.json"
PROMTOOL_HINT = "Debian package prometheus; .ci/run installs it"

# Outside the platform's own metrics, alerts may use Prometheus' scrape health and these
# kube-state-metrics series; the dashboard may not (it shows what the code exports).
SCRAPE_METRICS = {"up"}
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_unavailable", "kube_pod_status_ready"}
# ... and these of the database pods: CloudNativePG's exporter and its Barman Cloud plugin's sidecar.
DATABASE_METRICS = {"barman_cloud_cloudnative_pg_io_last_available_backup_timestamp", "cnpg_pg_stat_archiver_failed_count"}
SEVERITIES = {"critical", "warning", "info"}

# -- PromQL: just enough of it to tell metric names from everything else -----------------------

PROMQL_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
}
PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor",
    "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "double_exponential_smoothing", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin",
    "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
    "unless", "atan2", "le", "inf", "nan", "Inf", "NaN",
}
PROMQL_WORDS = PROMQL_AGGREGATIONS | PROMQL_FUNCTIONS | PROMQL_KEYWORDS

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier not glued to a number (1e3, 15m), a template variable ($namespace) or a decimal.
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
# The brief form: a cocreate_ name followed by a matcher, a range, a closing parenthesis or a space.
_COCREATE_NAME = re.compile(r"\b(cocreate_[A-Za-z0-9_:]*)(?=[{\[)\s]|$)")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, unknown function names) referenced by a PromQL expression."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _GROUPING.sub(lambda m: f"{m.group(1)}()", text)
    names, unknown_functions = set(), set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if word in PROMQL_WORDS:
            continue
        if text[match.end():].lstrip().startswith("("):
            unknown_functions.add(word)
        else:
            names.add(word)
    return names, unknown_functions


def grafana_query_names(query: str) -> tuple[set[str], set[str]]:
    """Names in a template variable's query: ``label_values(<selector>, label)`` or plain PromQL."""
    query = query.strip()
    match = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)", query, re.S)
    if match:
        return promql_names(match.group(1))
    if re.fullmatch(r"label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)", query):
        return set(), set()
    return promql_names(query)


@pytest.mark.parametrize(("expr", "names", "unknown"), [
    ('sum by (app, le) (rate(cocreate_a_bucket{app="x", route!~"/healthz|/readyz"}[5m]))',
     {"cocreate_a_bucket"}, set()),
    ("histogram_quantile(0.99, sum(rate(cocreate_a_bucket[$__rate_interval])) by (le))", {"cocreate_a_bucket"}, set()),
    ('foo / on (app) group_left (team) cocreate_b offset 10m > 1e3', {"foo", "cocreate_b"}, set()),
    ('max by (namespace) (cocreate_c{namespace=~"$namespace"}) > 0 and up == 0', {"cocreate_c", "up"}, set()),
    ("cocreate_d unless cocreate_d offset 15m", {"cocreate_d"}, set()),
    ('label_replace(cocreate_e, "dst", "$1 cocreate_nope", "src", "(.*)")', {"cocreate_e"}, set()),
    ("sum(made_up(cocreate_f))", {"cocreate_f"}, {"made_up"}),
    ("topk(10, sum by (route) (rate(cocreate_g_total[5m]))) / 60", {"cocreate_g_total"}, set()),
])
def test_the_promql_tokenizer(expr, names, unknown):
    assert promql_names(expr) == (names, unknown)


def test_the_template_query_reader():
    assert grafana_query_names('label_values(cocreate_x{namespace=~"$namespace"}, community)') == (
        {"cocreate_x"}, set())
    assert grafana_query_names("label_values(namespace)") == (set(), set())


# -- what the code exports ----------------------------------------------------------------------

def _sample_names(name: str, kind: str) -> set[str]:
    """The names of the samples a metric family of this type is exposed as (without ``_created``)."""
    if kind == "counter":
        return {name if name.endswith("_total") else f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count"}
    if kind == "info":
        return {f"{name}_info"}
    if kind in ("gauge", "stateset", "unknown"):
        return {name}
    raise AssertionError(f"metric {name}: type {kind} not understood by this test")


def _service_definitions():
    import services

    definitions = []
    for module in pkgutil.iter_modules(services.__path__):
        if not module.ispkg or module.name == "kernel":
            continue
        try:
            service = importlib.import_module(f"services.{module.name}.service")
        except ModuleNotFoundError as exc:
            if exc.name == f"services.{module.name}.service":
                continue
            raise
        definitions.append(service.DEFINITION)
    return definitions


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, set[str]]:
    """Metric family name -> the sample names it is exposed as, for everything the code exports."""
    from prometheus_client.metrics import MetricWrapperBase

    from services.kernel import metrics
    from services.kernel.service import bootstrap, load_settings

    families: dict[str, set[str]] = {}
    declared = [obj for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)]
    assert declared, "no prometheus-client metric found in services.kernel.metrics"
    for metric in declared:
        for family in metric.describe():
            families[family.name] = _sample_names(family.name, family.type)

    definitions = _service_definitions()
    assert {"projects", "volunteers", "feedback"} <= {d.name for d in definitions}
    for definition in definitions:
        directory = tmp_path_factory.mktemp(f"metrics-{definition.name}")
        settings = load_settings(definition, environ={}, database_url=f"sqlite:///{directory}/{definition.name}.db")
        container = bootstrap(definition, settings)
        try:
            for collector in definition.collectors(container):
                collected = list(collector.collect())
                # A QueryGauge whose query fails is silently left out of the scrape: make that loud here.
                assert collected, f"{definition.name}: the collector {getattr(collector, 'name', collector)!r} " \
                                  "exported nothing on an empty database (its query fails)"
                for family in collected:
                    families[family.name] = _sample_names(family.name, family.type)
        finally:
            container.store.engine.dispose()
    return families


def _exported_names(exported) -> set[str]:
    return set().union(*exported.values())


def test_the_exported_set_is_derived_from_the_code(exported):
    names = _exported_names(exported)
    # Spot checks that the derivation works (one of each kind), not the list itself.
    assert {"cocreate_http_requests_total", "cocreate_http_request_duration_seconds_bucket",
            "cocreate_relay_lag_seconds", "cocreate_projects", "cocreate_followups_overdue"} <= names
    assert "cocreate_http_requests" not in names and "cocreate_http_request_duration_seconds" not in names
    assert all(name.startswith("cocreate_") for name in names), sorted(names)


# -- the PrometheusRule ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prometheus_rule() -> dict:
    documents = [d for d in yaml.safe_load_all(RULE_FILE.read_text(encoding="utf-8")) if d]
    assert len(documents) == 1, "prometheusrule.yaml holds exactly one object"
    return documents[0]


def _alerts(prometheus_rule) -> list[dict]:
    return [rule for group in prometheus_rule["spec"]["groups"] for rule in group["rules"]]


def test_the_rule_object(prometheus_rule):
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert prometheus_rule["kind"] == "PrometheusRule"
    metadata = prometheus_rule["metadata"]
    assert metadata["name"] == "cocreate-alerts"
    assert metadata["labels"] == {"app.kubernetes.io/part-of": "cocreate", "release": "prometheus"}
    groups = prometheus_rule["spec"]["groups"]
    assert groups and len({g["name"] for g in groups}) == len(groups)


def test_every_rule_is_a_documented_alert(prometheus_rule):
    alerts = _alerts(prometheus_rule)
    assert len(alerts) >= 8
    names = [rule.get("alert") for rule in alerts]
    assert all(names), "only alerting rules here (a recording rule would need tests of its own)"
    assert len(set(names)) == len(names), "alert names are unique"
    for rule in alerts:
        assert "record" not in rule, rule["alert"]
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule.get("expr", "").strip(), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{rule['alert']}: `for` is set explicitly"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: annotation {key} missing"
        assert "\n" not in annotations["runbook"].strip(), f"{rule['alert']}: the runbook is one line"


def test_alerts_reference_only_exported_metrics(prometheus_rule, exported):
    allowed = _exported_names(exported) | SCRAPE_METRICS | KUBE_STATE_METRICS | DATABASE_METRICS
    used = set()
    for rule in _alerts(prometheus_rule):
        names, unknown_functions = promql_names(rule["expr"])
        assert not unknown_functions, f"{rule['alert']}: unknown functions {unknown_functions}"
        assert names, f"{rule['alert']}: no metric in {rule['expr']!r}"
        assert names <= allowed, f"{rule['alert']}: not exported: {sorted(names - allowed)}"
        used |= names
    # The alerts the platform needs are all there (by the metrics they watch).
    for needed in ("cocreate_relay_lag_events", "cocreate_relay_lag_seconds", "cocreate_consumer_lag_messages",
                   "cocreate_consumer_messages_dead_lettered_total", "cocreate_http_requests_total",
                   "cocreate_http_request_duration_seconds_bucket", "cocreate_followups_overdue", "up",
                   "kube_deployment_status_replicas_unavailable"):
        assert needed in used, f"no alert watches {needed}"


def test_every_alert_has_a_firing_and_a_quiet_case(prometheus_rule):
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == ["rules.yaml"]
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts(prometheus_rule)}
    assert not (firing | quiet) - names, f"tests of alerts that do not exist: {sorted((firing | quiet) - names)}"
    assert not names - firing, f"alerts never shown firing in alerts-test.yaml: {sorted(names - firing)}"
    assert not names - quiet, f"alerts never shown quiet (exp_alerts: []) in alerts-test.yaml: {sorted(names - quiet)}"


def _promtool(*args: str, cwd: Path) -> str:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    done = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_and_tests_the_rules(prometheus_rule, tmp_path):
    require_tool("promtool", PROMTOOL_HINT)
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}, sort_keys=False, allow_unicode=True),
        encoding="utf-8")
    shutil.copy(ALERT_TESTS, tmp_path / "alerts-test.yaml")
    checked = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(_alerts(prometheus_rule))} rules found" in checked, checked
    tested = _promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert "SUCCESS" in tested and "FAILED" not in tested, tested


# -- scoped to the deployment's namespace; each alert links its runbook ---------------------------

BASE_NAMESPACE = "cocreate"  # what the base's expressions carry; each overlay replaces it with its own
OTHER_NAMESPACE = "shop"  # alerts-test.yaml's last case: another system's series, which fire nothing
RUNBOOKS = ROOT / "docs" / "operations.md"
RUNBOOK_URL = "https://github.com/haicang/cocreate/blob/main/docs/operations.md#"
K8S = ROOT / "deploy" / "k8s"


def _namespace_literals(expr: str) -> list[str]:
    """The single-quoted strings of an expression: only the namespace matchers' values may be."""
    return re.findall(r"'([^']*)'", expr)


def test_every_selector_is_scoped_to_the_namespace(prometheus_rule):
    """Every series an alert reads carries ``namespace='cocreate'`` (the value the overlays
    replace): no alert can see another namespace's `gateway`, `web` or `projects`."""
    for rule in _alerts(prometheus_rule):
        expr = rule["expr"]
        literals = _namespace_literals(expr)
        assert literals and set(literals) == {BASE_NAMESPACE}, f"{rule['alert']}: single-quoted strings {literals}"
        assert len(re.findall(r"\bnamespace\s*=\s*'cocreate'", expr)) == len(literals), rule["alert"]
        assert not re.search(r"\bnamespace\s*(!=|=~|!~|=\s*\")", expr), f"{rule['alert']}: another namespace matcher"
        names, _ = promql_names(expr)
        for name in names:
            for selector in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])\s*(\{{[^{{}}]*\}})?", expr):
                assert selector.group(1) and re.search(r"\bnamespace\s*=\s*'cocreate'", selector.group(1)), (
                    f"{rule['alert']}: {selector.group(0)!r} is not scoped to the namespace")


def test_each_overlay_scopes_the_alerts_to_its_own_namespace(prometheus_rule):
    """The overlays' `replacements` put their namespace into every selector: no 'cocreate' left
    over in staging, as many namespace matchers as in the base."""
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    base = {rule["alert"]: len(_namespace_literals(rule["expr"])) for rule in _alerts(prometheus_rule)}
    seen = set()
    for overlay in ("staging", "production"):
        done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        [rule_object] = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "PrometheusRule"]
        namespace = rule_object["metadata"]["namespace"]
        seen.add(namespace)
        rendered = {rule["alert"]: rule["expr"] for rule in _alerts(rule_object)}
        assert set(rendered) == set(base), overlay
        for alert, expr in rendered.items():
            literals = _namespace_literals(expr)
            assert literals == [namespace] * base[alert], f"{overlay}: {alert} is scoped to {literals}, not {namespace}"
    assert seen == {"cocreate", "cocreate-staging"}


def test_another_namespaces_series_would_fire_every_alert_in_ours(tmp_path, prometheus_rule):
    """alerts-test.yaml's case for another namespace proves the scoping only if its series are bad
    enough: moved into the namespace `cocreate`, they fire every alert (promtool then reports each
    alert's unexpected firing)."""
    require_tool("promtool", PROMTOOL_HINT)
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    [other] = [case for case in tests["tests"]
               if all(f'namespace="{OTHER_NAMESPACE}"' in s["series"] for s in case["input_series"])]
    names = {rule["alert"] for rule in _alerts(prometheus_rule)}
    assert {check["alertname"] for check in other["alert_rule_test"] if check.get("exp_alerts") == []} == names
    moved = yaml.safe_load(yaml.safe_dump(other).replace(f'namespace="{OTHER_NAMESPACE}"', f'namespace="{BASE_NAMESPACE}"'))
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}, sort_keys=False, allow_unicode=True),
        encoding="utf-8")
    (tmp_path / "moved-test.yaml").write_text(
        yaml.safe_dump({**{k: v for k, v in tests.items() if k != "tests"}, "tests": [moved]}, allow_unicode=True),
        encoding="utf-8")
    done = subprocess.run([require_tool("promtool", PROMTOOL_HINT), "test", "rules", "moved-test.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "FAILED" in output, output
    quiet = sorted(name for name in names if not re.search(rf"alertname: {name}\b", output))
    assert not quiet, f"moved into {BASE_NAMESPACE}, these alerts still do not fire: {quiet}"


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a Markdown heading: its text (inline code, emphasis and links
    reduced to their words) lower-cased, punctuation other than ``-`` and ``_`` dropped, spaces
    made hyphens; a repeated slug gets ``-1``, ``-2`` …"""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[`*]", "", text).lower()
    slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def test_the_slugs_are_githubs():
    seen: dict[str, int] = {}
    assert github_slug("The local platform (`make run`)", seen) == "the-local-platform-make-run"
    assert github_slug("Alerts and their runbooks", seen) == "alerts-and-their-runbooks"
    assert github_slug("On Kubernetes", seen) == "on-kubernetes"
    assert github_slug("On Kubernetes", seen) == "on-kubernetes-1"
    assert github_slug("CocreateHighLatencyP99", seen) == "cocreatehighlatencyp99"


def test_every_alert_links_its_runbook_section(prometheus_rule):
    """``runbook_url`` is the alert's own section of docs/operations.md (a heading named after the
    alert under "Alerts and their runbooks"), by the anchor GitHub gives that heading."""
    seen: dict[str, int] = {}
    anchors: dict[str, str] = {}
    section = None
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = github_slug(heading.group(2), seen)
        if len(heading.group(1)) == 2:
            section = heading.group(2)
        elif section == "Alerts and their runbooks":
            anchors[heading.group(2)] = slug
    for rule in _alerts(prometheus_rule):
        url = rule["annotations"].get("runbook_url", "")
        assert url.startswith(RUNBOOK_URL), f"{rule['alert']}: runbook_url {url!r}"
        assert rule["alert"] in anchors, f"{rule['alert']}: no section in docs/operations.md's runbooks"
        assert url == RUNBOOK_URL + anchors[rule["alert"]], f"{rule['alert']}: {url} is not its section"


# -- the Grafana dashboard ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _all_panels(panels):
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))


def _queries(dashboard):
    """(where, expr) for every panel target and every query variable."""
    for panel in _all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel['id']} {panel.get('title')!r} {target.get('refId')}", target["expr"]


def test_the_dashboard_shape(dashboard):
    assert dashboard["uid"] == "cocreate-platform"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Traffic", "Latency", "Errors", "Event pipeline", "Gateway", "Domain"]


def test_panels_have_unique_ids_and_queries(dashboard):
    panels = list(_all_panels(dashboard["panels"]))
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(set(ids)) == len(ids), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    data_panels = [p for p in panels if p["type"] != "row"]
    assert len(data_panels) >= 20
    for panel in data_panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        targets = panel.get("targets") or []
        assert any(str(t.get("expr", "")).strip() for t in targets), f"{where} has no target with an expr"
        for source in [panel.get("datasource"), *(t.get("datasource") for t in targets)]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, f"{where}: datasource {source}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where


def test_dashboard_references_only_exported_metrics(dashboard, exported):
    names = _exported_names(exported)
    used = set()
    queries = list(_queries(dashboard))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            queries.append((f"variable {variable['name']}", query))
    for where, expr in queries:
        found, unknown_functions = (grafana_query_names(expr) if where.startswith("variable")
                                    else promql_names(expr))
        assert not unknown_functions, f"{where}: unknown functions {unknown_functions} in {expr!r}"
        assert found, f"{where}: no metric in {expr!r}"
        assert found <= names, f"{where}: not exported by the code: {sorted(found - names)}"
        assert set(_COCREATE_NAME.findall(expr)) <= found
        used |= found
    # And the other way round: every family the code exports is on the dashboard somewhere.
    missing = sorted(family for family, samples in exported.items() if not samples & used)
    assert not missing, f"exported but on no dashboard panel: {missing}"


def test_dashboard_queries_are_valid_promql(dashboard, tmp_path):
    """promtool parses every query (Grafana's variables replaced by plausible values)."""
    require_tool("promtool", PROMTOOL_HINT)
    substitutions = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "6h",
                     "${datasource}": "", "$namespace": ".*", "$community": ".*"}
    rules = []
    for index, (where, expr) in enumerate(_queries(dashboard)):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: a variable this test does not know: {expr!r}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    (tmp_path / "dashboard-queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, allow_unicode=True), encoding="utf-8")
    checked = _promtool("check", "rules", "dashboard-queries.yaml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in checked, checked
