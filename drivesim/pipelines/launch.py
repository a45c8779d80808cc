"""Running drivesim processes under a supervisor: `drivesim launch` and the multi-process CLI path.

JAX stops a process of a multi-process run with a C++ abort and a stack trace when its distributed
service fails (a peer never joins, a peer stops sending heartbeats). A supervisor runs each
process as a child, passes its output through (without the runtime's log noise), stops the others
as soon as one fails, forwards Ctrl-C, and reports the failure as one line:

    drivesim launch: error: process 1 stopped responding (no heartbeat for 10 s); the run was stopped

`launch_local` starts N local processes on a free port (`drivesim launch --local-processes N --
<verb> <args>`); `supervise_self` wraps one process of a run started elsewhere (SLURM, by hand),
which is what `drivesim <verb> --coordinator ...` or `--distributed` does.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time

from drivesim.distributed import CLUSTER_ENV, Cluster, free_port

# The runtime's own logging (absl/glog lines, stack frames, gloo's chatter): hidden from the user.
_NOISE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|\s+@\s|\*\*\* |\[Gloo\]|RPC: |\[type\.googleapis)")
_FATAL = re.compile(r"^F\d{4} .*?\] (.*)$")
_ERROR = re.compile(r"^drivesim [\w-]+: (error|internal error|interrupted)")
VERBS_WITH_PROCESSES = ("train", "bench")


class _Child:
    """One supervised process: its stderr read on a thread, its last lines kept."""

    def __init__(self, index: int, cmd: list[str], env: dict, lead: bool, quiet_stdout: bool, cpus=None):
        self.index, self.lead = index, lead
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.error_line: str | None = None
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet_stdout else None,
            stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1, start_new_session=True,
            preexec_fn=pin,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.rstrip("\n")
            self.tail.append(line)
            if _NOISE.match(line) or not line.strip():
                continue
            if _ERROR.match(line):
                self.error_line = line
                continue  # the supervisor reports it, once
            if self.tail and any(_FATAL.match(x) for x in self.tail):
                continue  # the continuation of a runtime abort message
            prefix = "" if self.lead else f"[process {self.index}] "
            print(prefix + line, file=sys.stderr, flush=True)

    def signal(self, sig):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


def diagnose(index: int, returncode: int, tail: list[str], error_line: str | None, cluster: Cluster | None) -> str:
    """One line saying why process `index` failed, from its exit status and its last stderr lines."""
    text = "\n".join(tail)
    if "stopped sending heartbeats" in text:
        m = re.search(r"stopped sending heartbeats\):\s*\n([\d,\s]+)\n", text)
        who = ", ".join(x for x in re.split(r"[,\s]+", m.group(1)) if x) if m else "a peer"
        beat = f" (no heartbeat for {cluster.heartbeat_timeout} s)" if cluster else ""
        return f"process {who} stopped responding{beat}; the run was stopped"
    if "Id: Shutdown" in text and "Barrier timed out" in text:
        return (
            "a process did not reach the end within the shutdown timeout of the others (it hung or was much "
            "slower); the run was stopped"
        )
    if ("RegisterTask" in text and "DEADLINE_EXCEEDED" in text) or "Barrier timed out" in text:
        wait = f" within {cluster.init_timeout} s" if cluster else ""
        return (
            f"not every process joined{wait}: a peer never started, or the processes disagree on "
            "--coordinator / --num-processes"
        )
    if error_line:
        return f"process {index}: {error_line}"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else -returncode
        last = next((x for x in reversed(tail) if x.strip() and not _NOISE.match(x)), "")
        return f"process {index} was stopped by {name}" + (f" (last output: {last.strip()[:200]})" if last else "")
    last = next((x for x in reversed(tail) if x.strip() and not _NOISE.match(x)), "")
    return f"process {index} exited with status {returncode}" + (f": {last.strip()[:300]}" if last else "")


def supervise(commands: list[list[str]], envs: list[dict], cluster: Cluster | None = None,
              label: str = "drivesim launch", grace: float = 3.0, cpus: list | None = None) -> int:  # fmt: skip
    """Run the commands (process 0 first) until all end; 0 when all succeed.

    Process 0's stdout is the terminal's (progress bars, tables); the others' is discarded (they
    do not write). Stderr lines pass through, the others' prefixed with their index. When one
    process fails, the others are stopped (SIGTERM, then SIGKILL after `grace` s) and one line
    `<label>: error: ...` says why; the return code is then 2 for a user error, else 1. `cpus`:
    the CPU cores of each process (None: all). Ctrl-C is
    forwarded to every process (130), and those still running `grace` s later are killed.
    """
    children: list[_Child] = []
    interrupted = threading.Event()

    stop_by = [None]  # after Ctrl-C, processes still running after `grace` s (deep in a compile) are killed

    def on_sigint(signum, frame):
        interrupted.set()
        stop_by[0] = time.monotonic() + grace
        for c in children:
            c.signal(signal.SIGINT)

    old = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    try:
        for i, (cmd, env) in enumerate(zip(commands, envs, strict=True)):
            children.append(_Child(i, cmd, env, lead=i == 0, quiet_stdout=i > 0, cpus=cpus[i] if cpus else None))
        failed = None
        while True:
            codes = [c.proc.poll() for c in children]
            if failed is None:
                failed = next((c for c, rc in zip(children, codes, strict=True) if rc not in (None, 0)), None)
                if failed is not None:
                    for c in children:
                        c.signal(signal.SIGTERM)
                    deadline = time.monotonic() + grace
            if all(rc is not None for rc in codes):
                break
            late = (failed is not None and time.monotonic() > deadline) or (
                stop_by[0] is not None and time.monotonic() > stop_by[0]
            )
            if late:
                for c in children:
                    c.signal(signal.SIGKILL)
            time.sleep(0.05)
        for c in children:
            c.reader.join(timeout=2)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    if interrupted.is_set():
        print(f"{label}: interrupted", file=sys.stderr)
        return 130
    if failed is None:
        return 0
    rc = failed.proc.returncode
    if len(children) == 1 and failed.error_line:  # its own one-line error says it all
        print(failed.error_line, file=sys.stderr)
    else:
        print(f"{label}: error: {diagnose(failed.index, rc, list(failed.tail), failed.error_line, cluster)}",
              file=sys.stderr)  # fmt: skip
    return 2 if rc == 2 else 1


def _child_env(cluster: Cluster, devices: int | None) -> dict:
    env = dict(os.environ, **{CLUSTER_ENV: cluster.to_env(), "PYTHONUNBUFFERED": "1"})
    if devices is not None:  # CPU: this many host devices per process
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def _drivesim() -> list[str]:
    return [sys.executable, "-m", "drivesim.cli"]


def core_sets(processes: int, cores: list[int]) -> list[list[int]]:
    """Equal, disjoint sets of `cores` for each process (a ConfigError if there are too few)."""
    from drivesim.errors import ConfigError

    if len(cores) < processes:
        raise ConfigError(f"--pin-cpus: {processes} processes need at least {processes} CPU cores, this machine "
                          f"lets us use {len(cores)}")  # fmt: skip
    k = len(cores) // processes
    return [cores[i * k : (i + 1) * k] for i in range(processes)]


def launch_local(processes: int, argv: list[str], devices: int | None = None, init_timeout: int = 60,
                 heartbeat_timeout: int = 10, pin_cpus: bool = True) -> int:  # fmt: skip
    """`drivesim launch --local-processes N -- <verb> <args>`: N processes of `drivesim <verb>
    <args>` on this machine, joined through a coordinator on a free local port. `pin_cpus` gives
    each process its own equal share of the CPU cores (Linux)."""
    from drivesim.errors import ConfigError

    if processes < 1:
        raise ConfigError(f"--local-processes {processes}: use at least 1")
    if devices is not None and devices < 1:
        raise ConfigError(f"--devices-per-process {devices}: use at least 1")
    if not argv:
        raise ConfigError(
            "nothing to launch: write the verb after --, e.g. drivesim launch --local-processes 2 -- bench"
        )
    if argv[0] not in VERBS_WITH_PROCESSES:
        raise ConfigError(f"drivesim {argv[0]} does not run on several processes; launch one of: "
                          f"{', '.join(VERBS_WITH_PROCESSES)}")  # fmt: skip
    coordinator = f"127.0.0.1:{free_port()}"
    clusters = [Cluster(coordinator=coordinator, num_processes=processes, process_id=i, init_timeout=init_timeout,
                        heartbeat_timeout=heartbeat_timeout) for i in range(processes)]  # fmt: skip
    cpus = core_sets(processes, sorted(os.sched_getaffinity(0))) if pin_cpus else None
    return supervise([_drivesim() + argv] * processes, [_child_env(c, devices) for c in clusters], clusters[0],
                     cpus=cpus)  # fmt: skip


def supervise_self(cluster: Cluster, argv: list[str], verb: str) -> int:
    """Run `drivesim <argv>` (the cluster options removed) as this process's supervised child."""
    return supervise([_drivesim() + argv], [_child_env(cluster, None)], cluster, label=f"drivesim {verb}")
