"""The ``mindserve`` command: argument parsing and dispatch (see docs/cli.md).

Exit status: 0 when nothing is wrong, 1 when a check found a problem, 2 for a command line
that cannot be understood.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mindserve._cli import report as report_module
from mindserve._define.model import DEC_MODES
from mindserve._version import __version__

_KEY_LENGTHS = (16, 24, 32)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mindserve",
        description="Check a mindserve installation, a MindIR file or a servable.",
        epilog="Exit status: 0 nothing wrong, 1 a problem was found, 2 a bad command line. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"mindserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--json", action="store_true", help="print the report as JSON, for programs")
        sub.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            metavar="SECONDS",
            help="give up on a child process (an import, a load) after this long (default: 600)",
        )
        return sub

    command(
        "doctor",
        "Python, MindSpore and its native library, devices and thread settings: is this machine ready?",
    )
    info = command("info", "The inputs, outputs, batch dimension and encryption of a MindIR file.")
    info.add_argument("model", metavar="MODEL.mindir")
    _key_arguments(info)
    check = command(
        "check",
        "Import a servable (a Python file or module defining a mindserve.Servable, or a MindSpore Serving "
        "servable directory) and check its versions, models and methods.",
    )
    check.add_argument(
        "target",
        metavar="DIR_OR_MODULE",
        help="a .py file, a module name (importable from the current directory), a servable directory "
        "holding servable_config.py, or a directory of such servable directories",
    )
    check.add_argument("--servable", metavar="NAME", help="check only the servable of this name")
    check.add_argument(
        "--load",
        action="store_true",
        help="also load and warm up each version, and run a generated instance through each method",
    )
    _key_arguments(check, "for a MindSpore Serving servable's encrypted MindIR files")
    return parser


def _key_arguments(parser: argparse.ArgumentParser, purpose: str = "for an encrypted MindIR file") -> None:
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument(
        "--dec-key",
        metavar="KEY",
        help=f"the decryption key {purpose}: text (its UTF-8 bytes) or hex:<hex digits>",
    )
    keys.add_argument(
        "--dec-key-file", metavar="FILE", help="read the key's bytes from FILE (keeps it off ps)"
    )
    parser.add_argument(
        "--dec-mode", default="AES-GCM", choices=DEC_MODES, help="the encryption mode (default AES-GCM)"
    )


def _key(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bytes | None:
    if getattr(args, "dec_key_file", None):
        try:
            with open(args.dec_key_file, "rb") as handle:
                key = handle.read()
        except OSError as exc:
            parser.error(f"--dec-key-file: cannot read {args.dec_key_file}: {exc.strerror}")
    elif getattr(args, "dec_key", None):
        text = args.dec_key
        if text.startswith("hex:"):
            try:
                key = bytes.fromhex(text[4:])
            except ValueError:
                parser.error(f"--dec-key: 'hex:' must be followed by hexadecimal digits; got {text[4:]!r}")
        else:
            key = text.encode()
    else:
        return None
    if len(key) not in _KEY_LENGTHS:
        parser.error(f"the decryption key must be 16, 24 or 32 bytes long; got {len(key)} bytes")
    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be a number of seconds > 0; got {args.timeout:g}")
    # Each finding as it is found (the text report), and what a slow step does (stderr).
    previous = report_module.LIVE
    report_module.LIVE = report_module.Live(None if args.json else sys.stdout, sys.stderr)
    try:
        report = _run(parser, args)
    finally:
        report_module.LIVE = previous
    report.write(as_json=args.json)
    sys.stdout.flush()
    return report.exit_status


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> report_module.Report:
    """The report of the command ``args`` names."""
    if args.command == "doctor":
        from mindserve._cli.doctor import doctor

        return doctor(args.timeout)
    if args.command == "info":
        from mindserve._cli.info import info

        return info(args.model, _key(parser, args), args.dec_mode, args.timeout)
    from mindserve._cli.check import check

    target = args.target
    if not os.path.exists(target) and (target.endswith(".py") or os.sep in target):
        parser.error(f"{target} does not exist")
    return check(target, args.servable, args.load, _key(parser, args), args.dec_mode, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
