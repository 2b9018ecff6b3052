"""The `zhizao` command line: one root group; each component owns its own subcommands."""

from __future__ import annotations

import importlib
import logging
import os

import click

# name -> "module:attribute" of a click command or group; imported only when used, so `zhizao --help`
# stays fast and a component's heavy imports (numba, asyncua, fastapi) load only for its own commands.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("zhizao.demo:demo", "Run the whole platform on this machine (simulated cluster, agents, broker, cloud)."),
    "seeds": ("zhizao.seeds.cli:seeds", "Check and inspect the scenario seeds."),
    "sim": ("zhizao.edge.sim.cli:sim", "Run the OPC UA factory simulator for a scenario."),
    "edge": ("zhizao.edge.cli:edge", "Run, check and bootstrap edge agents."),
    "cloud": ("zhizao.cloud.cli:cloud", "Run the cloud service and manage its tokens and database."),
    "bench": ("zhizao.bench:bench", "Benchmarks with same-run baselines (edge, ingest, kernels)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args: object, lazy: dict[str, tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Static help texts: listing the commands must not import every component.
        rows = [(name, self._lazy[name][1]) for name in sorted(self._lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            target = self._lazy[cmd_name][0]
            module_name, attr = target.split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{target} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=_COMMANDS)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="zhizao")
def cli(verbose: int) -> None:
    """zhizao (智造): OPC UA edge agents, Sparkplug B over MQTT, a cloud for live OEE and remote O&M."""
    # Our lifecycle lines (started, listening, online, stopped) are INFO and shown by default; libraries only
    # speak at WARNING. -v shows our DEBUG lines, -vv everyone's.
    ours = os.environ.get("ZHIZAO_LOG_LEVEL", "INFO") if verbose == 0 else "DEBUG"
    logging.basicConfig(level="DEBUG" if verbose >= 2 else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    logging.getLogger("zhizao").setLevel(ours)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="zhizao")
