"""Entry point of the ``kokpit`` command: parses arguments and turns known errors into a
one-paragraph message and exit code 1, never a traceback."""

from __future__ import annotations

import argparse
import sys

from kokpit.cli import (
    agent,
    demo,
    install,
    local,
    migrate,
    operator,
    remediation,
    risk,
    rollout,
)
from kokpit.local import (
    AssetsError,
    ClusterError,
    ComponentFailedError,
    KubectlError,
    UnknownReleaseError,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kokpit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    local.register(sub)
    demo.register(sub)
    operator.register(sub)
    remediation.register(sub)
    risk.register(sub)
    rollout.register(sub)
    agent.register(sub)
    install.register(sub)
    migrate.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (
        AssetsError,
        ClusterError,
        ComponentFailedError,
        KubectlError,
        UnknownReleaseError,
    ) as e:
        print(f"kokpit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
