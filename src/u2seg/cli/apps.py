"""The apps: ``u2seg serve`` and ``u2seg gui`` start them (they parse their own options), ``u2seg keys``
manages the HTTP service's API keys."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import U2SegError
from .common import EXIT_OK


def add_app_launchers(sub: argparse._SubParsersAction) -> None:
    # The apps own their options (one definition); `u2seg serve --help` shows them.
    serve = sub.add_parser("serve", help="HTTP service and web page (default http://127.0.0.1:7000/)",
                           add_help=False)
    serve.set_defaults(func=lambda a: _run_app("u2seg.apps.server", "main", a.app_args), passthrough=True)
    gui = sub.add_parser("gui", help="desktop window (PySide6)", add_help=False)
    gui.set_defaults(func=lambda a: _run_app("u2seg.apps.gui", "run_gui", a.app_args), passthrough=True)


def _run_app(module: str, function: str, argv: list[str]) -> int:
    import importlib

    try:
        entry = getattr(importlib.import_module(module), function)
    except ImportError as exc:
        extra = "gui" if module.endswith("gui") else "server"
        raise U2SegError(f"{exc.name or exc} is not installed: pip install 'u2seg[{extra}]'") from None
    return int(entry(argv) or 0)


def add_keys(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="API keys for 'u2seg serve --api-keys KEYS'")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key; it is printed once, as the last line")
    create.add_argument("name", help="who or what the key is for (letters, digits, . _ @ -)")
    create.add_argument("--file", required=True, type=Path, metavar="KEYS", help="keys file (appended to)")
    create.add_argument("--rpm", type=int, metavar="N", help="requests per minute for this key")
    create.add_argument("--concurrent", type=int, metavar="N", help="requests at once for this key")
    create.set_defaults(func=_cmd_keys_create)
    listing = actions.add_parser("list", help="the keys' names, dates and limits (never the keys)")
    listing.add_argument("--file", required=True, type=Path, metavar="KEYS")
    listing.set_defaults(func=_cmd_keys_list)
    revoke = actions.add_parser("revoke", help="remove a key; a running server stops taking it within a second")
    revoke.add_argument("name")
    revoke.add_argument("--file", required=True, type=Path, metavar="KEYS")
    revoke.set_defaults(func=_cmd_keys_revoke)


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from ..apps.keys import create_key

    key = create_key(args.file, args.name, requests_per_minute=args.rpm, concurrent=args.concurrent)
    print(f"added key {args.name!r} to {args.file}; it is shown only now: keep it (a lost key is revoked "
          f"and made anew)", file=sys.stderr)
    print(key)
    return EXIT_OK


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from ..apps.keys import read_keys

    for record in read_keys(args.file):
        limits = ", ".join(f"{k} {v}" for k, v in (("rpm", record.requests_per_minute),
                                                    ("concurrent", record.concurrent)) if v is not None)
        print(f"{record.name:24} {record.created:25} {limits or 'server defaults'}")
    return EXIT_OK


def _cmd_keys_revoke(args: argparse.Namespace) -> int:
    from ..apps.keys import revoke_key

    revoke_key(args.file, args.name)
    print(f"revoked key {args.name!r} in {args.file}")
    return EXIT_OK
