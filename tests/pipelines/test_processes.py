"""`drivesim bench` and `drivesim train` on several local processes (jax.distributed over gloo on
CPU), through `drivesim launch`: the same answers as one process, and failures that end in one line
within the timeouts."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from drivesim.cli import main
from drivesim.distributed import free_port

pytestmark = pytest.mark.slow  # each case starts several processes of jax

BENCH = ["bench", "--quiet", "--horizon", "2", "--batch", "4", "--planners", "idm,constant_velocity"]


def drivesim(*argv, env=None, timeout=240):
    """`drivesim argv` in a fresh process: (return code, stdout, stderr)."""
    env = dict(os.environ if env is None else env)
    env.pop("DRIVESIM_CLUSTER", None)
    p = subprocess.run([sys.executable, "-m", "drivesim.cli", *argv], env=env, capture_output=True, text=True,
                       timeout=timeout)  # fmt: skip
    return p.returncode, p.stdout, p.stderr.strip()


def rows(path):
    res = json.loads((path / "results.json").read_text())
    keys = ("pdms", "epdms", "nc", "dac", "ttc", "ep", "c", "ddc", "lk", "hc", "ec", "ego_progress")
    return res, [(r["planner"], r["scene"], r["t0"], *(r[k] for k in keys)) for r in res["scenarios"]]


@pytest.mark.parametrize("engine", ["kinematic", "truth"])
def test_bench_is_bit_identical_on_two_processes_of_two_devices(engine, tiny_dataroot, tmp_path):
    args = [*BENCH, "--dataroot", str(tiny_dataroot), "--engine", engine]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    rc, out, err = drivesim("launch", "--local-processes", "2", "--devices-per-process", "2", "--",
                            *args, "--out", str(tmp_path / "two"))  # fmt: skip
    assert rc == 0, err
    one, a = rows(tmp_path / "one")
    two, b = rows(tmp_path / "two")
    assert two["config"]["processes"] == 2 and two["config"]["devices"] == 4
    assert len(a) >= 8 and a == b  # every per-scenario score, bit for bit
    assert "closed-loop benchmark" in out  # process 0's table, once
    assert out.count("written:") == 1


def test_bench_world_model_is_bit_identical_on_two_processes(tiny_dataroot, tmp_path):
    args = [*BENCH[:-2], "--planners", "idm", "--horizon", "1", "--dataroot", str(tiny_dataroot),
            "--engine", "world-model", "--samples", "1", "--scenarios", "4"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    rc, _, err = drivesim("launch", "--local-processes", "2", "--", *args, "--out", str(tmp_path / "two"))
    assert rc == 0, err
    assert rows(tmp_path / "one")[1] == rows(tmp_path / "two")[1]


def test_a_batch_the_processes_cannot_split_is_one_line(tiny_dataroot, tmp_path):
    rc, _, err = drivesim("launch", "--local-processes", "2", "--", *BENCH, "--batch", "3",
                          "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "b"))  # fmt: skip
    assert rc == 2
    assert err.splitlines()[-1].startswith("drivesim launch: error: process ")
    assert "--batch 3 does not split over the 2 devices of 2 process(es)" in err
    assert not (tmp_path / "b").exists()


def test_a_port_in_use_is_one_line(tmp_path):
    port = free_port()
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
        s.listen()
        rc, _, err = drivesim("bench", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                              "--process-id", "0", "--out", str(tmp_path / "b"))  # fmt: skip
    assert rc == 2
    assert err.splitlines() == [f"drivesim bench: error: --coordinator "
                                f"127.0.0.1:{port}: port {port} is already in use; pick another port "
                                "(`drivesim launch` picks a free one)"]  # fmt: skip


def test_a_peer_that_never_starts_fails_within_the_timeout(tmp_path):
    tic = time.monotonic()
    rc, _, err = drivesim("bench", "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2",
                          "--process-id", "0", "--init-timeout", "3", "--out", str(tmp_path / "b"))  # fmt: skip
    assert rc == 1 and time.monotonic() - tic < 40
    assert err.splitlines()[-1].startswith("drivesim bench: error: not every process joined within 3 s")


DIES = """
    import os, signal
    import jax
    from drivesim.planners.builtin import BUILTIN

    def make():
        if jax.process_index() == 1:  # joined the run, then dies
            os.kill(os.getpid(), signal.SIGKILL)
        return BUILTIN["idm"]
