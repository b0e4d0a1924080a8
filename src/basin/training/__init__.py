"""Training the attractor network: the paper's layer-wise schedule, checkpoints and resume.

>>> from basin.training import PRESETS, load_train_data, train, load_run
>>> config = PRESETS["paper-baseline"].replace(max_epochs=2)
>>> result = train(config, load_train_data(config), "runs/baseline")   # doctest: +SKIP
>>> run = load_run("runs/baseline")                                    # doctest: +SKIP

Modules: :mod:`~basin.training.config` (``TrainConfig``, presets), :mod:`~basin.training.data`
(``TrainData``, loading, the built-in ``toy`` problem), :mod:`~basin.training.stages` (the
three pretraining stages and fine-tuning), :mod:`~basin.training.trainer` (the loop, early
stopping, test metrics), :mod:`~basin.training.checkpoint` (per-epoch state for resume),
:mod:`~basin.training.run` (the run folder and ``load_run``).
"""

from basin.training.config import PRESETS, TrainConfig, preset
from basin.training.data import TrainData, load_train_data, toy_split
from basin.training.run import LoadedRun, RunExistsError, load_run, run_status
from basin.training.stages import Stage, build_stage
from basin.training.trainer import EpochInfo, TrainResult, build_model, evaluate, train

__all__ = [
    "PRESETS",
    "EpochInfo",
    "LoadedRun",
    "RunExistsError",
    "Stage",
    "TrainConfig",
    "TrainData",
    "TrainResult",
    "build_model",
    "build_stage",
    "evaluate",
    "load_run",
    "load_train_data",
    "preset",
    "run_status",
    "toy_split",
    "train",
]
