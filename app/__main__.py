"""``python -m app --host H --port P`` serves the playground with uvicorn."""

from __future__ import annotations

import argparse
import os
import socket

import uvicorn

from app.serving import server_options
from app.settings import LOOPBACK_HOSTS, get_settings

WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def served_hosts(host: str) -> list[str]:
    """The names ``--host`` serves: itself, or for a wildcard address this machine's name and
    addresses (so ``--host 0.0.0.0`` answers ``http://<hostname>:8000`` too)."""
    if host not in WILDCARD_ADDRESSES:
        return [host]
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return sorted(name for name in names if name)


def default_allowed_hosts(host: str) -> None:
    """``PLAYGROUND_ALLOWED_HOSTS``, when not set: the loopback names plus what ``host`` serves."""
    if "PLAYGROUND_ALLOWED_HOSTS" not in os.environ:
        hosts = dict.fromkeys([*LOOPBACK_HOSTS, *served_hosts(host)])
        os.environ["PLAYGROUND_ALLOWED_HOSTS"] = ",".join(hosts)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    default_allowed_hosts(args.host)
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        **server_options(get_settings()),
    )


if __name__ == "__main__":
    main()
