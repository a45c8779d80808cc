"""The provenance block: its keys, the git state (checked against git itself, in a scratch repository
too), the checkpoint hash (against hashlib), the dataset seed from a synthetic recipe, and nulls
where there is no repository."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drivesim import provenance as P
from drivesim.synth.dataset import RECIPE_FILE

ROOT = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd, *args) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # the repository at cwd
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_the_block_has_its_keys_and_is_json():
    block = P.provenance(command="drivesim bench --quiet")
    assert tuple(block) == P.KEYS
    assert block["command"] == "drivesim bench --quiet" and block["checkpoint_sha256"] is None
    assert block["dataset"] == {"dataroot": None, "version": None, "seed": None}
    m = block["machine"]
    assert set(m) == {"platform", "python", "cpu", "cpu_count", "jax", "jax_backend", "device_count", "device_kinds"}
    assert m["jax_backend"] in ("cpu", "gpu", "tpu") and m["device_count"] >= 1 and m["device_kinds"]
    assert json.loads(json.dumps(block)) == block
    assert P.provenance()["command"]  # sys.argv by default


@needs_git
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_commit_is_this_checkouts_head():
    assert P.provenance()["commit"] == git(ROOT, "rev-parse", "HEAD")
    assert isinstance(P.provenance()["dirty"], bool)


@needs_git
def test_the_dirty_flag_follows_the_work_tree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    state = P.git_state(repo)
    assert state == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    (repo / "a.txt").write_text("two\n")
    assert P.git_state(repo) == {"commit": state["commit"], "dirty": True}


def test_outside_a_repository_the_git_state_is_null(tmp_path):
    assert P.git_state(tmp_path) == {"commit": None, "dirty": None}
    assert P.git_state(tmp_path / "no-such-folder") == {"commit": None, "dirty": None}


def test_sha256_file_is_hashlibs_and_follows_the_file(tmp_path):
    f = tmp_path / "w.bin"
    data = bytes(range(256)) * 5000  # several chunks
    f.write_bytes(data)
    assert P.sha256_file(f, chunk=4096) == hashlib.sha256(data).hexdigest()
    assert P.provenance(checkpoint=f)["checkpoint_sha256"] == hashlib.sha256(data).hexdigest()
    f.write_bytes(data + b"!")  # another size: not the cached hash
    assert P.sha256_file(f) == hashlib.sha256(data + b"!").hexdigest()
    assert P.provenance(checkpoint=tmp_path / "gone.npz")["checkpoint_sha256"] is None


def test_the_dataset_seed_comes_from_a_synthetic_recipe(tiny_dataroot, tiny_config, tmp_path):
    assert P.RECIPE_FILE == RECIPE_FILE
    ds = P.provenance(dataroot=tiny_dataroot, version=tiny_config.version)["dataset"]
    assert ds == {"dataroot": str(tiny_dataroot), "version": tiny_config.version, "seed": tiny_config.seed}
    real = tmp_path / "nuscenes"  # a real nuScenes dataroot has no recipe
    real.mkdir()
    assert P.provenance(dataroot=real, version="v1.0-mini")["dataset"]["seed"] is None
    recipe = json.loads((tiny_dataroot / RECIPE_FILE).read_text())
    assert recipe["provenance"]["dataset"]["seed"] == tiny_config.seed  # the set records its own
