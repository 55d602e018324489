"""Seeded runs of one or more configurations (``execute``), spread over the ranks of a torchrun job
(model/training/distributed.py) when there are several: each rank trains whole runs (run r on rank
r mod K), rank 0 gathers every record. A failed configuration or run becomes a failure record; the
rest goes on. Nothing here exits the process."""
from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass, field

import torch

from ..cli import SessionError
from . import distributed
from .config import TrainConfig
from .console import CpuEstimate, Printer, epoch_row, final_row, header, render_table, summary_lines
from .session import Session
from .stats import summarize
from .trainer import Progress


def append_record(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


@dataclass
class Config:
    """One configuration of a sweep (or the only one): its name, its train.py flags (for the
    failure record) and the checked TrainConfig they make."""
    name: str
    argv: list
    train: TrainConfig


@dataclass
class Outcome:
    records: list       # every run's record, successes and failures, in (configuration, run) order
    interrupted: bool = False
    write_failed: bool = False  # a record could not be written to --json

    @property
    def failures(self) -> list:
        return [r for r in self.records if r.get("failed")]


def with_fp8_counts(res: dict, net) -> dict:
    """``res`` with the run's fp8 counts (``fp8``: launches that saw NaN / inf, launches that
    saturated a value beyond their delayed scale; kernels/fp8.py) when an fp8 layer ran: the
    network's fp8 state, which the run reset at its start (model/net.py ``reset_parameters``)."""
    counts = net.fp8.counts()
    return res if counts is None else dict(res, fp8=counts)


def failure_record(cfg_index: int, cfg: Config, run: int, seed: int, exc: BaseException, rank: int) -> dict:
    kind = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else type(exc).__name__
    return dict(failed=True, sweep=dict(index=cfg_index, name=cfg.name), flags=cfg.argv, run=run, seed=seed,
                rank=rank, error=f"{kind}: {exc}".splitlines()[0],
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:])


def _keep(record: dict, json_path: str | None, world: distributed.World) -> bool:
    """Append a record as soon as its run finishes; on a write error keep going and say so."""
    if not json_path:
        return True
    path = json_path if world.size == 1 else distributed.partial_path(json_path, world.rank)
    try:
        append_record(path, record)
        return True
    except OSError as e:
        print(f"warning: could not write the record of run {record['run']} to {path}: {e.strerror or e}; "
              "the records written before it are kept, this one is printed only", file=sys.stderr, flush=True)
        return False


def execute(configs: list[Config], runs: int, *, world: distributed.World | None = None, json_path: str | None = None,
            quiet: bool = False, progress: Progress | None = None, interleave: bool = False,
            strict: bool = False) -> Outcome:
    """Train ``runs`` seeded runs of every configuration. Run r of every configuration goes to
    rank r mod K (so the seeds and results do not depend on K, and an A/B pair shares a GPU).
    ``interleave``: prepare every configuration first, then train A0 B0 A1 B1 ... (A/B runs);
    otherwise one configuration after the other, each dropped when done. A configuration that
    fails to build, or a run that raises, becomes a failure record; the rest goes on (``strict``:
    a SessionError while building is raised instead: one configuration, a usage error). Returns
    the gathered records on rank 0 (the local ones elsewhere)."""
    world = world or distributed.World.single()
    progress = progress or Progress(False)
    ex = _Execution(configs, runs, world, json_path, quiet, progress, interleave, strict,
                    Printer(world, quiet, progress))
    interrupted = False
    try:
        ex.run_mine([r for r in range(runs) if r % world.size == world.rank])
    except KeyboardInterrupt:
        interrupted = True
        ex.say_interrupted()
    outcome = Outcome(ex.records, interrupted, ex.write_failed)
    if world.size > 1 and not interrupted:
        _gather(outcome, world, json_path)
    return outcome


