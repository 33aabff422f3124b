"""`cvfer` command line: thin verbs over the package. Errors print as one line unless --debug.

Exit status: 0 done; 1 done, but the verb reports a negative result (`inspect`: not MIC-ready,
`predict`/`compare`: some inputs failed); 2 an error (a `CvferError` or a bad argument), one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cvfer.errors import CvferError

# Each module defines `register(subparsers)`, adding its verbs with `set_defaults(func=handler)`;
# a handler takes the parsed namespace and returns an exit code.
VERB_MODULES: tuple[str, ...] = ("cvfer.cli.data", "cvfer.cli.prepare", "cvfer.cli.eval", "cvfer.cli.train", "cvfer.cli.codec", "cvfer.cli.compare", "cvfer.cli.demo")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="cvfer",
        description="Facial expression recognition from the compressed video bitstream.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERB_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cvfer` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CvferError as error:
        if args.debug:
            raise
        print(f"cvfer: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cvfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
