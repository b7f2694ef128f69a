"""``nbm config show``: the effective configuration, as TOML that can be saved as ``nbm.toml``."""

from __future__ import annotations

import argparse
import sys

import tomli_w

from nbm.config import load_config


def run_config_show(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sys.stdout.write("# effective nbm configuration (defaults, then nbm.toml, then NBM_HOME)\n")
    sys.stdout.write(tomli_w.dumps(config.to_toml_dict()))
    return 0
