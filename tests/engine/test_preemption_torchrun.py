"""torchrun on CPU (gloo), two processes each, few and tiny (they share the suite's budget):
two launchers as two nodes on localhost, static rendezvous (the uninterrupted reference) and c10d
with a worker SIGKILLed and the group restarted, which continues from last.pt by itself;
examples/slurm.sbatch under a faked SLURM (USR1 to the batch script, requeue, the requeued job
continues). Every run ends with the weights of the reference."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ..conftest import ROOT, child_env

# 2 epochs of 4 steps, a checkpoint after every step, the ranks agree on a stop every step
ARGS = ["--set", "model.name=resnet_cifar", "--set", "model.kwargs.depth=8",
        "--set", "data.options.num_train=64", "--set", "data.options.num_test=16", "--set", "data.workers=0",
        "--set", "train.deterministic=true", "--set", "train.checkpoint_steps=1",
        "--set", "train.log_every=1",
        "--batch-size", "16", "--epochs", "2", "--device", "cpu", "--quiet"]

# what torchrun runs: the attnzoo command, with faults injected through the environment
TRAIN = """
import os, signal, sys, time, torch
torch.set_num_threads(1)
import attnzoo.engine.train as T
from attnzoo.cli import main
print("attempt", os.environ.get("TORCHELASTIC_RESTART_COUNT"), "rank", os.environ["RANK"], flush=True)
real = T.build_loss
def build_loss(*a, **kw):
    loss, calls = real(*a, **kw), [0]
    def counted(logits, target):
        calls[0] += 1
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first and calls[0] == int(os.environ.get("KILL_AT", 0)) and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        if calls[0] >= int(os.environ.get("SLOW_FROM", 10**9)):
            open(os.environ["MARKER"], "w").close()
            time.sleep(1)
        return loss(logits, target)
    return counted
T.build_loss = build_loss
sys.exit(main(sys.argv[1:]))
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, **extra):
    bin_dir = str(Path(sys.executable).parent)
    return child_env(PATH=f"{tmp_path / 'fake'}:{bin_dir}:{os.environ.get('PATH', '')}", **extra)


def _torchrun(tmp_path, name, launcher: list, env=None, **popen):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, str(script), "train", "--name", name,
           "--out-dir", str(tmp_path / "runs"), *ARGS]
    return subprocess.Popen(cmd, env=env or _env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def _finish(*procs, timeout=300):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outs


def _weights(tmp_path, name):
    state = torch.load(tmp_path / "runs" / name / "checkpoints" / "last.pt", weights_only=True)
    assert state["progress"]["step"] == 8 and state["progress"]["epoch"] == 2
    return state["model"]


def _two_nodes(tmp_path, name, rendezvous: str, **env):
    port = _port()
    if rendezvous == "static":
        nodes = [["--master_addr", "127.0.0.1", "--master_port", str(port), "--node_rank", str(i)]
                 for i in (0, 1)]
    else:
        nodes = [["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", name,
                  "--max-restarts", "1"]] * 2
    launchers = [_torchrun(tmp_path, name, ["--nnodes", "2", "--nproc_per_node", "1", *node],
                           env=_env(tmp_path, **env)) for node in nodes]
    return _finish(*launchers), _weights(tmp_path, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: two launchers as two nodes, static rendezvous."""
    tmp_path = tmp_path_factory.mktemp("torchrun")
    return tmp_path, _two_nodes(tmp_path, "static", "static")[1]


def _assert_equal(a, b):
    for key in b:
        assert torch.equal(a[key], b[key]), key


def test_two_nodes_with_c10d_rendezvous_restart_and_match(reference):
    """Two nodes, c10d rendezvous, --max-restarts 1: rank 1 (the second node) is SIGKILLed at step
    6; both nodes' workers restart (torchrun counts the restart on the failed node only) and
    continue from last.pt by themselves, ending as the uninterrupted static two-node run."""
    tmp_path, weights = reference
    outs, restarted = _two_nodes(tmp_path, "c10d", "c10d", KILL_AT="6",
                                 TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    assert "attempt 1 rank" in "".join(outs), outs[0][-2000:]  # the workers were restarted
    _assert_equal(restarted, weights)


def test_the_sbatch_script_stops_requeues_and_continues(reference):
    """examples/slurm.sbatch under a faked SLURM (srun runs its command here, scontrol logs):
    USR1 to the batch script mid-run -> the ranks save and exit 143, the job is requeued; the
    requeued job's same line continues and ends as the uninterrupted run."""
    tmp_path, weights = reference
    fake = tmp_path / "fake"
    fake.mkdir(exist_ok=True)
    (fake / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (fake / "scontrol").write_text('#!/bin/bash\necho "$@" >> "$SCONTROL_LOG"\n'
                                   '[ "$1" = show ] && echo localhost\nexit 0\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    sbatch = shutil.copy(ROOT / "examples" / "slurm.sbatch", tmp_path / "job.sbatch")
    log, marker = tmp_path / "scontrol.log", tmp_path / "marker"
    (tmp_path / "train.py").write_text(TRAIN)

    def job(**extra):
        env = _env(tmp_path, SLURM_JOB_ID="42", SLURM_JOB_NODELIST="node[1]", SLURM_JOB_NUM_NODES="1",
                   GPUS_PER_NODE="2", MASTER_PORT=str(_port()), NAME="slurm", OUT_DIR=str(tmp_path / "runs"),
                   TRAIN=str(tmp_path / "train.py"), SCONTROL_LOG=str(log), **extra)
        return subprocess.Popen(["bash", str(sbatch), *ARGS], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    first = job(SLOW_FROM="3", MARKER=str(marker))
    deadline = time.time() + 240
    while not marker.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGUSR1)  # SLURM's --signal=B:USR1@120
    out = _finish(first)[0]
    assert "requeued" in out and "requeue 42" in log.read_text(), out[-4000:]
    assert "stopped by SIGUSR1" in out, out[-4000:]
    last = tmp_path / "runs" / "slurm" / "checkpoints" / "last.pt"
    progress = torch.load(last, weights_only=True)["progress"]
    assert 3 <= progress["step"] < 8
    assert not (tmp_path / "runs" / "slurm" / "summary.json").exists()
    _finish(job())
    _assert_equal(_weights(tmp_path, "slurm"), weights)
    assert log.read_text().count("requeue") == 1
