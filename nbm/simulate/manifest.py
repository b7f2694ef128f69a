"""A simulated world on disk: its tables in the data contract, and ``world.json``, the arguments that rebuild it.

``nbm simulate`` writes both; ``nbm train``, ``nbm evaluate`` and ``nbm simulate --ab`` read ``world.json``
back (:func:`read_world_manifest`) to rebuild the world and judge policies against its ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nbm.errors import UsageError
from nbm.io import write_table
from nbm.simulate.config import MessyRates, SimConfig
from nbm.simulate.presets import get_preset, rebuildable, world_config

MANIFEST = "injected.json"
"""What ``nbm simulate --messy`` injected (bad rows, duplicates, late rows)."""
WORLD = "world.json"
"""What ``nbm simulate`` was asked for; with it, the world and its ground truth can be rebuilt exactly."""
NBM_TOML_EXAMPLE = "nbm.toml.example"
"""A preset world's recommended nbm configuration, written next to its tables."""


def world_manifest(config: SimConfig) -> dict:
    """The arguments that rebuild ``config`` (see :func:`read_world_manifest`): its size, seed, period,
    exploration, ``messy`` and preset (``null``: the default world).

    Raises ``ValueError`` for a world that is neither the default nor a preset's (custom knobs): the
    manifest could not rebuild it.
    """
    if not rebuildable(config):
        raise ValueError("`config`: world.json rebuilds the default world or a preset's world (nbm.simulate.presets) "
                         f"at any size; this one has other knobs (preset {config.preset!r})")
    return {"users": config.n_users, "days": config.n_days, "seed": config.seed,
            "start": config.period_start.isoformat(), "epsilon": config.epsilon, "messy": config.messy is not None,
            "preset": config.preset}


def read_world_manifest(directory: Path) -> SimConfig | None:
    """The simulation that wrote ``directory``, or ``None`` when it was not written by ``nbm simulate``."""
    path = Path(directory) / WORLD
    if not path.is_file():
        return None
    spec = json.loads(path.read_text())
    preset = spec.get("preset")
    if preset is not None:
        get_preset(preset, where=f"{str(path)!r}, `preset`")
    return world_config(preset, n_users=int(spec["users"]), n_days=int(spec["days"]), seed=int(spec["seed"]),
                        start=pd.Timestamp(spec["start"]), epsilon=float(spec["epsilon"]),
                        messy=MessyRates() if spec.get("messy") else None)


def write_world(tables: dict[str, pd.DataFrame], out: Path, file_format: str) -> list[Path]:
    """Write the four tables to ``out`` (created if needed), replacing tables of the other format.

    The manifests of an earlier world in ``out`` (``injected.json``, ``world.json``, ``nbm.toml.example``)
    are removed: they would describe tables that are no longer there.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"`--out`: {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    other = "csv" if file_format == "parquet" else "parquet"
    paths = []
    for name, frame in tables.items():
        (out / f"{name}.{other}").unlink(missing_ok=True)
        paths.append(write_table(frame, out, name, file_format))
    (out / MANIFEST).unlink(missing_ok=True)
    (out / WORLD).unlink(missing_ok=True)
    (out / NBM_TOML_EXAMPLE).unlink(missing_ok=True)
    return paths
