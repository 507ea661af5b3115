"""The install steps of the agent's README fit Raspberry Pi OS Bookworm (PEP 668: no
pip into the system Python) and the systemd unit runs what they install."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

AGENT = Path(__file__).resolve().parents[3] / "edge_agent"


def test_the_agent_installs_into_a_virtualenv_that_the_service_runs():
    readme = (AGENT / "README.md").read_text()
    install = readme.split("## Install on a Pi", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert not re.search(r"sudo pip\b", install)
    venv = re.search(r"python3 -m venv (\S+)", install).group(1)
    assert f"{venv}/bin/pip install ./edge_agent" in install
    unit = configparser.ConfigParser()
    unit.read(AGENT / "systemd" / "lakehouse-edge.service")
    assert unit["Service"]["ExecStart"].split()[0] == f"{venv}/bin/lakehouse-edge"
    assert "edge_agent/systemd/lakehouse-edge.service" in install
