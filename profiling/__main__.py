"""The profiling lab: ``python -m profiling {bench,static,trace,ab,report} --help``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["static"]:
        import os
        # compile for real GPUs, not for the interpreter: decide before any kernel is decorated
        os.environ.setdefault("TRITON_INTERPRET", "0")
    p = argparse.ArgumentParser(prog="python -m profiling", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    from . import ab, bench, report, static, trace
    b = sub.add_parser("bench", help="every op x implementation at the network's real shapes",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(b)
    s = sub.add_parser("static", help="compile every Triton kernel for sm_80 / sm_90 and report resources",
                       description=static.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    static.add_arguments(s)
    t = sub.add_parser("trace", help="torch.profiler over a few training steps, one or two configurations",
                       description=trace.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    trace.add_arguments(t)
    a = sub.add_parser("ab", help="two configurations trained interleaved, with a significance test",
                       description=ab.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ab.add_arguments(a)
    r = sub.add_parser("report", help="everything at once: tests, static, bench, trace, A/B -> reports/<device>-<date>",
                       description=report.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_arguments(r)
    args = p.parse_args(argv)
    if args.cmd == "bench":
        bench.run(args)
    elif args.cmd == "report":
        report.main(args)
    elif args.cmd == "ab":
        ab.run(args)
    elif args.cmd == "trace":
        trace.run(args)
    elif args.cmd == "static":
        return static.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
