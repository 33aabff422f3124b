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
VERB_MODULES: tuple[str, ...] = ("cvfer.cli.data", "cvfer.cli.prepare", "cvfer.cli.eval", "cvfer.cli.train", "cvfer.cli.codec", "cvfer.cli.compare", "cvfer.cli.demo", "cvfer.cli.weights")


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an epilog starting with "example" keeps its lines (one command each)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class CvferArgumentParser(argparse.ArgumentParser):
    """The parser of `cvfer` and of every verb: `ExamplesHelpFormatter` unless told otherwise."""

    def __init__(self, *args: object, formatter_class: type = ExamplesHelpFormatter, **kwargs: object):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)  # type: ignore[arg-type]


def installed_version() -> str:
    """cvfer's version as installed (pyproject.toml's), from the package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cvfer")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every verb."""
    parser = CvferArgumentParser(
        prog="cvfer",
        description="Facial expression recognition from the compressed video bitstream.",
        epilog=(
            "examples:\n"
            "  cvfer demo                  # the synthetic benchmark end to end, about 5 minutes\n"
            "  cvfer predict runs/demo/mic/fold_00/model.pt my_video.mp4\n"
            "  cvfer VERB --help           # every verb's options, with examples"
        ),
    )
    parser.add_argument("--version", action="version", version=f"cvfer {installed_version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    # Every verb's parser is a CvferArgumentParser too, so an epilog of examples keeps its lines.
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=CvferArgumentParser)
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
    except OSError as error:  # the system refused a file operation no check foresaw (a name too long, an I/O error)
        if args.debug:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"cvfer: error: {where}{error.strerror or error} (check the path, or run again with --debug)", file=sys.stderr)
        return 2
    except UnicodeDecodeError as error:  # a text input (CSV, JSON) in another encoding, read where no check names it
        if args.debug:
            raise
        print(f"cvfer: error: a text file given is not UTF-8 ({error}) (save it as UTF-8; --debug shows which)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cvfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
