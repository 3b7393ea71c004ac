"""`make lab`'s server: Voila over the dashboard notebook, on loopback unless a token guards it.

``python -m app.serve NOTEBOOK --ip 127.0.0.1 --port 8866 [VOILA FLAGS...]``

Anyone who reaches the page can start jobs and read the data folder, so an address other than
loopback needs a token: ``DFLAB_LAB_TOKEN`` (from the environment, so that it never shows in
``ps``), which the page then asks for (``http://HOST:PORT/?token=...``). Without one the server
refuses to start and says how to make one. On loopback a token is used when given.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

#: where the token comes from (an environment variable, not an argument: argv is public)
TOKEN_ENV = "DFLAB_LAB_TOKEN"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for everything else, ``0.0.0.0`` (every
    interface) and host names included."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def voila_argv(notebook: str, ip: str, port: int, token: str, flags: list[str]) -> list[str]:
    """Voila's own arguments; raises SystemExit (the refusal, one line) for an address other
    than loopback without a token."""
    if not is_loopback(ip) and not token:
        raise SystemExit(
            f"dflab lab: error: serving on {ip or 'every interface'} lets anyone who reaches it "
            f"start jobs and read the data folder; set a token first, e.g. "
            f"`export {TOKEN_ENV}=$(python3 -c 'import secrets; print(secrets.token_urlsafe())')`"
            f", and open http://HOST:{port}/?token=<it> (or keep 127.0.0.1 and use an SSH "
            f"tunnel: ssh -L {port}:127.0.0.1:{port} host)")
    argv = [notebook, "--no-browser", f"--port={port}", f"--Voila.ip={ip}",
            "--Voila.port_retries=0", *flags]
    return argv + ([f"--Voila.token={token}"] if token else [])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__.split("\n")[0])
    ap.add_argument("notebook")
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8866)
    args, flags = ap.parse_known_args(argv)
    token = os.environ.get(TOKEN_ENV, "").strip()
    sys.argv = ["voila", *voila_argv(args.notebook, args.ip, args.port, token, flags)]
    from voila.app import main as voila_main  # in this process: the token stays out of argv

    voila_main()


if __name__ == "__main__":
    main()
