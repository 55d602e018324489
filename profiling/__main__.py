"""The profiling lab: ``python -m profiling {bench,static,trace,ab,report,predict,calibrate,accept,launches} --help``."""
from __future__ import annotations

import argparse
import sys


def plain(doc: str | None) -> str:
    """A module docstring as --help shows it: reST's double backticks dropped."""
    return (doc or "").replace("``", "")


HELP = {
    "bench": "every op x implementation at the network's real shapes",
    "static": "compile every Triton kernel for sm_80 / sm_90 and report resources",
    "trace": "torch.profiler over a few training steps, one or two configurations",
    "ab": "two configurations trained interleaved, with a significance test",
    "report": "everything at once: tests, static, bench, trace, A/B -> reports/<device>-<date>",
    "predict": "predict one launch of any @triton.jit kernel on an H100 / H200 / A100, no GPU needed",
    "calibrate": "the static model against published GPU measurements of public Triton kernels",
    "accept": "the first GPU session's acceptance run in one device call (--quick: the CPU smoke version)",
    "launches": "every Triton launch timed alone on a GPU, each configuration; --predict: beside the model (CPU)",
}


def help_only(argv: list[str]) -> bool:
    """Whether the command line only asks for help (nothing to compile)."""
    return any(a in ("-h", "--help") for a in argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["static"], ["predict"], ["calibrate"]) or (argv[:1] == ["launches"] and "--predict" in argv):
        import os
        # compile for real GPUs, not for the interpreter. `python -m profiling` has imported this package
        # (profiling/__init__ -> predict -> kernels) before this line runs, and on a machine without a GPU
        # kernels has turned the interpreter on for every kernel decorated since: run the command again in a
        # process where Triton is in compiled mode from the start (what the error in profiling/cubin.py asks for)
        if os.environ.get("TRITON_INTERPRET") == "1" and "kernels" in sys.modules and not help_only(argv):
            import subprocess
            return subprocess.run([sys.executable, "-m", "profiling", *argv],
                                  env=dict(os.environ, TRITON_INTERPRET="0")).returncode
        os.environ.setdefault("TRITON_INTERPRET", "0")
    from model.cli import Parser

    from . import ab, accept, bench, calibration, launches, predict, report, static, trace
    modules = dict(bench=bench, static=static, trace=trace, ab=ab, report=report, predict=predict,
                   calibrate=calibration, accept=accept, launches=launches)
    run = dict(bench=bench.main, static=static.main, trace=trace.main, ab=ab.main, report=report.main,
               predict=predict.main, calibrate=calibration.main, accept=accept.main, launches=launches.main)
    p = Parser(prog="python -m profiling", description=plain(__doc__))
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, mod in modules.items():
        sp = sub.add_parser(name, help=HELP[name], description=plain(mod.__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
    args = p.parse_args(argv)
    result = run[args.cmd](args)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
