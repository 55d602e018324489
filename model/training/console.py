"""What a run prints: the per-epoch table, the summary over runs, the CPU estimate, and the
printer that keeps a progress line and the table apart."""
from __future__ import annotations

import sys
import time

from ..recipes import RECIPES
from . import distributed
from .config import fmt_duration
from .stats import summarize
from .trainer import Progress

COLUMNS = ("run", "epoch", "train_loss", "train_acc", "val_acc", "tta_acc", "time_s")
SMOKE = "python train.py --device cpu --subset 2000 --batch-size 100 --epochs 2 --tta 0"
# what SMOKE reaches on the stand-in (2-core CPU, 4 runs): 56.1% mean (std 1.0), chance being 10%
CPU_ESTIMATE_AFTER_S = 60.0  # a CPU run predicted to take longer than this says so after its first steps


def fmt_row(values: dict) -> str:
    out = []
    for c in COLUMNS:
        v = values.get(c, "")
        out.append(f"{v:>10.4f}" if isinstance(v, float) else f"{v!s:>10}")
    return " ".join(out)


# the table's own names where the record's key would mislead: the time column is cumulative (whitening,
# training epochs so far, then the final TTA evaluation), not the epoch's own time
SHOWN = {"time_s": "cum_time_s"}


def header() -> str:
    return " ".join(f"{SHOWN.get(c, c):>10}" for c in COLUMNS)


def epoch_row(run: int, row: dict) -> str:
    return fmt_row(dict(row, run=run if row["epoch"] == 1 else ""))


def final_row(run: int, res: dict, quiet: bool) -> str:
    return fmt_row(dict(run=run if quiet else "", epoch="tta", tta_acc=res["accuracy"], time_s=res["time_s"]))


def summary_lines(records: list[dict]) -> list[str]:
    ok = [r for r in records if not r.get("failed")]
    if not ok:
        return ["no run finished"]
    acc = summarize([100 * r["accuracy"] for r in ok])
    t = summarize([r["time_s"] for r in ok])
    lines = [f"accuracy (TTA, %): mean {acc.mean:.2f}  std {acc.std:.2f}  95% CI ±{acc.ci95:.2f}  (n={acc.n})"
             if acc.n > 1 else f"accuracy (TTA, %): {acc.mean:.2f}",
             f"time (s): min {t.min:.3f}  median {t.median:.3f}  max {t.max:.3f}  ({ok[0]['env']['device']})"]
    if ok[0].get("target") is not None:
        hit = [r for r in ok if r.get("reached")]
        tt = summarize([r["time_to_target_s"] for r in hit]) if hit else None
        lines.append(f"time to {100 * ok[0]['target']:.2f}%: reached in {len(hit)}/{len(ok)} runs"
                     + (f"; median {tt.median:.3f} s, mean {tt.mean:.3f} s" if tt else ""))
    recipe = RECIPES.get(ok[0]["config"]["recipe"])
    if recipe is not None and recipe.published is not None:
        lines.append(recipe.published.line() + ("; on the original data set (the JPEG stand-in of ../shared/data "
                                                "is about 3 points harder)" if recipe.dataset == "cifar10" else ""))
    return lines


class CpuEstimate:
    """On a CPU: one line when the first timed step starts (a CPU step at the recipe's batch takes
    seconds, and nothing else would be printed meanwhile), then, as soon as one step past the
    first (which carries one-off work) has been timed, how long the run will take and the
    smoke-run command when that is longer than a minute. Printed once per process."""
    shown = False
    started = False

    def __init__(self, progress: Progress, runs: int = 1, what: str = "this run", batch: int | None = None):
        self.progress, self.runs, self.what, self.batch = progress, runs, what, batch
        self.t0 = self.n0 = None

    def start(self, total: int) -> None:
        """Just before the first step of the first run: say that training has started."""
        if CpuEstimate.started or CpuEstimate.shown:
            return
        CpuEstimate.started = True
        batch = f" of batch {self.batch}" if self.batch else ""
        self.progress.print(f"# training: first step started ({total} steps{batch} on this CPU); an estimate of "
                            f"the run's length follows after the first steps")

    def __call__(self, step: int, total: int) -> None:
        if step == 0:
            return self.start(total)
        if CpuEstimate.shown:
            return
        now = time.perf_counter()
        if self.t0 is None:  # the first step includes one-off work (whitening, allocation)
            self.t0, self.n0 = now, step
            return
        if step - self.n0 < 3 and now - self.t0 < 2:  # quick steps: average a few before saying anything
            return
        per_step = (now - self.t0) / (step - self.n0)
        total_s = per_step * total * 1.05  # + evaluation
        if total_s * self.runs < CPU_ESTIMATE_AFTER_S:
            return
        CpuEstimate.shown = True
        runs = f" (x {self.runs} runs: about {fmt_duration(total_s * self.runs)})" if self.runs > 1 else ""
        self.progress.print(f"estimate: {self.what} takes about {fmt_duration(total_s)} on this CPU "
                            f"({per_step:.2f} s/step x {total} steps){runs}. A GPU takes seconds; for a smoke "
                            f"run here: {SMOKE}")


class Printer:
    """Output of one process: everything on rank 0 of a one-process job; in a torchrun job the
    table comes from rank 0 after the gather, and the ranks only say which run finished."""

    def __init__(self, world: distributed.World, quiet: bool, progress: Progress):
        self.world, self.quiet, self.progress = world, quiet, progress
        self.live = world.size == 1

    def say(self, text: str) -> None:
        if self.live:
            self.progress.print(text)
        elif self.world.rank == 0 or not text.startswith(("#", "warm-up", "compile caches")):
            self.progress.print(f"[rank {self.world.rank}] {text}", file=sys.stderr)

    def row(self, text: str) -> None:
        if self.live:
            self.progress.print(text)


def render_table(records: list[dict], quiet: bool) -> list[str]:
    """The per-epoch table of the records, as a one-process run prints it live."""
    lines = [] if quiet else [header()]
    for rec in records:
        if rec.get("failed"):
            continue
        if not quiet:
            lines += [epoch_row(rec["run"], row) for row in rec["per_epoch"]]
        lines.append(final_row(rec["run"], rec, quiet))
    return lines
