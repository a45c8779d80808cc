"""`drivesim.distributed` and the supervisor's pieces, in one process (the multi-process runs are
in tests/pipelines/test_processes.py)."""

import socket

import pytest

from drivesim.cli import _without_cluster_flags, main
from drivesim.distributed import Cluster, free_port, port_free, process_rows
from drivesim.errors import ConfigError
from drivesim.pipelines.launch import diagnose


@pytest.mark.parametrize(
    "cluster, needle",
    [
        (Cluster(auto=True, coordinator="h:1"), "--distributed detects"),
        (Cluster(coordinator="h:1", num_processes=2), "give all of"),
        (Cluster(coordinator="nohost", num_processes=2, process_id=0), "HOST:PORT"),
        (Cluster(coordinator="h:99999", num_processes=2, process_id=0), "HOST:PORT"),
        (Cluster(coordinator="h:1", num_processes=2, process_id=2), "--process-id 2"),
        (Cluster(coordinator="h:1", num_processes=0, process_id=0), "--num-processes 0"),
    ],
)
def test_cluster_options_are_checked(cluster, needle):
    with pytest.raises(ConfigError, match=needle):
        cluster.validate()


def test_cluster_travels_through_the_environment():
    for c in (Cluster(coordinator="10.0.0.1:29500", num_processes=4, process_id=3, init_timeout=7), Cluster(auto=True)):
        assert Cluster.from_env(c.to_env()) == c
    assert not Cluster().enabled and Cluster(auto=True).enabled


def test_process_rows_are_equal_blocks():
    assert [process_rows(8, 2, i) for i in range(2)] == [slice(0, 4), slice(4, 8)]
    assert process_rows(6, 1, 0) == slice(0, 6)
    with pytest.raises(ConfigError, match="does not split over 2 processes"):
        process_rows(5, 2, 0)


def test_port_in_use_is_seen():
    port = free_port()
    assert port_free(port)
    with socket.socket() as s:
        s.bind(("0.0.0.0", port))
        s.listen()
        assert not port_free(port)


def test_cluster_flags_are_removed_for_the_child():
    argv = ["bench", "--coordinator", "h:1", "--num-processes=2", "--process-id", "0", "--distributed",
            "--init-timeout", "5", "--scenarios", "4"]  # fmt: skip
    assert _without_cluster_flags(argv) == ["bench", "--scenarios", "4"]


def test_diagnoses_name_the_cause():
    cluster = Cluster(coordinator="h:1", num_processes=2, process_id=0, init_timeout=7, heartbeat_timeout=3)
    beats = [
        "F1206 15:18:32.999810   13476 client.h:80] Terminating process because the JAX distributed service "
        "detected fatal errors. absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):",
        "1",
        "The tasks have crashed.",
    ]
    assert (
        diagnose(0, -6, beats, None, cluster)
        == "process 1 stopped responding (no heartbeat for 3 s); the run was stopped"
    )
    join = ["F1206 client.h:80] Terminating process ... absl::Status: DEADLINE_EXCEEDED: Deadline Exceeded", "",
            "RPC: /xla.coordination.CoordinationService/RegisterTask"]  # fmt: skip
    assert diagnose(0, -6, join, None, cluster).startswith("not every process joined within 7 s")
    shutdown = ["DEADLINE_EXCEEDED: Barrier timed out. Id: Shutdown::1::0. This usually happens"]
    assert "shutdown timeout" in diagnose(0, -6, shutdown, None, cluster)
    err = "drivesim bench: error: --batch 3 does not split over 2 devices"
    assert diagnose(1, 2, ["x", err], err, cluster) == f"process 1: {err}"
    assert diagnose(1, -9, ["loading"], None, cluster) == "process 1 was stopped by SIGKILL (last output: loading)"
    assert diagnose(0, 3, [], None, None) == "process 0 exited with status 3"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["bench", "--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["bench", "--coordinator", "127.0.0.1:5000", "--num-processes", "2"], "give all of"),
        (["launch", "--local-processes", "2"], "nothing to launch"),
        (["launch", "--local-processes", "2", "--", "demo"], "does not run on several processes"),
        (["launch", "--local-processes", "0", "--", "bench"], "--local-processes 0"),
    ],
)
def test_cli_refuses_bad_cluster_options_in_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_pinned_processes_get_disjoint_equal_cores():
    from drivesim.pipelines.launch import core_sets

    assert core_sets(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    assert core_sets(1, [3]) == [[3]]
    with pytest.raises(ConfigError, match="at least 3 CPU cores"):
        core_sets(3, [0, 1])


def test_distributed_without_a_cluster_is_one_line(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "OMPI", "DRIVESIM_CLUSTER"))}
    p = subprocess.run([sys.executable, "-m", "drivesim.cli", "bench", "--distributed", "--init-timeout", "5",
                        "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("drivesim bench: error: --distributed: no cluster detected")
