"""``atomvib serve``: a web app over the same library calls as the CLI (FastAPI; pages, JSON API, batch jobs).

>>> from atomvib.web import create_app
>>> app = create_app("atomvib_web")            # uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: :mod:`.app` (routes), :mod:`.jobs` (calculations through :func:`atomvib.batch.run_batch`, their owners
and progress from the store, a molecule's Raman derivatives on the workers), :mod:`.files` (uploads: limits,
generated names, the CLI's readers), :mod:`.figures` (Plotly figures from typed results), :mod:`.security` (token,
users, size limit, cross-site guard, headers), :mod:`.users` (``--users``: a token per user, stored as digests),
:mod:`.policy` (engines a web user may run). JavaScript and CSS ship in ``static/`` (3Dmol.js vendored with its licence; plotly.js from the ``plotly``
package); nothing is loaded from a CDN.
"""

from __future__ import annotations


def create_app(data_dir, db_url=None, token=None, workers=1, **kw):
    """The ASGI app; see :func:`atomvib.web.app.create_app` for the options."""
    from .app import create_app as _create_app

    return _create_app(data_dir, db_url=db_url, token=token, workers=workers, **kw)


__all__ = ["create_app"]
