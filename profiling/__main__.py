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
    from . import bench, static
    b = sub.add_parser("bench", help="every op x implementation at the network's real shapes",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(b)
    s = sub.add_parser("static", help="compile every Triton kernel for sm_80 / sm_90 and report resources",
                       description=static.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    static.add_arguments(s)
    args = p.parse_args(argv)
    if args.cmd == "bench":
        bench.run(args)
    elif args.cmd == "static":
        return static.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
