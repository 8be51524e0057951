"""Recorded fixtures pin the outputs: `report --json`, `trace --json` lines and the Chrome export of
tests/fixtures/*.rtrace stay as they were made (tests/fixtures/make_golden.py), apart from added fields.
Needs no root: the recordings are read back through the offline pipeline."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
NAMES = ("single", "multi")


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def without_added(new, old):
    """`new` with the dict keys that `old` lacks removed, recursively: what was there must not change,
    fields may be added."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: without_added(v, old[k]) for k, v in new.items() if k in old}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [without_added(n, o) for n, o in zip(new, old)]
    return new


@pytest.mark.parametrize("name", NAMES)
def test_report_json_is_byte_identical_apart_from_added_fields(name):
    golden_text = (FIXTURES / f"{name}.report.json").read_text()
    out = cli("report", str(FIXTURES / f"{name}.rtrace"), "--json")
    golden = json.loads(golden_text)
    assert json.dumps(without_added(json.loads(out), golden), sort_keys=True) + "\n" == golden_text


@pytest.mark.parametrize("name", NAMES)
def test_request_lines_are_unchanged(name):
    golden = gzip.decompress((FIXTURES / f"{name}.requests.jsonl.gz").read_bytes()).decode().splitlines()
    out = subprocess.run([sys.executable, str(FIXTURES / "requests_jsonl.py"), str(FIXTURES / f"{name}.rtrace")],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert len(out) == len(golden) > 500
    for new, old in zip(out, golden):
        assert json.dumps(without_added(json.loads(new), json.loads(old))) == old


@pytest.mark.parametrize("name", NAMES)
def test_chrome_export_is_unchanged(name, tmp_path):
    golden = json.loads(gzip.decompress((FIXTURES / f"{name}.chrome.json.gz").read_bytes()))
    out = tmp_path / "chrome.json"
    cli("export", str(FIXTURES / f"{name}.rtrace"), "--format", "chrome", "-o", str(out))
    assert without_added(json.loads(out.read_text()), golden) == golden


def test_fixtures_hold_what_the_views_need():
    """The recordings cover a BigKey stall with a victim, AOF, pipelining and two instances."""
    single = json.loads((FIXTURES / "single.report.json").read_text())
    multi = json.loads((FIXTURES / "multi.report.json").read_text())
    (stall,) = single["stalls"]
    assert stall["class"] == "bigkey" and stall["command"] == "DEL" and stall["victims"] >= 1
    assert single["commands"]["ZADD"]["count"] == 100
    from tracer.tracefile.recording import TraceReader

    with TraceReader(FIXTURES / "single.rtrace") as reader:
        assert reader.header["targets"][0]["appendfsync"] == "everysec"
    assert len(multi["instances"]) == 2


@pytest.mark.parametrize("name", NAMES)
def test_report_view_reads_back_its_own_json(name):
    """Report.from_json(to_json()) is lossless, so hand-built or stored reports render like live ones."""
    from tracer.schema import Report

    doc = json.loads(cli("report", str(FIXTURES / f"{name}.rtrace"), "--json"))
    assert Report.from_json(doc).to_json() == doc
