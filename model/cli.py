"""One rule for bad input on every command line of the lab (train.py, python -m profiling ...):
one line ``error: ...`` on stderr, naming the problem and, where there is one, the closest
valid name; exit status 2; no usage block, no traceback. Exit status 1 stays reserved for "a
run failed" and 130 for "interrupted".

    raise usage_error("--subset must be at least 1 (got 0)")   # prints the line, exits 2
    p = Parser(...)     # an argparse parser whose own errors follow the same rule
"""
from __future__ import annotations

import argparse
import difflib
import re
import sys
from typing import Iterable

__all__ = ["Parser", "SessionError", "UsageError", "did_you_mean", "usage_error"]

USAGE_EXIT = 2


class SessionError(ValueError):
    """A bad flag, missing data or an unusable device found by the library (model.training.session, model.training.distributed,
    profiling): a one-line message for the user, which the command line prints under the rule above."""


class UsageError(SystemExit):
    """Bad input. A SystemExit with status 2 whose ``message`` is the one line (without
    ``error:``); ``str()`` gives the printed line."""

    def __init__(self, message: str):
        super().__init__(USAGE_EXIT)
        self.message = message

    def __str__(self) -> str:
        return f"error: {self.message}"


def usage_error(message: str) -> UsageError:
    """Print ``error: message`` on stderr now (so it is seen wherever the exit is caught) and
    return the exception to raise."""
    message = " ".join(str(message).split())  # one line, whatever the caller's text held
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return UsageError(message)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest known name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    if not close:
        close = [k for k in map(str, known) if k.lower() == str(name).lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


_CHOICE = re.compile(r"invalid choice: (['\"]?)(?P<value>.*?)\1 \(choose from (?P<choices>.*)\)$")
_ONE_ARG = re.compile(r"argument (?P<flag>--[\w-]+)(/\S+)?: expected one argument$")


class Parser(argparse.ArgumentParser):
    """argparse with the lab's rule for errors (one line, exit 2, closest name). ``--help``
    is unchanged. Sub-parsers made with ``add_subparsers`` are of this class too."""

    def error(self, message: str):  # noqa: D401 (argparse's hook)
        m = _CHOICE.search(message)
        if m:
            choices = [c.strip().strip("'\"") for c in m.group("choices").split(",")]
            message = (message[:m.start()] + f"invalid choice {m.group('value')!r}"
                       + did_you_mean(m.group("value"), choices) + f"; choose from {', '.join(choices)}")
        m = _ONE_ARG.search(message)
        if m:
            action = next((a for a in self._actions if m.group("flag") in a.option_strings), None)
            if action is not None and action.metavar == "FLAGS":
                message += f'; its value is a list of flags: quote it, e.g. {m.group("flag")} "--backend triton"'
        prog = self.prog.split()[-1] if self.prog else ""
        lead = f"{prog}: " if prog and prog not in ("train.py", "profiling") else ""
        raise usage_error(lead + message)
