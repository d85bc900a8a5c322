"""The ``atomvib`` command: a thin dispatcher over subcommand modules, imported lazily.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``. Any
:class:`~atomvib.errors.AtomvibError` becomes one line on stderr and its exit code; nothing else is
caught, so real bugs still show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

#: subcommand → module under atomvib.cli
COMMANDS = {
    "phonons": "phonons",
    "engines": "engines",
    "ins": "ins",
    "ir": "optical",
    "raman": "optical",
    "compare": "compare",
    "identify": "identify",
    "predict": "predict",
    "train": "predict",
    "finetune": "finetune",
    "kappa": "kappa",
    "qha": "qha",
    "md": "md",
    "batch": "batch",
    "db": "batch",
    "serve": "serve",
}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atomvib",
        description="Atomic vibrations and vibrational spectra of crystals and molecules "
        "from machine-learning potentials, xTB, DFT or your own phonopy forces.",
        epilog="Run 'atomvib COMMAND --help' for the options of each command.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"atomvib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for mod_name in dict.fromkeys(COMMANDS.values()):
        try:
            mod = importlib.import_module(f"atomvib.cli.{mod_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"atomvib.cli.{mod_name}":
                continue  # subcommand not part of this build
            raise
        mod.add_parser(sub)
        seen.add(mod_name)
    return parser


#: (message regex, category) of third-party warnings that say nothing a CLI user can act on; hidden while a
#: command runs (see :func:`quiet_third_party_warnings`). Everything else is shown.
NOISY_WARNINGS = (
    # phonopy ≥ 4 announces its new primitive_matrix default on every load of a phonopy.yaml
    (r"primitive_matrix defaulted", Warning),
    # Euphonic falls back to serial when torch and its C extension bring two OpenMP runtimes
    (r"More than one OpenMP library", UserWarning),
    # CHGNet's model converts a tensor that requires grad (its volume), harmless, once per structure
    (r"Converting a tensor with requires_grad=True to a scalar", UserWarning),
)


def quiet_third_party_warnings() -> None:
    """Add the :data:`NOISY_WARNINGS` filters. Call it only inside ``warnings.catch_warnings()``, so the
    filters end with the block (importing atomvib, or calling its API, changes no warning filter)."""
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line as given (provenance)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from ..errors import AtomvibError

    with warnings.catch_warnings():
        quiet_third_party_warnings()
        try:
            return int(args.func(args) or 0)
        except AtomvibError as exc:
            print(f"atomvib {args.command}: error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"atomvib {args.command}: interrupted; results written so far are kept", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
