"""Typed options of the lab's commands.

Each command that another command (or a Python caller) runs has an ``Options`` dataclass with one
field per flag of its parser (``add_arguments``), at the same default; ``run(options)`` takes it and
``main(args)`` converts the parsed flags (``Options.from_args``). ``profiling report`` builds its
steps' options directly: a misspelt or missing field is a TypeError where it is written, and
tests/profiling/test_profiling_cli.py checks that every ``Options`` has exactly its parser's flags
with the parser's defaults, so a flag added to a command cannot be silently left out.
"""
from __future__ import annotations

import argparse
import dataclasses


@dataclasses.dataclass(frozen=True)
class Options:
    """The base of a command's options: subclasses declare the fields."""

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The options from parsed flags (extra attributes, such as the sub-command's name, ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def parser_defaults(add_arguments) -> dict:
    """{flag's dest: default} of the parser ``add_arguments`` builds (help excluded)."""
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return {a.dest: a.default for a in p._actions}
