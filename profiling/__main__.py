"""The profiling lab: ``python -m profiling {bench,static,trace,ab,report} --help``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m profiling", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    from . import bench
    b = sub.add_parser("bench", help="every op x implementation at the network's real shapes",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(b)
    args = p.parse_args(argv)
    if args.cmd == "bench":
        bench.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
