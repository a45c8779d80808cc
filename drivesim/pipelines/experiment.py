"""Training a world model end to end, and the exported model file.

`run(experiment, workdir)` is what `drivesim train --config experiments/<name>.py --workdir W`
runs: make the training data if it is missing (a synthetic set and its clip cache, from a recipe),
train the tokenizers (W/tokenizer), encode the clips and train the dynamics (W/dynamics), then
with a refiner, predict training futures and train it (W/refiner), then, with a validation set,
fit the BEV's decision bias (W/calibration.json, `drivesim.pipelines.calibrate`), and export one
self-contained file W/world_model.npz (+ .json): the config, the latent statistics and all
parameters. Each stage resumes from its checkpoints with `resume=True`; a finished stage is
skipped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drivesim import distributed
from drivesim.atomic import write_json
from drivesim.errors import ConfigError
from drivesim.model.config import WorldModelConfig
from drivesim.model.model_file import _jsonable, assemble, load_world_model, record_path, save_world_model
from drivesim.model.tasks import DynamicsTask, LatentClips, TokenizerTask
from drivesim.model.world import WorldModel
from drivesim.progress import bar
from drivesim.provenance import provenance, sha256_file
from drivesim.train import TrainConfig, load_model, train
from drivesim.train.checkpoint import latest_step


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Where the training clips come from (made from the recipe if missing)."""

    cache: str = "data/train/cache"
    """Clip cache the model trains on."""
    dataroot: str = "data/train/synth"
    """Synthetic dataroot the cache is built from (generated if missing)."""
    scenes: int = 150
    seconds: float = 20.0
    seed: int = 1
    """Seed of the training world: other maps and traffic than the evaluation set (seed 0)."""
    version: str = "v1.0-trainval"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A world-model training run: the model, its data, and each stage's optimisation."""

    model: WorldModelConfig
    data: TrainingData
    tokenizer: TrainConfig
    dynamics: TrainConfig
    refiner: TrainConfig | None = None
    """Stage 3, the BEV refiner (needs `model.occ_refine`)."""
    refiner_clips: int = 640
    """Training clips whose futures the trained dynamics predict for the refiner to decode."""
    calibration: TrainingData | None = None
    """A validation set (its own seed: neither the training nor the evaluation world) on which the
    refined BEV's decision bias is fitted (`drivesim.pipelines.calibrate`); None: no bias."""
    calibration_clips: int = 96
    """Forecasting clips of the validation set the bias is fitted on."""


def ensure_training_data(data: TrainingData, frame_size=(64, 36), progress: bool = True) -> Path:
    """The clip cache of the training set (frames at `frame_size`), generating the set and the cache
    if needed. Under several processes process 0 writes the set, then each caches its share of the
    scenes (`drivesim.data.cache.build_cache(shard=...)`)."""
    from drivesim.data.cache import CacheConfig, build_cache
    from drivesim.synth.dataset import SynthConfig, generate

    cache = Path(data.cache)
    root = Path(data.dataroot)
    lead = distributed.lead()
    if not (root / data.version / "scene.json").exists():
        if lead:
            generate(
                SynthConfig(scenes=data.scenes, seconds=data.seconds, seed=data.seed, version=data.version,
                            camera_hz=2),
                root, overwrite=True, progress=progress, workers=2,
            )  # fmt: skip
        distributed.barrier("training set")
    cfg = CacheConfig(image_size=tuple(frame_size))
    shard = (jax.process_index(), jax.process_count())
    build_cache(root, data.version, cache, cfg, workers=2, progress=progress and lead, shard=shard)
    if shard[1] > 1:
        distributed.barrier("training cache")
        if lead:  # every scene is cached now: this only writes the whole manifest
            build_cache(root, data.version, cache, cfg, workers=1, progress=False)
        distributed.barrier("training cache manifest")
    return cache


def _stage_done(workdir: Path, cfg: TrainConfig) -> bool:
    return (latest_step(workdir) or 0) >= cfg.steps


