"""On a Ray cluster, workers do not share the driver's working directory: every path in a plan is bound to an
absolute one when the study compiles, so cells land in the driver's output folder and a `trained` set's
default run folder is the driver's, wherever the tasks run.

A real cluster: `ray start --head` on 127.0.0.1 in its own folder, joined by a driver process (in another
folder) with `--address`. Everything stays on loopback: Ray swaps 127.0.0.1 for the machine's outward address
unless multi-node discovery is off (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), and the driver checks `ray.nodes()`.
The cluster uses its own auth token and temp folder, and teardown kills the processes of its session only
(`ray stop` would stop every Ray instance on the machine)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_model
from tiny_tokenizer import VOCAB_SIZE, make_tiny_tokenizer

pytest.importorskip("ray", reason="Ray is installed by scripts/setup.sh (mechsteer[ray])")

from mechsteer.vectors.vector_set import VectorSet, save_vector_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HEAD_START_S = 90  # a hang guard for starting the head on a loaded machine, not a timing assertion


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """The processes of session `sid` (the head's, started with a new session), read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _kill_session(sid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)):
        for pid in _session_pids(sid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _session_pids(sid):
            time.sleep(0.1)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A one-node Ray cluster on 127.0.0.1 whose workers run in their own folder; yields (address, env, cwd)."""
    if not Path("/proc").is_dir():
        pytest.skip("stopping only this cluster's processes reads their sessions from /proc (Linux)")
    head_cwd = tmp_path_factory.mktemp("head_cwd")
    temp_dir = tempfile.mkdtemp(prefix="ms-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = _free_port()
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # no outward address discovery: loopback stays loopback
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),  # this cluster's own, not ~/.ray/auth_token
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": str(ROOT),  # workers import this checkout
        "OMP_NUM_THREADS": "1",
    }
    log = head_cwd / "head.log"
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"]
        + ["--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1", "--temp-dir", temp_dir]
        + ["--include-dashboard", "false", "--disable-usage-stats"],
        cwd=head_cwd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + HEAD_START_S
        while "Ray runtime started" not in log.read_text() and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text()
        if "Ray runtime started" not in text:
            last = text.strip().splitlines()[-1:] or ["(no output)"]
            pytest.skip(f"`ray start --head` on 127.0.0.1 did not come up: {last[0][:200]}")
        assert "Local node IP: 127.0.0.1" in text, "the head left loopback"
        yield f"127.0.0.1:{port}", env, head_cwd
    finally:
        _kill_session(head.pid)
        head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


DRIVER = """
import json, os, sys
import ray
from mechsteer.api import load_study
from mechsteer.engine.ray_executor import execute_plan_ray

ray.init(address=sys.argv[2], _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
nodes = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
@ray.remote
def working_directory():
    return os.getcwd()

worker_cwd = ray.get(working_directory.remote())
plan = load_study(sys.argv[1]).plan()  # the default output folder, "outputs", relative to this folder
summary = execute_plan_ray(plan, cpus_per_worker=1, workers=1)  # one task: the model loads once
print("RESULT " + json.dumps({"nodes": nodes, "gcs": ray.get_runtime_context().gcs_address,
      "worker_cwd": worker_cwd, "output_dir": str(plan.output_dir), "executed": sorted(summary.executed)}))
ray.shutdown()
"""


def _study(d: Path) -> Path:
    """A tiny study whose `trained` set reads a run from the default folder (outputs/train/<name> next to the
    training file)."""
    model = make_tiny_model("llama", vocab_size=VOCAB_SIZE)
    model.save_pretrained(d / "model")
    make_tiny_tokenizer().save_pretrained(d / "model")
    (d / "train.yaml").write_text(
        textwrap.dedent(
            """
            name: tr
            model: {id: smollm2-135m}
            setup: all_layers
            rloo: {steps: 2, max_new_tokens: 8}
            data: {kind: mini}
            """
        )
    )
    doc = {
        "name": "tiny_cluster",
        "models": {"tiny": {"id": "model", "dtype": "float32", "device": "cpu"}},
        "vectors": {"v": {"kind": "random", "seed": 0, "norm": 8.0}, "t": {"kind": "trained", "train": "train.yaml"}},
        "conditions": {
            "base": [],
            "steer": [{"kind": "add", "vector": "v", "layer": "penultimate"}],
            "trained": [{"kind": "add", "vector": "t", "layer": "last"}],
        },
        "readouts": {"gen": {"kind": "generate", "prompts": ["ab", "x"], "template": "raw", "max_new_tokens": 6}},
        "seeds": [0],
    }
    (d / "s.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return d / "s.yaml"


def test_cells_and_trained_runs_resolve_against_the_driver_folder_not_the_workers(tmp_path, ray_head):
    address, env, head_cwd = ray_head
    study = _study(tmp_path / "study")
    driver_cwd = tmp_path / "driver"
    driver_cwd.mkdir()
    cfg = make_tiny_model("llama", vocab_size=VOCAB_SIZE).config
    rows = torch.randn(cfg.num_hidden_layers, cfg.hidden_size, generator=torch.Generator().manual_seed(1))
    save_vector_set(  # the run's default folder is next to its training file, whatever the working directory
        VectorSet(rows, list(range(cfg.num_hidden_layers))), study.parent / "outputs/train/tr/vectors.safetensors"
    )

    run = subprocess.run(
        [sys.executable, "-c", DRIVER, str(study), address],
        cwd=driver_cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and result, run.stderr[-3000:]
    got = json.loads(result[0].removeprefix("RESULT "))

    assert got["nodes"] == ["127.0.0.1"] and got["gcs"] == address  # nothing left loopback
    assert Path(got["worker_cwd"]).resolve() == head_cwd.resolve() != driver_cwd.resolve()  # the premise
    out = driver_cwd.resolve() / "outputs" / "tiny_cluster"
    assert got["output_dir"] == str(out)
    assert len(got["executed"]) == 3
    for h in got["executed"]:
        assert (out / "cells" / h / "cell.json").is_file() and (out / "cells" / h / "metrics.json").is_file()
    assert not (head_cwd / "outputs").exists()  # nothing written relative to the workers' folder
