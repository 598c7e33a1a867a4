"""Checks for what ships around clipd: systemd units, Debian package, Prometheus
rules, Alertmanager config, Grafana dashboard and the min-version pins.

Each check that needs an outside tool (systemd-analyze, promtool, amtool,
dpkg-buildpackage) skips with the tool's name when it is missing; `.ci/run`
installs all of them so CI skips nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
SERVICE = SYSTEMD / "clipd.service"
SOCKET = SYSTEMD / "clipd.socket"
SYSUSERS = SYSTEMD / "sysusers.d" / "clipd.conf"
TMPFILES = SYSTEMD / "tmpfiles.d" / "clipd.conf"
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "clipd.rules.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "clipd-dashboard.json"
DEBIAN = ROOT / "packaging" / "debian"

MAX_EXPOSURE = 2.0
TOOL_TIMEOUT_S = 60
DEB_BUILD_TIMEOUT_S = 600

# Every metric clipd exports; dashboards and alerts may use these and `up` only.
CLIPD_METRICS = frozenset(
    {
        "clipd_clip_files",
        "clipd_clip_bytes",
        "clipd_disk_total_bytes",
        "clipd_disk_free_bytes",
        "clipd_disk_used_ratio",
        "clipd_ready",
        "clipd_backup_backlog_files",
        "clipd_retention_last_run_timestamp_seconds",
        "clipd_retention_enabled",
        "clipd_retention_last_run_duration_seconds",
        "clipd_ingested_files_total",
        "clipd_ingested_bytes_total",
        "clipd_quarantined_files_total",
        "clipd_downloads_total",
        "clipd_download_bytes_total",
        "clipd_integrity_mismatches_total",
        "clipd_scrub_mismatches_total",
        "clipd_scrub_verified_bytes_total",
        "clipd_retention_deleted_files_total",
        "clipd_retention_freed_bytes_total",
        "clipd_backup_failures_total",
        "clipd_backup_uploaded_files_total",
        "clipd_watcher_rescans_total",
    }
)
ALLOWED_METRICS = CLIPD_METRICS | {"up"}
# Words that may stand in a PromQL expression without being metric names.
_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)

RUNTIME_DEPS = {
    "aiohttp": "python3-aiohttp",
    "watchdog": "python3-watchdog",
    "psutil": "python3-psutil",
    "prometheus-client": "python3-prometheus-client",
    "boto3": "python3-boto3",
    "sdnotify": "python3-sdnotify",
}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install: see .ci/run)")
    return path


def _run(
    argv: Sequence[str], *, cwd: Path | None = None, timeout: float = TOOL_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment; systemd allows repeated keys."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def _unit_values(path: Path, section: str, key: str) -> list[str]:
    return [v for s, k, v in _unit_entries(path) if s == section and k == key]


def _metric_names(expr: str) -> set[str]:
    """Names in a PromQL expression that can only be metric names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        word, is_call = match.group(1), match.group(2)
        if is_call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def _dashboard_exprs(dashboard: dict[str, object]) -> Iterator[str]:
    def walk(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(dashboard.get("panels", []))


# --- systemd -----------------------------------------------------------------


def test_service_declares_notify_watchdog_and_reload() -> None:
    want = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "ExecStart": "/usr/bin/clipd run --config /etc/clipd/clipd.toml",
        "ExecReload": "kill -HUP $MAINPID",
        "Restart": "on-failure",
        "User": "clipd",
        "Group": "clipd",
        "StateDirectory": "clipd",
        "ConfigurationDirectory": "clipd",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute": "yes",
    }
    got = {key: _unit_values(SERVICE, "Service", key) for key in want}
    assert got == {key: [value] for key, value in want.items()}


def test_service_may_write_only_the_clips_tree() -> None:
    assert _unit_values(SERVICE, "Service", "ReadWritePaths") == ["/var/lib/clipd/clips"]
    assert "@system-service" in _unit_values(SERVICE, "Service", "SystemCallFilter")


def test_socket_listens_on_default_address_for_the_service() -> None:
    assert _unit_values(SOCKET, "Socket", "ListenStream") == ["127.0.0.1:8000"]
    assert _unit_values(SOCKET, "Socket", "Service") == ["clipd.service"]


def test_service_exposure_is_at_most_two() -> None:
    analyze = _tool("systemd-analyze")
    result = _run([analyze, "security", "--no-pager", "--offline=true", str(SERVICE)])
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 252")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_units_verify_clean(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    # verify insists ExecStart= exists; /usr/bin/clipd does only once the .deb
    # is installed, so check a copy that starts an executable that is there.
    stand_in = shutil.which("true") or "/bin/true"
    service = tmp_path / SERVICE.name
    service.write_text(SERVICE.read_text().replace("/usr/bin/clipd", stand_in))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    result = _run([analyze, "verify", str(service), str(tmp_path / SOCKET.name)])
    ours = [line for line in result.stderr.splitlines() if "clipd" in line]
    assert result.returncode == 0, result.stderr
    assert ours == []


