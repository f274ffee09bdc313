"""`switchyard --version` names the version and git commit; `--log-format
json` (and SWITCHYARD_LOG_FORMAT) makes every log line one JSON object; an
unknown format is refused. Runs the release binary."""

import json
import os
import re
import subprocess

import harness


def test_version_names_version_and_commit():
    out = subprocess.run([str(harness.SWITCHYARD), "--version"], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"switchyard \d+\.\d+\.\d+\S* \(commit ([0-9a-f]{7,}|unknown)\)\n", out), out


def run_standalone(tmp_path, args, env=None):
    cfg = tmp_path / "cfg"
    cfg.mkdir(exist_ok=True)
    proc = subprocess.Popen([str(harness.SWITCHYARD), *args, "standalone", "--config-dir", str(cfg),
                             "--status-dir", str(tmp_path / "status"), "--xds-listen", "127.0.0.1:0",
                             "--admin-listen", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    try:
        lines = [proc.stderr.readline() for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return lines


def test_json_logs_by_flag_and_env(tmp_path):
    for args, env in [(["--log-format", "json"], None), ([], {"SWITCHYARD_LOG_FORMAT": "json"})]:
        lines = run_standalone(tmp_path, args, env)
        for line in lines:
            doc = json.loads(line)
            assert doc["level"] in ("INFO", "WARN") and doc["fields"]["message"] and doc["target"], doc
    text = run_standalone(tmp_path, [], {"SWITCHYARD_LOG_FORMAT": "text"})
    assert not text[0].startswith("{") and "standalone mode starting" in text[0], text


def test_unknown_log_format_is_refused():
    p = subprocess.run([str(harness.SWITCHYARD), "--log-format", "xml", "--version"], capture_output=True, text=True)
    assert p.returncode != 0 and "invalid value 'xml'" in p.stderr, p.stderr
