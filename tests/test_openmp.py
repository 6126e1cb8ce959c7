"""nstyle makes torch's OpenMP threads wait passively (``nstyle.openmp``), unless the user
chose, and only where it can still take effect (before torch is loaded)."""

import os
import subprocess
import sys

import pytest

from nstyle import openmp

PROBE = "import os, nstyle; print(os.environ.get('OMP_WAIT_POLICY'))"


def probe(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_importing_nstyle_sets_passive_waiting_before_torch_loads():
    assert probe(PROBE) == "PASSIVE"


def test_a_policy_the_user_set_is_kept():
    assert probe(PROBE, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_is_set_once_torch_is_loaded():
    # too late to take effect: the environment must not claim otherwise
    assert probe("import torch; " + PROBE) == "None"


@pytest.mark.parametrize("preset", [True, False])
def test_prefer_passive_wait_reports_what_it_did(monkeypatch, preset):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if preset:
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert openmp.prefer_passive_wait() is False  # torch is loaded in this process, or it was set
