"""The CLI skeleton: `hwnas space`, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from hwnas.cli import main


def test_space_json_has_spec_keys(capsys):
    assert main(["space", "--space", "mbv3-imagenet", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    d = json.loads(out)
    for k in ("space", "num_subnets", "resolutions", "macs_min", "macs_max", "params_max"):
        assert k in d
    assert d["num_subnets"] == 7371**5 and len(d["resolutions"]) == 25
    assert d["macs_min"] < d["macs_max"]


def test_unknown_space_exits_2_with_one_line(capsys):
    assert main(["space", "--space", "no-such-space"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-space" in err[0] and "Traceback" not in err[0]


def test_invalid_space_file_exits_2_naming_the_field(tmp_path, capsys):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"name": "x", "stem": {"out_channels": 8}}))
    assert main(["space", "--space", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "stages" in err


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "hwnas", "space", "--space", "mbv3-tiny", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["space"] == "mbv3-tiny"
    r = subprocess.run([sys.executable, "-m", "hwnas", "space"], capture_output=True, text=True)
    assert r.returncode == 2 and "--space" in r.stderr
