"""Sweep files: a grid of training configurations in TOML (Python's own tomllib reads it; the
format of pyproject.toml, so no new dependency and no YAML pitfalls).

    runs = 20                        # runs per configuration (else --runs)

    [base]                           # train.py flags for every configuration, without the --
    recipe = "airbench94_muon"
    cuda_graph = true

    [grid]                           # every combination of these lists
    backend = ["eager", "triton"]
    compile = ["none", "default"]
    muon_lr = [0.20, 0.24]           # a recipe field: becomes --set muon_lr=...

    [[configs]]                      # optional explicit configurations, each crossed with the grid
    name = "fp8 convs"
    backend = "fp8"

Keys are train.py flag names (dashes or underscores) or recipe fields (``--set``). A value is
a string, a number, a boolean (a switch: true adds it, false leaves it out) or, for the
repeatable --op and --set, a list or a table ({conv = "triton"}). Flags on the command line are
the base below the file's [base]; the grid and the configurations override both.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os

from ..cli import did_you_mean
from ..recipes import Recipe

TOP_KEYS = ("runs", "base", "grid", "configs")


class SweepError(ValueError):
    pass


def _load_toml(path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise SweepError("reading a sweep file needs Python 3.11+ (tomllib) or `pip install tomli`") from None
    if not path.endswith(".toml"):
        raise SweepError(f"--sweep {path}: a sweep file is TOML and ends in .toml")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SweepError(f"--sweep {path}: no such file") from None
    except OSError as e:
        raise SweepError(f"--sweep {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"--sweep {path}: not valid TOML: {e}") from None


def _flag_table(parser: argparse.ArgumentParser) -> dict:
    out = {}
    for a in parser._actions:
        longs = [o for o in a.option_strings if o.startswith("--")]
        if longs and a.dest not in ("help", "sweep", "json", "progress", "quiet", "runs"):
            out[a.dest] = (longs[0], a)
    return out


def to_flags(values: dict, parser: argparse.ArgumentParser, where: str) -> list[str]:
    """{key: value} of a sweep file -> train.py flags; SweepError names a bad key or value."""
    flags_of = _flag_table(parser)
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)} - {"name"}
    argv = []
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest == "name":
            continue
        if dest in flags_of:
            opt, action = flags_of[dest]
            if isinstance(action, argparse._AppendAction):
                items = ([f"{k}={v}" for k, v in value.items()] if isinstance(value, dict)
                         else value if isinstance(value, list) else [value])
                for item in items:
                    argv += [opt, str(item)]
            elif action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
                if not isinstance(value, bool):
                    raise SweepError(f"{where}: {key} is a switch: true or false, not {value!r}")
                if isinstance(action, argparse.BooleanOptionalAction):
                    argv.append(opt if value else "--no-" + opt[2:])
                elif value:
                    argv.append(opt)
            else:
                if isinstance(value, (list, dict, bool)):
                    raise SweepError(f"{where}: {key} takes one value, not {value!r}")
                argv += [opt, str(value)]
        elif dest in recipe_fields:
            argv += ["--set", f"{dest}={str(value).lower() if isinstance(value, bool) else value}"]
        elif key == "runs":
            raise SweepError(f"{where}: runs is set once, at the top of the file")
        else:
            raise SweepError(f"{where}: unknown key {key!r}{did_you_mean(dest, [*flags_of, *recipe_fields])}: "
                             f"not a train.py flag ({', '.join(sorted(flags_of))}) nor a recipe field")
    return argv


def _name(values: dict) -> str:
    def short(v):
        if isinstance(v, dict):
            return ",".join(f"{k}={x}" for k, x in v.items())
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return " ".join(f"{k}={short(v)}" for k, v in values.items() if k != "name")


def load(path: str, parser: argparse.ArgumentParser) -> tuple[list[tuple[str, list[str]]], int | None]:
    """The configurations of a sweep file as (name, flags) in the file's order (the grid's last
    key varies fastest), and its ``runs`` (None when the file leaves it to --runs)."""
    doc = _load_toml(path)
    where = os.path.basename(path)
    unknown = set(doc) - set(TOP_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}"
                         f"{did_you_mean(sorted(unknown)[0], TOP_KEYS) if len(unknown) == 1 else ''}; "
                         f"a sweep file has {', '.join(TOP_KEYS)}")
    runs = doc.get("runs")
    if runs is not None and (not isinstance(runs, int) or isinstance(runs, bool) or runs < 1):
        raise SweepError(f"{where}: runs must be a whole number, at least 1 (got {runs!r})")
    base = doc.get("base", {})
    grid = doc.get("grid", {})
    explicit = doc.get("configs", [{}])
    if not isinstance(base, dict) or not isinstance(grid, dict) or not isinstance(explicit, list):
        raise SweepError(f"{where}: [base] and [grid] are tables, [[configs]] an array of tables")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise SweepError(f"{where}: grid.{k} must be a non-empty list of values")
    base_flags = to_flags(base, parser, f"{where} [base]")
    out, names = [], set()
    for c_i, cfg in enumerate(explicit):
        if not isinstance(cfg, dict):
            raise SweepError(f"{where}: each [[configs]] entry is a table")
        cfg_flags = to_flags(cfg, parser, f"{where} configs[{c_i}]")
        for combo in itertools.product(*grid.values()) if grid else [()]:
            g = dict(zip(grid, combo))
            flags = base_flags + cfg_flags + to_flags(g, parser, f"{where} [grid]")
            name = " ".join(x for x in (cfg.get("name") or _name(cfg), _name(g)) if x) or "base"
            if name in names:
                raise SweepError(f"{where}: two configurations are both named {name!r}")
            names.add(name)
            out.append((name, flags))
    return out, runs
