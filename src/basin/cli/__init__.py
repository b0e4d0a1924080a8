"""The ``basin`` command line.

Each sub-command lives in its own module and is imported only when used, so that
``basin --help`` stays fast and one broken command cannot take the others down.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "data": "basin.cli.data:data",
    "train": "basin.cli.train:train",
    "smoke": "basin.cli.train:smoke",
    "evaluate": "basin.cli.evaluate:evaluate",
    "reproduce": "basin.cli.reproduce:reproduce",
    "train-backbone": "basin.cli.backbone:train_backbone",
    "audit": "basin.cli.audit:audit",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, attr = COMMANDS[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                return None
            return getattr(module, attr, None)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="basin")
def main() -> None:
    """basin: robust image classification with out-of-distribution rejection."""
