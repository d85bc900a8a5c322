"""``atomvib serve``: the web app (upload → preview → phonons → spectra → fit to a measurement) in a browser."""

from __future__ import annotations

import argparse
import ipaddress
import sys

EPILOG = """examples:
  atomvib serve                                   # http://127.0.0.1:8000, data in ./atomvib_web
  atomvib serve --port 8080 --data ~/atomvib_web --workers 4
  atomvib serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"   # others on the network, with a token
  atomvib serve --users users.txt --add-user alice                 # add a user: prints alice's new token
  atomvib serve --host 0.0.0.0 --users users.txt                   # a facility: one token per user, each user
                                                                   # sees only their own jobs and results
  atomvib serve --db postgresql+psycopg://me@db/atomvib --scheduler tcp://head:8786   # a group's cluster

what it does:
  pages for a new calculation (upload or a bundled example, 3D view, the direct predictor's DOS and Cv as a
  preview), the job list with the live progress of running jobs, results (dispersion with total and partial
  DOS, a committee's band, a molecule's normal modes, thermal properties, downloads), INS spectra, a molecule's
  IR and Raman, and the comparison/fit to a measured spectrum. A calculation is a batch job (`atomvib batch FILE
  --tasks phonons`): a row of the store that `atomvib db list --db DATA/atomvib.db` shows, files under
  DATA/results.
safety: binds 127.0.0.1 unless --host says otherwise; another address needs --token or --users (or --open to
  say it is meant to be open to anyone who reaches it). A users file holds 'NAME TOKEN' or 'NAME sha256:HEX'
  lines (--add-user writes the digest only); tokens are compared in constant time and never stored. Uploads
  are size-limited, stored under DATA with generated names and read by the same validating readers as the
  CLI. Web users choose only bundled models and parameter-only engines.
exit codes: 0 stopped, 2 bad option"""


def add_parser(sub):
    p = sub.add_parser(
        "serve",
        help="the web app: upload a structure, preview, phonons, INS, compare with a measurement",
        description="Serve atomvib's web app (FastAPI + uvicorn). Everything it computes goes through the same "
        "library functions as the commands; calculations are batch jobs recorded in the store.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data", default="atomvib_web", metavar="DIR",
                   help="directory for uploads, jobs, results and the default store (default ./atomvib_web)")
    p.add_argument("--db", metavar="URL", help="store: SQLite file or SQLAlchemy URL (default DIR/atomvib.db)")
    p.add_argument("--token", metavar="TOKEN",
                   help="access token every request must carry (?token= once in the browser, or a Bearer header)")
    p.add_argument("--users", metavar="FILE",
                   help="one token per user: a file of 'NAME TOKEN' or 'NAME sha256:HEX' lines; each user sees only "
                   "their own jobs and results (excludes --token)")
    p.add_argument("--add-user", metavar="NAME",
                   help="with --users: append NAME with a new random token (its sha256 digest) to the file, print "
                   "the token once, and exit")
    p.add_argument("--open", action="store_true",
                   help="allow a non-local --host without a token (anyone who reaches the port can use the app)")
    p.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                   help="local Dask worker processes for calculations (default 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--parallel-jobs", type=int, default=1, metavar="N", help="calculations driven at once (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=5.0, metavar="MB", help="largest upload (default 5 MB)")
    p.set_defaults(func=run)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_local(host: str) -> bool:
    """Whether binding ``host`` reaches this machine only (a loopback address or ``localhost``)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, open_: bool, users: str | None = None) -> None:
    """Refuse a non-local bind without a token or users unless ``--open`` says so (InputError: one line, exit 2)."""
    from ..errors import InputError

    if not is_local(host) and not token and not users and not open_:
        raise InputError(
            f"--host {host} makes the app reachable from other machines, and no --token or --users is set",
            fix="add --token TOKEN (every request must then carry it) or --users FILE (a token per user), or --open "
            "to serve it to anyone who reaches the port, or keep the default --host 127.0.0.1",
        )


def run(args) -> int:
    from ..errors import InputError

    if args.add_user is not None:
        if not args.users:
            raise InputError("--add-user needs --users FILE", fix="give the users file to add the user to")
        from ..web.users import add_user

        token = add_user(args.users, args.add_user)
        print(f"added user {args.add_user} to {args.users} (only the token's sha256 digest is kept there)",
              file=sys.stderr)
        print(token)
        print(f"give {args.add_user} the token above (printed once, kept nowhere); they open the app's URL with "
              "?token=TOKEN", file=sys.stderr)
        return 0
    if args.token and args.users:
        raise InputError("--token and --users exclude each other", fix="give one shared --token, or a --users file")
    check_bind(args.host, args.token, args.open, args.users)
    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port} is not a port", fix="give 1–65535")
    if args.workers < 1 or args.parallel_jobs < 1:
        raise InputError("--workers and --parallel-jobs need at least 1", fix="give 1 or more")
    if not 0 < args.max_upload_mb <= 1024:
        raise InputError(f"--max-upload-mb {args.max_upload_mb:g} is out of range", fix="give 0.1–1024")
    try:
        import uvicorn

        from ..web import create_app
    except ImportError as exc:
        raise InputError(f"the web app needs {exc.name}", fix="pip install fastapi uvicorn python-multipart") from None
    allowed = None
    if is_local(args.host):  # a local app answers only to local names (a page elsewhere cannot rebind DNS onto it)
        allowed = ["localhost", "127.0.0.1", "[::1]", "::1"]
    app = create_app(args.data, db_url=args.db, token=args.token, workers=args.workers, scheduler=args.scheduler,
                     parallel_jobs=args.parallel_jobs, max_upload_bytes=int(args.max_upload_mb * 1e6),
                     allowed_hosts=allowed, users=args.users)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{args.port}/"
    if args.token:
        url += f"?token={args.token}"
    if args.users:
        url += "?token=YOUR_TOKEN"
    where = "this machine only" if is_local(args.host) else (
        "the network, token required" if args.token or args.users else
        "the network, OPEN to anyone who reaches the port")
    if args.users:
        n = len(app.state.users.names)
        where += f", {n} user{'s' if n != 1 else ''}, each sees only their own jobs"
    print(f"atomvib serve: {url}  ({where}; data in {app.state.data_dir}, store {app.state.jobs.store.url}; "
          "Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