@dataclass
class _Execution:
    """The state of one ``execute``: the configurations built so far (or the error that building
    one raised), the records kept, and whether writing one failed."""
    configs: list[Config]
    runs: int
    world: distributed.World
    json_path: str | None
    quiet: bool
    progress: Progress
    interleave: bool
    strict: bool
    out: Printer
    records: list = field(default_factory=list)
    sessions: dict = field(default_factory=dict)
    data_cache: dict = field(default_factory=dict)
    write_failed: bool = False

    def run_mine(self, mine: list[int]) -> None:
        """This rank's runs: interleaved across configurations, or one configuration after the other."""
        if mine and self.interleave:
            for i, cfg in enumerate(self.configs):
                self.build(i, cfg)
            for r in mine:
                for i, cfg in enumerate(self.configs):
                    self.one(i, cfg, r)
        elif mine:
            for i, cfg in enumerate(self.configs):
                self.build(i, cfg)
                if not self.quiet:  # each configuration's own table
                    self.out.row(header())
                for r in mine:
                    self.one(i, cfg, r)
                self.sessions.pop(i, None)

    def build(self, i: int, cfg: Config):
        """Configuration i's Session, prepared and warmed up once (or the exception that stopped it)."""
        if i in self.sessions:
            return self.sessions[i]
        out = self.out
        try:
            s = Session.prepare(cfg.train, self.data_cache)
            if len(self.configs) > 1:
                out.say(f"## {cfg.name}")
            out.say(s.describe())
            for note in s.notes:
                out.say(note)
            if s.device.type == "cpu" and i == 0:
                out.say("# note: CPU timings say nothing about GPU speed")
            s.warmup(self.progress, say=out.say)
        except SessionError:
            if self.strict:
                raise
            s = sys.exc_info()[1]
        except Exception as e:  # a bad configuration: every run of it here fails, the rest goes on
            s = e
        self.sessions[i] = s
        return s

    def one(self, i: int, cfg: Config, r: int) -> None:
        """Run r of configuration i: its record (or failure record) printed, kept and written."""
        seed = cfg.train.seed + r
        s = self.build(i, cfg)
        try:
            if isinstance(s, BaseException):
                raise s
            res = self.train(s, cfg, r, seed)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            rec = failure_record(i, cfg, r, seed, e, self.world.rank)
            self.out.say(f"FAILED: {cfg.name or 'run'} run {r} (seed {seed}): {rec['error']}")
            if s is not None and not isinstance(s, BaseException) and s.device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            rec = self.success(s, i, cfg, r, seed, res)
        self.records.append(rec)
        if not _keep(rec, self.json_path, self.world):
            self.write_failed = True

    def train(self, s: Session, cfg: Config, r: int, seed: int) -> dict:
        estimate = (CpuEstimate(self.progress, runs=self.runs, what="this run", batch=s.recipe.batch_size)
                    if s.device.type == "cpu" else None)
        live = not (self.quiet or self.interleave)
        res = s.train(seed, log=(lambda row: self.out.row(epoch_row(r, row))) if live else None,
                      progress=self.progress, on_step=estimate,
                      label=f"{cfg.name + ' ' if len(self.configs) > 1 else ''}run {r + 1}/{self.runs}")
        return with_fp8_counts(res, s.net)

    def success(self, s: Session, i: int, cfg: Config, r: int, seed: int, res: dict) -> dict:
        out = self.out
        rec = dict(config=s.config, env=s.env, run=r, rank=self.world.rank, **res)
        if len(self.configs) > 1 or cfg.name:
            rec["sweep"] = dict(index=i, name=cfg.name)
        if self.interleave:  # configurations alternate: one labelled line per run instead of a table
            out.say(f"  run {r} {cfg.name}: {res['time_s']:.3f} s  {100 * res['accuracy']:.2f}%")
        else:
            out.row(final_row(r, res, self.quiet))
        if not out.live:
            out.say(f"{cfg.name + ': ' if cfg.name else ''}run {r} (seed {seed}) done: "
                    f"{100 * res['accuracy']:.2f}%  {res['time_s']:.3f} s")
        return rec

    def say_interrupted(self) -> None:
        world, json_path = self.world, self.json_path
        self.progress.clear()
        where = (f"; the records written so far are in {json_path if world.size == 1 else distributed.partial_path(json_path, world.rank)}"
                 if json_path else "")
        print(f"interrupted{f' (rank {world.rank})' if world.size > 1 else ''}: {len(self.records)} run(s) finished"
              + where, file=sys.stderr, flush=True)


def _gather(outcome: Outcome, world: distributed.World, json_path: str | None) -> None:
    """Every rank's records onto rank 0, in sweep and run order, written to ``json_path`` there."""
    gathered = world.gather(outcome.records)
    if world.rank == 0:
        outcome.records = sorted(gathered, key=lambda r: (r.get("sweep", {}).get("index", 0), r["run"]))
        if json_path:
            try:
                for rec in outcome.records:
                    append_record(json_path, rec)
            except OSError as e:
                outcome.write_failed = True
                print(f"warning: could not write {json_path}: {e.strerror or e}; each rank's records are kept in "
                      f"{distributed.partial_path(json_path, 'N')}", file=sys.stderr)
    world.barrier()
    if json_path and not outcome.write_failed:
        distributed.remove_partial(json_path, world.rank)


def report(outcome: Outcome, configs: list[Config], quiet: bool, live: bool) -> list[str]:
    """The lines rank 0 prints at the end: the table (when not printed live), the summary of
    each configuration, the failures, and for a sweep one row per configuration."""
    lines = []
    by_cfg = {i: [r for r in outcome.records if r.get("sweep", {}).get("index", 0) == i] for i in range(len(configs))}
    for i, cfg in enumerate(configs):
        recs = by_cfg[i]
        if len(configs) > 1:
            lines.append(f"## {cfg.name}")
        if not live:
            lines += render_table(recs, quiet)
        lines += summary_lines(recs)
    if len(configs) > 1:
        lines.append("")
        lines.append(f"{'configuration':<40} {'runs':>5} {'failed':>6} {'acc mean %':>10} {'95% CI':>8} "
                     f"{'median s':>9}")
        for i, cfg in enumerate(configs):
            ok = [r for r in by_cfg[i] if not r.get("failed")]
            bad = len(by_cfg[i]) - len(ok)
            if ok:
                acc = summarize([100 * r["accuracy"] for r in ok])
                t = summarize([r["time_s"] for r in ok])
                lines.append(f"{cfg.name:<40} {len(ok):>5} {bad:>6} {acc.mean:>10.2f} {'±%.2f' % acc.ci95 if acc.n > 1 else '-':>8} "
                             f"{t.median:>9.3f}")
            else:
                lines.append(f"{cfg.name:<40} {0:>5} {bad:>6} {'-':>10} {'-':>8} {'-':>9}")
    for f in outcome.failures:
        lines.append(f"FAILED: {f['sweep']['name'] or 'configuration'} run {f['run']} (seed {f['seed']}, rank "
                     f"{f['rank']}): {f['error']}")
    return lines