"""


def test_a_peer_that_dies_mid_run_stops_the_others(tiny_dataroot, tmp_path):
    (tmp_path / "dies.py").write_text(textwrap.dedent(DIES))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    args = [*BENCH[:-2], "--planner-module", "dies:make", "--dataroot", str(tiny_dataroot)]
    # under the launcher: it sees the death and stops process 0 at once
    tic = time.monotonic()
    rc, _, err = drivesim("launch", "--local-processes", "2", "--", *args, "--out", str(tmp_path / "a"), env=env)
    assert rc == 1 and time.monotonic() - tic < 60
    assert err.splitlines()[-1] == "drivesim launch: error: process 1 was stopped by SIGKILL"
    # started apart (as under SLURM): process 0 notices the missing heartbeats
    port = free_port()
    cmd = [sys.executable, "-m", "drivesim.cli", *args, "--coordinator", f"127.0.0.1:{port}", "--num-processes",
           "2", "--heartbeat-timeout", "3"]  # fmt: skip
    tic = time.monotonic()
    procs = [subprocess.Popen([*cmd, "--process-id", str(i), "--out", str(tmp_path / f"b{i}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]  # fmt: skip
    out0, err0 = procs[0].communicate(timeout=120)
    procs[1].wait(timeout=30)
    assert procs[0].returncode == 1 and time.monotonic() - tic < 90
    assert err0.strip().splitlines()[-1] == (
        "drivesim bench: error: process 1 stopped responding (no heartbeat for 3 s); the run was stopped"
    )
    assert procs[1].returncode == 1  # its own supervisor reports the SIGKILL
    assert not (tmp_path / "a").exists() and not (tmp_path / "b0").exists()


TINY_EXPERIMENT = """
    from drivesim.model.behaviour import BehaviourConfig
    from drivesim.pipelines.behaviour import BehaviourExperiment, TrafficData
    from drivesim.train import TrainConfig


    def get_config(quick=False):
        return BehaviourExperiment(
            model=BehaviourConfig(width=32, point_width=16, neighbours=4, map_points=8),
            data=TrafficData(seeds=(100, 101), scenes_per_seed=2, seconds=6.0, cache={cache!r}, workers=1),
            train=TrainConfig(steps=6, batch_size=4, learning_rate=1e-3, warmup_steps=1, log_every=1,
                              checkpoint_every=3),
        )
"""


def losses(workdir):
    lines = (workdir / "behaviour" / "metrics.jsonl").read_text().splitlines()
    return np.array([json.loads(x)["loss"] for x in lines])


def test_train_on_two_processes_matches_one_and_resumes_on_another_count(tmp_path):
    config = tmp_path / "tiny_behaviour.py"
    config.write_text(textwrap.dedent(TINY_EXPERIMENT).format(cache=str(tmp_path / "traffic")))
    train = ["train", "--quiet", "--config", str(config), "--workdir"]
    rc, _, err = drivesim("launch", "--local-processes", "2", "--", *train, str(tmp_path / "two"))
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "traffic").glob("*.npz")) == [
        "seed100_n2_s6_lights.npz",
        "seed101_n2_s6_lights.npz",
    ]  # fmt: skip (one seed simulated by each process)
    rc, _, err = drivesim(*train, str(tmp_path / "one"))
    assert rc == 0, err
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    np.testing.assert_allclose(two, one, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "two" / "behaviour" / "config.json").read_text())["processes"] == 2
    assert (tmp_path / "two" / "behaviour.npz").exists()
    # the 2-process checkpoint of step 3, resumed by 1 process with 2 devices, continues the same curve
    resumed = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(tmp_path / "two"), str(resumed)], check=True)
    subprocess.run(["rm", "-r", str(resumed / "behaviour" / "checkpoints" / "6")], check=True)
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2")
    rc, _, err = drivesim(*train, str(resumed), "--resume", env=env)
    assert rc == 0, err
    np.testing.assert_allclose(losses(resumed), one, atol=1e-5, rtol=0)
    assert json.loads((resumed / "behaviour" / "config.json").read_text())["processes"] == 1


def test_ctrl_c_stops_every_process(tiny_dataroot, tmp_path):
    cmd = [sys.executable, "-m", "drivesim.cli", "launch", "--local-processes", "2", "--", *BENCH,
           "--dataroot", str(tiny_dataroot), "--out", str(tmp_path / "b")]  # fmt: skip
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert err.strip().splitlines()[-1] == "drivesim launch: interrupted"
    out = subprocess.run(["pgrep", "-f", str(tmp_path / "b")], capture_output=True, text=True).stdout
    assert out.strip() == ""  # no process left behind