def run(exp: Experiment, workdir, resume: bool = False, progress: bool = True, base=None) -> Path:
    """Train the stages and export the model; returns the exported file.

    With `base` (a model file of the same config but for the refiner's fields), its tokenizers,
    dynamics and latent statistics are taken as they are and only the refiner is trained.
    """
    exp.model.validate()
    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()) and not resume:
        if (workdir / "world_model.npz").exists() or (workdir / "tokenizer").exists():
            raise ConfigError(
                f"{workdir} already holds a training run; pass --resume to continue it or use another --workdir"
            )
    workdir.mkdir(parents=True, exist_ok=True)
    if distributed.lead():
        write_json(workdir / "experiment.json", {**_jsonable(dataclasses.asdict(exp)), "provenance": provenance()})
    cache = ensure_training_data(exp.data, exp.model.frame_size, progress)
    if base is not None:
        refined = _refine_base(exp, Path(base), cache, workdir, resume, progress)
        if not distributed.lead():
            return workdir / "world_model.npz"
        return save_world_model(
            refined, workdir / "world_model.npz",
            training_record(exp, Path(base)),
        )  # fmt: skip
    tok_task = TokenizerTask(str(cache), exp.model, seed=exp.tokenizer.seed)
    tok_dir = workdir / "tokenizer"
    if not _stage_done(tok_dir, exp.tokenizer):
        train(tok_task, exp.tokenizer, tok_dir, resume=resume or tok_dir.exists(), progress=progress)
    tokenizers = load_model(tok_task, tok_dir)
    clips = LatentClips(cache, tokenizers, exp.model)
    dyn_task = DynamicsTask(clips, exp.model, seed=exp.dynamics.seed)
    dyn_dir = workdir / "dynamics"
    if not _stage_done(dyn_dir, exp.dynamics):
        train(dyn_task, exp.dynamics, dyn_dir, resume=resume or dyn_dir.exists(), progress=progress)
    dynamics = load_model(dyn_task, dyn_dir)
    model = assemble(exp.model, tokenizers, dynamics, clips.stats)
    if exp.model.occ_refine:
        model = train_refiner(exp, model, cache, workdir / "refiner", resume, progress)
        model = calibrate_model(exp, model, workdir / "calibration.json", progress)
    if not distributed.lead():  # several processes: each computed the same model, process 0 exports it
        return workdir / "world_model.npz"
    return save_world_model(model, workdir / "world_model.npz", training_record(exp))


def training_record(exp: Experiment, base: Path | None = None) -> dict:
    """What the exported model's .json records of its training: the steps of each stage, the
    seeds of its data (training, validation, and the default evaluation set's) and the command."""
    import shlex
    import sys

    from drivesim.synth.dataset import SynthConfig

    steps = {
        "tokenizer": exp.tokenizer.steps,
        "dynamics": exp.dynamics.steps,
        "refiner": exp.refiner.steps if exp.model.occ_refine and exp.refiner is not None else None,
    }
    record = {
        "training_steps": steps,
        "data_seeds": {
            "training": exp.data.seed,
            "validation": exp.calibration.seed if exp.calibration is not None else None,
            "evaluation": SynthConfig().seed,
        },
        "command": shlex.join(sys.argv),
    }
    if base is not None:  # its tokenizers and dynamics are the base's: their steps are the base's record's
        prior = json.loads(record_path(base).read_text()) if record_path(base).exists() else {}
        prior_steps = prior.get("training_steps") or {}
        steps.update(tokenizer=prior_steps.get("tokenizer"), dynamics=prior_steps.get("dynamics"))
        record["base"] = {"model": str(base), "sha256": sha256_file(base)}
    return record


def _refiner_fingerprint(model: WorldModel) -> float:
    return float(sum(float(np.abs(np.asarray(v)).sum()) for v in jax.tree.leaves(nnx.state(model.refiner))))