def test_sysusers_snippet_is_valid(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    dry = _run([sysusers, "--dry-run", str(SYSUSERS)])
    if dry.returncode != 0 and "dry-run" in dry.stderr:
        # Older systemd: a real run into a scratch root checks the same thing.
        (tmp_path / "etc").mkdir()
        dry = _run([sysusers, f"--root={tmp_path}", str(SYSUSERS)])
    assert dry.returncode == 0, dry.stderr
    assert not [line for line in dry.stderr.splitlines() if "clipd.conf:" in line]


def test_tmpfiles_snippet_creates_clips_tree(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    tmpfiles = _tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles --create chowns to clipd: needs root")
    (tmp_path / "etc").mkdir()
    made_user = _run([sysusers, f"--root={tmp_path}", str(SYSUSERS)])
    assert made_user.returncode == 0, made_user.stderr
    created = _run([tmpfiles, f"--root={tmp_path}", "--create", str(TMPFILES)])
    assert created.returncode == 0, created.stderr
    assert not [line for line in created.stderr.splitlines() if "clipd.conf" in line]
    passwd = (tmp_path / "etc" / "passwd").read_text()
    uid = next(int(f.split(":")[2]) for f in passwd.splitlines() if f.startswith("clipd:"))
    clips = (tmp_path / "var/lib/clipd/clips").stat()
    assert (clips.st_uid, clips.st_gid, clips.st_mode & 0o7777) == (uid, uid, 0o750)


# --- Prometheus, Alertmanager, Grafana ---------------------------------------


def test_alert_rules_check_clean() -> None:
    promtool = _tool("promtool")
    result = _run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    promtool = _tool("promtool")
    result = _run([promtool, "test", "rules", "clipd.rules.test.yml"], cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    tested = set(
        re.findall(
            r"^\s*alertname: (\w+)",
            (PROM / "clipd.rules.test.yml").read_text(),
            re.MULTILINE,
        )
    )
    assert alerts and alerts == tested


def test_alert_rules_use_only_exported_metrics() -> None:
    exprs = re.findall(
        r"^\s*expr: (?:\|\n((?:\s{10,}.*\n)+)|(.*))$", RULES.read_text(), re.MULTILINE
    )
    names = set().union(*(_metric_names(block or line) for block, line in exprs))
    assert names and names <= ALLOWED_METRICS, names - ALLOWED_METRICS


def test_scrape_config_checks_clean() -> None:
    promtool = _tool("promtool")
    result = _run([promtool, "check", "config", "scrape.yml"], cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_checks_clean() -> None:
    amtool = _tool("amtool")
    result = _run([amtool, "check-config", str(PROM / "alertmanager.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = dashboard["templating"]["list"]
    assert {"name": "datasource", "type": "datasource", "query": "prometheus"}.items() <= (
        next(v for v in variables if v["type"] == "datasource").items()
    )
    assert dashboard["panels"]


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(_dashboard_exprs(dashboard))
    names = set().union(*(_metric_names(expr) for expr in exprs))
    assert exprs and names <= ALLOWED_METRICS, names - ALLOWED_METRICS
    assert names >= CLIPD_METRICS, f"metrics with no panel: {sorted(CLIPD_METRICS - names)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    dashboard = json.loads(DASHBOARD.read_text())
    # Grafana fills these in before it queries; promtool needs concrete values.
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*"}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(_dashboard_exprs(dashboard)):
        for var, value in fill.items():
            expr = expr.replace(var, value)
        lines += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = _run([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- Debian package and min versions ------------------------------------------


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition(">=")
        bounds[name.strip().lower()] = version.strip()
    return bounds


def test_min_constraints_pin_every_lower_bound() -> None:
    pins = {}
    for line in (ROOT / "packaging" / "constraints-min.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    assert pins == _lower_bounds()


def test_debian_depends_on_distro_python_packages() -> None:
    control = (DEBIAN / "control").read_text()
    bounds = _lower_bounds()
    assert set(bounds) == set(RUNTIME_DEPS)
    for name, debian_name in RUNTIME_DEPS.items():
        assert f"{debian_name} (>= {bounds[name]})" in control


def test_debian_changelog_matches_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"clipd ({project['version']}) ")


def test_debian_install_sources_exist() -> None:
    sources = [
        line.split()[0]
        for line in (DEBIAN / "clipd.install").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    missing = [src for src in sources if not (ROOT / src).exists()]
    assert missing == []


def test_ci_script_is_valid_bash() -> None:
    result = _run(["bash", "-n", str(ROOT / ".ci" / "run")])
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_make_deb_builds_installable_package() -> None:
    _tool("dpkg-buildpackage")
    _tool("dh_python3")
    if not Path("/usr/share/perl5/Debian/Debhelper/Buildsystem/pybuild.pm").exists():
        pytest.skip("dh-python's pybuild is not installed")
    if _run(["dpkg-query", "-W", "pybuild-plugin-pyproject"]).returncode != 0:
        pytest.skip("pybuild-plugin-pyproject is not installed")
    result = _run(["make", "--no-print-directory", "deb"], cwd=ROOT, timeout=DEB_BUILD_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    deb = ROOT / "dist" / f"clipd_{version}_all.deb"
    contents = _run(["dpkg-deb", "--contents", str(deb)]).stdout
    for path in (
        "./usr/bin/clipd",
        "./etc/clipd/clipd.toml",
        "./lib/systemd/system/clipd.service",
        "./lib/systemd/system/clipd.socket",
        "./usr/lib/sysusers.d/clipd.conf",
        "./usr/lib/tmpfiles.d/clipd.conf",
        "./usr/lib/python3/dist-packages/clipd/__init__.py",
    ):
        assert path in contents
    conffiles = _run(["dpkg-deb", "--info", str(deb), "conffiles"]).stdout
    assert "/etc/clipd/clipd.toml" in conffiles
    postinst = _run(["dpkg-deb", "--info", str(deb), "postinst"]).stdout
    assert postinst.index("systemd-sysusers") < postinst.index("systemd-tmpfiles")
