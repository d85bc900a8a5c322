"""The ASGI app of ``atomvib serve`` (FastAPI): pages, a JSON API, and the jobs of :mod:`atomvib.web.jobs`.

Every number the app shows comes from the library functions the CLI calls: ``read_structure`` (upload
validation), ``learn.predict`` (preview), ``batch.run_batch`` (calculations, rows in the store),
``atomvib.load`` (results), ``spectra.indirect_spectrum`` / ``direct_powder_map`` (INS),
``spectra.read_spectrum`` + ``spectra.compare`` (comparison and fit). :mod:`atomvib.web.figures` only lays the
numbers out as Plotly figures. Errors are the library's one-line :class:`AtomvibError` messages, returned as
``{"error": "..."}`` with status 400 (404 for an unknown id) and shown on the page.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.templating import Jinja2Templates

from ..errors import AtomvibError, InputError
from ..results import _json_safe
from .files import KEY_RE, UploadStore, UploadTooLarge, display_name, one_line, read_uploaded_structure
from .policy import web_engine_spec
from .security import request_user

log = logging.getLogger("atomvib.web")

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
EXAMPLES = HERE / "examples"
#: files of a result directory the app offers for download (nothing else in it is ever served)
DOWNLOADS = {
    "phonopy.yaml": "application/x-yaml",
    "dos.csv": "text/csv",
    "thermal.csv": "text/csv",
    "band.json": "application/json",
    "summary.json": "application/json",
    "structure.cif": "chemical/x-cif",
    "structure.xyz": "chemical/x-xyz",
    "frequencies.csv": "text/csv",
}


class NotFound(Exception):
    pass


def _vendor_file(name: str) -> Path:
    if name == "plotly.min.js":
        import plotly

        return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if name == "3Dmol-min.js":
        return STATIC / "vendor" / "3dmol" / "3Dmol-min.js"
    raise NotFound(name)


@functools.lru_cache(maxsize=4)
def _vendor_bytes(name: str) -> tuple[bytes, bytes, str]:
    """(raw, gzip, etag) of a vendored JavaScript file, compressed once per process."""
    import gzip
    import hashlib

    raw = _vendor_file(name).read_bytes()
    return raw, gzip.compress(raw, 6), hashlib.sha256(raw).hexdigest()[:20]


class _Cache:
    """A few computed objects by key, least recently used first out; concurrent misses of one key compute it once
    (the others wait for it: twenty users opening the same result load it once)."""

    def __init__(self, size: int = 8):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()
        self.pending: dict = {}

    def get(self, key, make, stamp=None):
        while True:
            with self.lock:
                hit = self.items.get(key)
                if hit is not None and hit[0] == stamp:
                    self.items.move_to_end(key)
                    return hit[1]
                event = self.pending.get(key)
                if event is None:
                    event = self.pending[key] = threading.Event()
                    break
            event.wait(timeout=600)  # another request computes it; then look again
        try:
            obj = make()
            with self.lock:
                self.items[key] = (stamp, obj)
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
            return obj
        finally:
            with self.lock:
                self.pending.pop(key, None)
            event.set()


def _structure_view(structure) -> dict:
    """What the 3D viewer draws: CIF text (crystal, with its cell) or XYZ (molecule)."""
    from ase.io import write

    buf = io.StringIO() if structure.is_molecule else io.BytesIO()
    fmt = "xyz" if structure.is_molecule else "cif"
    write(buf, structure.to_ase(), format=fmt)
    text = buf.getvalue()
    return {"format": fmt, "text": text if isinstance(text, str) else text.decode()}


def _structure_info(structure, symprec: float = 1e-3) -> dict:
    info = {
        "formula": structure.formula,
        "natoms": structure.natoms,
        "kind": structure.kind,
        "elements": structure.elements,
        "spacegroup": "" if structure.is_molecule else structure.spacegroup(symprec),
        "view": _structure_view(structure),
    }
    if not structure.is_molecule:
        import numpy as np

        info["cell_lengths_a"] = [round(float(x), 4) for x in np.linalg.norm(structure.cell, axis=1)]
        info["volume_a3"] = round(float(abs(np.linalg.det(structure.cell))), 3)
    return info


def _json(obj):
    """A JSON response written by ``json.dumps`` directly (FastAPI's encoder walks every float of a large figure)."""
    return Response(json.dumps(obj, separators=(",", ":"), allow_nan=False), media_type="application/json")


def _number(value, name: str, lo: float, hi: float, integer: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} '{str(value)[:40]}' is not a number", fix=f"give a number in {lo:g}–{hi:g}") from None
    if not math.isfinite(x) or not lo <= x <= hi or (integer and x != int(x)):
        raise InputError(f"{name} {x:g} is out of range", fix=f"give {'an integer' if integer else 'a number'} in {lo:g}–{hi:g}")
    return int(x) if integer else x


def create_app(data_dir, db_url: str | None = None, token: str | None = None, workers: int | None = 1, *,
               scheduler: str | None = None, parallel_jobs: int = 1, max_upload_bytes: int | None = None,
               allowed_hosts=None, phonon_defaults: dict | None = None, warm_up: bool = True, users=None):
    """The ASGI app.

    Parameters
    ----------
    data_dir : path
        Uploads, job records, result files and (without ``db_url``) the SQLite store ``atomvib.db`` live here.
    db_url : str, optional
        The store (SQLite path or SQLAlchemy URL, as ``atomvib batch --db``); default ``DATA/atomvib.db``.
    token : str, optional
        Access token every request must carry (see :mod:`atomvib.web.security`); None: open.
    users : path or Users, optional
        A users file (``NAME TOKEN`` / ``NAME sha256:HEX`` lines, :mod:`atomvib.web.users`) or a
        :class:`~atomvib.web.users.Users`: every request needs a user's token, and each user sees only their own
        jobs, uploads and results (another user's answer 404, as if they did not exist). Excludes ``token``.
    workers : int, optional
        Local Dask worker processes for calculations (default 1); ``scheduler``: an existing Dask scheduler.
    parallel_jobs : int
        Calculations driven at the same time.
    max_upload_bytes : int, optional
        Largest accepted upload (default 5 MB).
    allowed_hosts : list of str, optional
        Host names the app answers to (a defence against DNS rebinding for a local app); None: any.
    phonon_defaults : dict, optional
        PhononSettings fields for every job besides what the form sets (e.g. ``{"mesh_density": 50}``).
    warm_up : bool
        Load the predictor and list the engines in the background at start (the first preview is then fast).
    """
    from ..runtime import configure_threads
    from ..settings import PhononSettings
    from .jobs import JobManager, raman_engine
    from .security import BodyLimit, CrossSiteGuard, SecurityHeaders, TokenAuth
    from .users import Users, data_secret, read_users

    configure_threads()  # torch pinned (ATOMVIB_THREADS): the predictor is 50× slower with oversubscribed threads
    if token and users is not None:
        raise InputError("--token and --users exclude each other", fix="give one shared --token, or a --users file")
    if users is not None and not isinstance(users, Users):
        users = read_users(users)  # a broken users file stops here, before anything is written
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if users is not None:
        users = Users(users.digests, data_secret(data_dir))  # cookies that outlive a restart of the app
    per_user = users is not None
    db = db_url or str(data_dir / "atomvib.db")
    from .files import DEFAULT_MAX_UPLOAD_BYTES

    max_bytes = int(max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES)
    uploads = UploadStore(data_dir, max_bytes, per_user=per_user)
    jobs = JobManager(data_dir, db, workers=workers, scheduler=scheduler, parallel=parallel_jobs, per_user=per_user)
    defaults = dict(phonon_defaults or {})
    results = _Cache(8)  # loaded results
    modes_cache = _Cache(8)  # INS eigenvector weights per result and temperature
    optical = _Cache(16)  # IR and Raman mode intensities of molecules (broadened again on every request)
    bodies = _Cache(64)  # JSON bodies of result pages and spectra: many users looking at one result compute it once
    predictor_lock = threading.Lock()
    engines_ready = threading.Event()
    engines_list: list[dict] = []

    def list_engines_once():
        from ..engines import list_engines

        try:
            offered = []
            for e in list_engines():
                try:
                    web_engine_spec(e["example"])
                except InputError:
                    continue
                offered.append(e)
            engines_list[:] = offered
        finally:
            engines_ready.set()

    def warm():
        list_engines_once()
        try:
            from ..learn.predictor import load_model

            with predictor_lock:  # loading the model is not thread-safe (torch.fx): the preview waits for it
                load_model()
        except Exception:  # no model: the preview says so when asked
            log.warning("predictor not loaded", exc_info=True)

    def lifespan(app):
        import contextlib

        @contextlib.asynccontextmanager
        async def span(app):
            yield
            jobs.close()

        return span(app)

    app = FastAPI(title="atomvib", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.jobs, app.state.uploads, app.state.data_dir, app.state.db = jobs, uploads, data_dir, db
    app.state.users = users
    templates = Jinja2Templates(directory=str(TEMPLATES))
    if warm_up:
        threading.Thread(target=warm, name="atomvib-web-warm-up", daemon=True).start()
    else:
        threading.Thread(target=list_engines_once, name="atomvib-web-engines", daemon=True).start()

    # middleware runs outermost-last: headers on everything, then the token, then size and cross-site checks
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(BodyLimit, max_bytes=max_bytes + 64 * 1024)  # multipart framing around the file
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(TokenAuth, token=token, users=users)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(AtomvibError)
    async def atomvib_error(request: Request, exc: AtomvibError):
        return JSONResponse({"error": one_line(exc)}, status_code=413 if isinstance(exc, UploadTooLarge) else 400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": f"not found: {str(exc)[:80]}"}, status_code=404)
        return templates.TemplateResponse(request, "error.html", {"message": f"not found: {str(exc)[:80]}"},
                                          status_code=404)

    def page(request: Request, name: str, **ctx):
        return templates.TemplateResponse(request, name, {"page": name.split(".")[0], "user": request_user(request),
                                                          **ctx})

    # -- static files -----------------------------------------------------------------------------
    @app.get("/static/vendor/{name}")
    def vendor(name: str, request: Request):
        raw, gz, etag = _vendor_bytes(_vendor_file(name).name)
        headers = {"cache-control": "public, max-age=86400", "etag": f'"{etag}"', "vary": "accept-encoding"}
        if request.headers.get("if-none-match") == f'"{etag}"':
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(gz, media_type="text/javascript", headers={**headers, "content-encoding": "gzip"})
        return Response(raw, media_type="text/javascript", headers=headers)

    @app.get("/static/{name}")
    def static(name: str):
        path = STATIC / Path(name).name
        if path.name != name or path.suffix not in (".js", ".css", ".svg") or not path.is_file():
            raise NotFound(name)
        media = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}[path.suffix]
        return FileResponse(path, media_type=media, headers={"cache-control": "no-cache"})

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    # -- pages ------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def new_page(request: Request):
        from ..engines import default_engine_spec

        engines_ready.wait(timeout=20)
        return page(request, "new.html", engines=engines_list, default_engine=default_engine_spec(False),
                    examples=_examples(), max_mb=max_bytes / 1e6)

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs_page(request: Request):
        return page(request, "jobs.html")

    def _row(key: str, user: str | None):
        """The store row of ``key``, if ``user`` may see it (with users: one of their jobs led to it); else 404."""
        if not KEY_RE.match(key or "") or not jobs.may_read(key, user):
            raise NotFound("result")
        row = jobs.store.get_calculation(key)
        if row is None:
            raise NotFound("result")
        return row

    def _result(key: str, user: str | None):
        row = _row(key, user)
        if row.status != "done" or not row.result_dir:
            raise InputError(f"calculation {key} is {row.status}" + (f": {row.error.splitlines()[0]}" if row.error else ""),
                             fix="wait for it to finish, or see the job list")
        d = Path(row.result_dir)
        from ..results import is_result_dir

        if not is_result_dir(d):
            raise InputError(f"the files of calculation {key} are gone", fix="run it again")
        from ..results import load

        return row, d, results.get(key, lambda: load(d), stamp=(d / "summary.json").stat().st_mtime_ns)

    @app.get("/results/{key}", response_class=HTMLResponse)
    def result_page(request: Request, key: str):
        row = _row(key, request_user(request))
        return page(request, "result.html", key=key, status=row.status, task=row.task)

    @app.get("/results/{key}/spectra", response_class=HTMLResponse)
    def spectra_page(request: Request, key: str):
        row = _row(key, request_user(request))
        if _kind_of(row) == "molecule":
            return page(request, "spectra_molecule.html", key=key)
        from ..spectra.instruments import KNOWN_INSTRUMENTS

        return page(request, "spectra.html", key=key, instruments=KNOWN_INSTRUMENTS)

    @app.get("/results/{key}/compare", response_class=HTMLResponse)
    def compare_page(request: Request, key: str):
        _row(key, request_user(request))
        return page(request, "compare.html", key=key, max_mb=max_bytes / 1e6)

    def _kind_of(row) -> str:
        """"molecule", "crystal", "committee" ... from the result's summary.json ("" before it exists)."""
        try:
            return str(json.loads((Path(row.result_dir) / "summary.json").read_text()).get("kind", ""))
        except (OSError, ValueError, TypeError):
            return ""

    @app.get("/results/{key}/files/{name}")
    def download(request: Request, key: str, name: str):
        if name not in DOWNLOADS:
            raise NotFound(name)
        row = _row(key, request_user(request))
        path = Path(row.result_dir) / name if row.result_dir else None
        if path is None or not path.is_file():
            raise NotFound(name)
        return FileResponse(path, media_type=DOWNLOADS[name], filename=f"{key}_{name}")

    # -- structures and preview -------------------------------------------------------------------
    def _examples() -> list[str]:
        return sorted(p.name for p in EXAMPLES.glob("*") if p.suffix in (".cif", ".vasp", ".xyz", ".extxyz"))

    def _structure_response(up) -> dict:
        t0 = time.perf_counter()
        s = read_uploaded_structure(up)
        info = _structure_info(s)
        info.update(id=up.id, name=up.name, read_ms=round(1e3 * (time.perf_counter() - t0), 1))
        return info

    @app.post("/api/structures")
    async def upload_structure(request: Request, file: Annotated[UploadFile, File()]):
        name = display_name(file.filename)
        data = await file.read(max_bytes + 1)
        up = uploads.save(data, name, "structure", owner=request_user(request))
        import anyio

        return await anyio.to_thread.run_sync(_structure_response, up)

    @app.post("/api/structures/example")
    async def example_structure(request: Request):
        body = await request.json()
        name = str(body.get("name", "")) if isinstance(body, dict) else ""
        if name not in _examples():
            raise InputError(f"no bundled example '{name[:40]}'", fix=f"choose one of {', '.join(_examples())}")
        up = uploads.save((EXAMPLES / name).read_bytes(), name, "structure", owner=request_user(request))
        import anyio

        return await anyio.to_thread.run_sync(_structure_response, up)

    @app.get("/api/structures/{uid}/preview")
    def preview(request: Request, uid: str):
        from ..learn import predict

        up = uploads.get(uid, "structure", owner=request_user(request))
        s = read_uploaded_structure(up)
        if s.is_molecule:
            raise InputError("the direct predictor is for crystals; a molecule has no phonon DOS preview",
                             fix="submit the calculation (xTB by default for molecules)")
        t0 = time.perf_counter()
        with predictor_lock:
            pred = predict([s])[0]
        ms = 1e3 * (time.perf_counter() - t0)
        from .figures import prediction_figures

        i300 = int(abs(pred.temperatures_k - 300.0).argmin())
        return _json({
            "figures": prediction_figures(pred),
            "predict_ms": round(ms, 1),
            "in_distribution": bool(pred.in_distribution),
            "ood_reason": pred.ood_reason,
            "cv_300k": [float(pred.heat_capacity_j_per_k_per_mol[i300]),
                        float(pred.heat_capacity_j_per_k_per_mol_std[i300])],
            "basis": f"per mole of {s.cell_formula} (the uploaded cell)",
        })

    # -- jobs -------------------------------------------------------------------------------------
    @app.post("/api/jobs")
    async def submit(request: Request):
        body = await request.json()
        if not isinstance(body, dict):
            raise InputError("the request is not a JSON object", fix="use the app's form")
        user = request_user(request)
        up = uploads.get(str(body.get("upload", "")), "structure", owner=user)
        engine = web_engine_spec(body.get("engine"))
        relax = bool(body.get("relax", True))
        length = _number(body.get("min_length", 10.0), "supercell length (Å)", 4.0, 40.0)
        import anyio

        def make():
            s = read_uploaded_structure(up)
            fields = {**defaults, "engine": engine, "relax": relax, "min_supercell_length_a": length}
            settings = PhononSettings(**fields)  # validated once, as for the CLI
            if engine is not None:
                from ..engines import get_engine

                get_engine(engine).check(s)  # an engine that cannot do it is refused now, not after a queue
            return jobs.submit(up, s, settings, owner=user)

        job = await anyio.to_thread.run_sync(make)
        return {"id": job["id"], "status": "queued"}

    @app.get("/api/jobs")
    def list_jobs(request: Request):
        return {"jobs": jobs.list(owner=request_user(request)), "user": request_user(request)}

    @app.get("/api/jobs/{job_id}")
    def get_job(request: Request, job_id: str):
        try:
            return jobs.view(job_id, owner=request_user(request))
        except (KeyError, OSError, ValueError):
            raise NotFound("job") from None

    @app.get("/api/calculations")
    def calculations(request: Request, limit: int = 200):
        df = jobs.store.calculations()
        if per_user:  # a user's own calculations only (rows of other users and of command-line batches are hidden)
            df = df[df.key.isin(jobs.keys_of(request_user(request)))]
        df = df.iloc[::-1].head(max(1, min(int(limit), 1000)))
        cols = ["key", "formula", "task", "engine", "status", "error", "omega_max_thz", "has_imaginary", "seconds",
                "finished", "source"]
        df = df[cols].astype(object)
        df = df.where(df.notna(), None)
        running = [k for k, st in zip(df["key"], df["status"]) if st == "running"]
        progress = jobs.store.progress(running) if running else {}
        rows = []
        for rec in df.to_dict("records"):
            rec["error"] = (rec["error"] or "").splitlines()[0] if rec.get("error") else ""
            rec["source"] = Path(str(rec.get("source") or "")).name
            rec["has_imaginary"] = None if rec["has_imaginary"] is None else bool(rec["has_imaginary"])
            p = progress.get(rec["key"])
            if p is not None:
                age = max(0.0, time.time() - p["updated"])
                eta = None if p["eta_s"] is None else max(0.0, p["eta_s"] - age)
                rec["progress"] = {**{k: p[k] for k in ("stage", "unit", "done", "total")}, "eta_s": eta, "age_s": age}
            rows.append(rec)
        return {"calculations": rows}

    # -- results ----------------------------------------------------------------------------------
    @app.get("/api/results/{key}")
    def result_data(request: Request, key: str):
        row, d, res = _result(key, request_user(request))
        stamp = (d / "summary.json").stat().st_mtime_ns
        return Response(bodies.get(("result", key), lambda: _result_body(key, row, d, res), stamp=stamp),
                        media_type="application/json")

    def _result_body(key, row, d, res) -> bytes:
        from .figures import dispersion_figure, molecule_figure, thermal_figure

        t0 = time.perf_counter()
        kind = getattr(res, "kind", "")
        summary = json.loads((d / "summary.json").read_text())
        out = {"key": key, "kind": kind, "engine": row.engine, "task": row.task,
               "downloads": [n for n in DOWNLOADS if (d / n).is_file()]}
        if kind == "crystal":
            inst = res.instability
            out.update(
                formula=res.primitive.formula, natoms=res.primitive.natoms,
                spacegroup=res.structure.spacegroup(res.settings.symprec),
                omega_max_thz=res.omega_max_thz, min_frequency_thz=res.min_frequency_thz,
                has_imaginary=res.has_imaginary, instability=inst.describe() if inst else "",
                thermal=_json_safe(summary.get("thermal")), mesh=list(res.mesh), n_displacements=res.n_displacements,
                figures={"dispersion": dispersion_figure(res), "thermal": thermal_figure(res)},
                view=_structure_view(res.primitive),
            )
        elif kind == "committee":
            from .figures import committee_dispersion_figure, committee_thermal_figure

            om = res.omega_max()
            out.update(
                formula=res.primitive.formula, natoms=res.primitive.natoms, engines=res.engines,
                spacegroup=res.primitive.spacegroup(res.settings.symprec),
                omega_max_thz=float(om.mean), omega_max_std_thz=float(om.std),
                omega_max_members_thz=[float(x) for x in om.members],
                has_imaginary=res.has_imaginary,
                imaginary_members=[e for e, m in zip(res.engines, res.members) if m.has_imaginary],
                calibration={"scale": res.scale, "scales": res.calibration.get("scales", {}),
                             "calibrated": "uncalibrated" not in str(res.calibration.get("note", ""))},
                thermal=_json_safe(summary.get("thermal")),
                figures={"dispersion": committee_dispersion_figure(res), "thermal": committee_thermal_figure(res)},
                view=_structure_view(res.primitive),
            )
        elif kind == "molecule":
            ir, why = _molecule_ir(key, res)
            modes = [{"index": i, "frequency_cm1": round(float(f), 3),
                      "ir_km_per_mol": None if ir is None else float(ir.intensities[i])}
                     for i, f in enumerate(res.frequencies_cm1)]
            raman_spec, raman_why = raman_engine(res)
            out.update(formula=res.structure.formula, natoms=res.structure.natoms, modes=modes,
                       linear=bool(res.is_linear), has_imaginary=bool(res.has_imaginary),
                       zero_point_energy_ev=float(res.zero_point_energy_ev), n_displacements=res.n_displacements,
                       ir_available=ir is not None, ir_reason=why, raman_available=raman_spec is not None,
                       raman_reason=raman_why, figures={"modes": molecule_figure(res, ir)},
                       view=_structure_view(res.structure))
        else:
            raise InputError(f"a {kind or type(res).__name__} result has no page in this version of the app",
                             fix="use `atomvib.load` on its directory")
        out["build_ms"] = round(1e3 * (time.perf_counter() - t0), 1)
        return _json(out).body

    def _molecule(key, user):
        row, d, res = _result(key, user)
        if getattr(res, "kind", "") != "molecule":
            raise InputError("normal modes, IR and Raman of this page are for a molecule's result",
                             fix="open a molecule's result (a crystal's spectra are on its INS page)")
        return row, d, res

    def _molecule_ir(key, res):
        """(IR OpticalSpectrum or None, why not) from the dipole derivatives the calculation stored (no engine call)."""
        if getattr(res, "dipole_derivatives", None) is None:
            name = getattr(res.engine, "name", "the engine")
            return None, (f"engine {name} gives no dipole moment, so the result has no IR intensities (xtb and pyscf "
                          "do: run the molecule with one of them)")
        from ..spectra.ir import molecule_ir

        return optical.get(("ir", key), lambda: molecule_ir(res), stamp=_stamp(key)), ""

    def _molecule_raman(key, res, laser_nm):
        """Raman OpticalSpectrum from the derivatives computed once on the workers, or (None, state) until then."""
        stamp = _stamp(key)
        state = jobs.raman(key, stamp)
        if state["state"] != "done":
            return None, state
        import numpy as np

        from ..spectra.raman import molecule_raman

        def make():
            with np.load(state["path"]) as z:
                dalpha = np.array(z["dalpha"])
            return molecule_raman(res, dalpha=dalpha, laser_nm=laser_nm)

        return optical.get(("raman", key, laser_nm), make, stamp=stamp), state

    @app.get("/api/results/{key}/normal-mode")
    def normal_mode(request: Request, key: str, index: int):
        """Normal mode ``index`` of a molecule as XYZ with displacement vectors (the 3D view animates it)."""
        from .figures import molecule_mode_xyz

        row, d, res = _molecule(key, request_user(request))
        index = int(_number(index, "mode", 0, len(res.frequencies_cm1) - 1, integer=True))
        return _json(molecule_mode_xyz(res, index))

    @app.get("/api/results/{key}/optical")
    def optical_spectrum(request: Request, key: str, kind: str = "ir", fwhm: float = 10.0, shape: str = "lorentzian",
                         xmin: float | None = None, xmax: float | None = None, laser_nm: float | None = None):
        """IR or Raman of a molecule, broadened with ``fwhm`` (cm⁻¹) and ``shape``: the modes and their intensities
        are computed once (IR from the stored dipole derivatives, Raman on the workers after POST .../raman); a
        parameter change only broadens again."""
        import numpy as np

        from ..spectra.lineshape import SHAPES, default_axis_cm1
        from .figures import optical_figure

        row, d, res = _molecule(key, request_user(request))
        if kind not in ("ir", "raman"):
            raise InputError(f"unknown optical spectrum '{kind[:20]}'", fix="ir or raman")
        fwhm = _number(fwhm, "line width FWHM (cm⁻¹)", 0.1, 1000.0)
        if shape not in SHAPES:
            raise InputError(f"unknown line shape '{shape[:20]}'", fix=f"choose {' or '.join(SHAPES)}")
        if laser_nm is not None:
            laser_nm = _number(laser_nm, "laser wavelength (nm)", 100.0, 2000.0)
        t0 = time.perf_counter()
        if kind == "ir":
            spec, why = _molecule_ir(key, res)
            if spec is None:
                return {"kind": "ir", "state": "unavailable", "reason": why}
            extra = {"state": "done"}
        else:
            engine_spec, why = raman_engine(res)
            if engine_spec is None:
                return {"kind": "raman", "state": "unavailable", "reason": why}
            spec, state = _molecule_raman(key, res, laser_nm)
            if spec is None:
                return {"kind": "raman", **{k: v for k, v in state.items() if k != "path"},
                        "engine": engine_spec, "engine_calls": 36 * res.structure.natoms}
            extra = {"state": "done", "engine": engine_spec, "seconds": state.get("seconds")}
            if "depolarization" in spec.details:
                extra["depolarization"] = [round(float(x), 4) for x in spec.details["depolarization"]]
        f = np.asarray(spec.frequencies_cm1, float)
        axis = default_axis_cm1(f[f > 0], fwhm, step_cm1=min(1.0, fwhm / 4))
        lo = _number(xmin, "range minimum (cm⁻¹)", 0.0, 1e5) if xmin is not None else float(axis[0])
        hi = _number(xmax, "range maximum (cm⁻¹)", lo + 1.0, 1e5) if xmax is not None else float(axis[-1])
        step = max(min(1.0, fwhm / 4), (hi - lo) / 20000)
        x, y = spec.curve(np.arange(lo, hi + step / 2, step), fwhm, shape)
        return _json({"kind": kind, **extra, "unit": spec.intensity_unit, "fwhm": fwhm, "shape": shape,
                      "modes": [{"frequency_cm1": round(float(a), 3), "intensity": float(b)}
                                for a, b in zip(spec.frequencies_cm1, spec.intensities)],
                      "figure": optical_figure(spec, x, y, fwhm, shape),
                      "ms": round(1e3 * (time.perf_counter() - t0), 1)})

    @app.post("/api/results/{key}/raman")
    def start_raman(request: Request, key: str):
        """Start the Raman activities of a molecule (36N SCF runs on the app's Dask workers, once)."""
        row, d, res = _molecule(key, request_user(request))
        engine_spec, why = raman_engine(res)
        if engine_spec is None:
            raise InputError(why)
        state = jobs.start_raman(key, str(d), engine_spec, _stamp(key))
        return {"kind": "raman", **{k: v for k, v in state.items() if k != "path"}, "engine": engine_spec,
                "engine_calls": 36 * res.structure.natoms}

    def _stamp(key) -> int:
        """When the result's files last changed (a recomputed result invalidates what was cached from it)."""
        return (Path(jobs.store.get_calculation(key).result_dir) / "summary.json").stat().st_mtime_ns

    def _crystal(key, user):
        row, d, res = _result(key, user)
        if getattr(res, "kind", "") != "crystal":
            raise InputError("INS spectra need a crystal's phonons", fix="open a crystal's result")
        return res

    def _modes(key, res, temperature):
        """IncoherentModes of a result at T, kept for the next parameter change (eigenvectors once per T)."""
        from ..spectra.ins import incoherent_modes

        return modes_cache.get((key, round(temperature, 6)), lambda: incoherent_modes(res, temperature_k=temperature),
                               stamp=_stamp(key))

    @app.get("/api/results/{key}/ins")
    def ins(request: Request, key: str, instrument: str = "vision", order: int = 3, temperature: float = 5.0, bank: str = "backward",
            ei: float | None = None, emax: float | None = None):
        from ..spectra.instruments import get_instrument

        res = _crystal(key, request_user(request))
        inst = get_instrument(instrument)
        order = int(_number(order, "order", 1, 10, integer=True))
        temperature = _number(temperature, "temperature (K)", 0.0, 2000.0)
        if inst.kind == "indirect":
            if bank not in ("backward", "forward"):
                raise InputError(f"unknown bank '{bank[:20]}'", fix="backward or forward")
            hi = _number(emax, "highest energy (meV)", 5.0, 1000.0) if emax is not None else 250.0
        else:
            if ei is None:
                raise InputError(f"{inst.name} is a direct-geometry instrument and needs an incident energy",
                                 fix="give Ei in meV")
            ei = _number(ei, "incident energy (meV)", 1.0, 2000.0)
            hi = _number(emax, "highest energy (meV)", 1.0, ei) if emax is not None else 0.9 * ei
        what = ("ins", key, inst.name, order, temperature, bank, ei, hi)
        return Response(bodies.get(what, lambda: _ins_body(key, res, inst, order, temperature, bank, ei, hi),
                                   stamp=_stamp(key)), media_type="application/json")

    def _ins_body(key, res, inst, order, temperature, bank, ei, hi) -> bytes:
        from ..spectra.ins import direct_powder_map, indirect_spectrum
        from .figures import ins_figure, ins_map_figure

        t0 = time.perf_counter()
        modes = _modes(key, res, temperature)
        if inst.kind == "indirect":
            spec = indirect_spectrum(res, inst, bank, order=order, modes=modes, energy_range_mev=(0.5, hi))
            fig = ins_figure(spec)
            peak = float(spec.energy_mev[int(spec.intensity.argmax())])
            extra = {"strongest_peak_mev": peak, "msd_a2": spec.msd_a2}
        else:
            m = direct_powder_map(res, inst, ei, order=order, modes=modes, energy_range_mev=(0.5, hi),
                                  de_mev=max(0.05, round(hi / 200, 2)))
            fig = ins_map_figure(m)
            extra = {}
        return _json({"figure": fig, "instrument": inst.name, "kind": inst.kind, "mesh": list(modes.mesh),
                      "ms": round(1e3 * (time.perf_counter() - t0), 1), **extra}).body

    @app.get("/api/results/{key}/mode")
    def mode(request: Request, key: str, q: int, band: int):
        """One phonon mode of the band path as an XYZ (with displacement vectors) of a small supercell: the 3D view
        animates it. Eigenvector from the saved force constants (phonopy), nothing else recomputed."""
        from .figures import mode_xyz

        res = _crystal(key, request_user(request))
        b = res.band_structure()
        q = int(_number(q, "q-point index", 0, len(b.qpoints) - 1, integer=True))
        band = int(_number(band, "band", 0, b.frequencies_thz.shape[1] - 1, integer=True))
        return _json(mode_xyz(res, b.qpoints[q], band))

    @app.post("/api/results/{key}/compare")
    async def compare_endpoint(request: Request, key: str, file: Annotated[UploadFile, File()],
                               computed: Annotated[str, Form()] = "dos",
                               fit: Annotated[str, Form()] = "scale,background,broadening",
                               units: Annotated[str, Form()] = "", xmin: Annotated[str, Form()] = "",
                               xmax: Annotated[str, Form()] = ""):
        import anyio

        user = request_user(request)
        await anyio.to_thread.run_sync(_row, key, user)  # another user's result: 404 before the upload is kept
        data = await file.read(max_bytes + 1)
        up = uploads.save(data, display_name(file.filename), "spectrum", owner=user)

        def run():
            import warnings

            from ..spectra.compare import compare
            from ..spectra.measured import read_spectrum
            from .figures import compare_figure

            res = _crystal(key, user)
            if computed == "dos":
                source = res
            elif computed in ("vision", "tosca"):
                from ..spectra.ins import indirect_spectrum

                source = indirect_spectrum(res, computed, "backward", order=3, modes=_modes(key, res, 5.0))
            else:
                raise InputError(f"unknown computed spectrum '{computed[:20]}'", fix="dos, vision or tosca")
            toks = [t for t in fit.replace(" ", "").split(",") if t and t != "none"]
            unit = units or None
            if unit not in (None, "meV", "cm-1", "THz"):
                raise InputError(f"unknown unit '{unit[:10]}'", fix="meV, cm-1 or THz")
            x_range = None
            if xmin.strip() or xmax.strip():
                lo = _number(xmin, "range minimum", -1e6, 1e6)
                hi = _number(xmax, "range maximum", -1e6, 1e6)
                x_range = (lo, hi)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    measured = read_spectrum(up.path, units=unit)
                    r = compare(source, measured, fit=toks or None, x_range=x_range)
            except AtomvibError as exc:
                raise InputError(one_line(exc, up.path, up.name)) from None
            from ..results import _json_safe

            d = _json_safe(json.loads(json.dumps(r.to_dict(), default=float)))  # NaN/inf → null: strict JSON
            d["measured"] = up.name
            return {"figure": compare_figure(r), "result": d}

        return _json(await anyio.to_thread.run_sync(run))

    return app