def calibrate_model(exp: Experiment, model: WorldModel, record: Path, progress: bool) -> WorldModel:
    """Stage 4: fit the refined BEV's decision bias on the validation set (none configured: the
    model is unchanged). A finished calibration of the same refiner is read back from `record`."""
    from drivesim.model.tasks import CacheScenes
    from drivesim.pipelines.calibrate import calibrate

    if exp.calibration is None:
        return model
    fingerprint = _refiner_fingerprint(model)
    if record.exists():
        done = json.loads(record.read_text())
        if abs(done.get("refiner_fingerprint", -1.0) - fingerprint) <= 1e-6 * max(1.0, fingerprint):
            model.occ_bias[...] = jnp.asarray(done["bias"], jnp.float32)
            return model
    cache = ensure_training_data(exp.calibration, exp.model.frame_size, progress)
    data = CacheScenes(cache).check(exp.model)
    with bar(not progress, "calibrating the BEV decision", exp.calibration_clips) as tick:
        report = calibrate(model, data, exp.calibration_clips, progress=tick)
    report["refiner_fingerprint"] = fingerprint
    report["validation"] = str(cache)
    report["provenance"] = provenance(dataroot=exp.calibration.dataroot, version=exp.calibration.version)
    if distributed.lead():
        write_json(record, report)
    return model


def train_refiner(exp: Experiment, model: WorldModel, cache: Path, workdir: Path, resume: bool, progress: bool):
    """Stage 3: predict the futures of training clips with `model`, train its BEV refiner on them;
    returns the model with the trained refiner."""
    from drivesim.model.tasks import CacheScenes, PredictedLatents, RefinerTask

    if exp.refiner is None:
        raise ConfigError("the model has occ_refine=True but the experiment has no `refiner` TrainConfig")
    data = CacheScenes(cache).check(exp.model)
    if not _stage_done(workdir, exp.refiner):
        saved = workdir / "predicted_latents.npz"  # a resumed run does not predict them again
        if saved.exists():
            predicted = PredictedLatents.load(saved)
        else:
            total = len(PredictedLatents.select(data, exp.model, max_clips=exp.refiner_clips))
            with bar(not progress, "predicting training futures", total) as tick:
                predicted = PredictedLatents(data, model, exp.model, max_clips=exp.refiner_clips, progress=tick)
            workdir.mkdir(parents=True, exist_ok=True)
            if distributed.lead():
                predicted.save(saved)
        task = RefinerTask(model, data, predicted, exp.model, seed=exp.refiner.seed)
        train(task, exp.refiner, workdir, resume=resume or workdir.exists(), progress=progress)
    else:
        task = RefinerTask(model, data, None, exp.model, seed=exp.refiner.seed)  # to load it: no data needed
    refiner = load_model(task, workdir)
    nnx.update(model.refiner, nnx.state(refiner))
    return model


def _refine_base(exp: Experiment, base: Path, cache: Path, workdir: Path, resume: bool, progress: bool):
    if not exp.model.occ_refine:
        raise ConfigError("--base trains only the refiner, but the experiment's model has occ_refine=False")
    prior = load_world_model(base)
    if prior.cfg.stage_fields() != exp.model.stage_fields():
        diff = [k for k, v in exp.model.stage_fields().items() if prior.cfg.stage_fields().get(k) != v]
        raise ConfigError(
            f"--base {base} was trained with another model config ({', '.join(diff)}); use a matching experiment"
        )
    model = WorldModel(exp.model, rngs=nnx.Rngs(0))
    nnx.update(model.tokenizers, nnx.state(prior.tokenizers))
    nnx.update(model.dynamics, nnx.state(prior.dynamics))
    for name in ("cam_mean", "cam_std", "occ_mean", "occ_std"):
        getattr(model, name)[...] = getattr(prior, name)[...]
    model = train_refiner(exp, model, cache, workdir / "refiner", resume, progress)
    return calibrate_model(exp, model, workdir / "calibration.json", progress)
