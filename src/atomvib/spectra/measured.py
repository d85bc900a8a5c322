"""Reading measured spectra: text/CSV columns, the HDF5 S(Q,E) histogram of ARCS reductions, Mantid/NeXus 1D.

NumPy and h5py do the reading; we wrote the cleaning ourselves because every measured file has its own
defects and each must give one clear message rather than a traceback: NaNs are dropped (counted), an
unsorted axis is sorted, a non-uniform axis is resampled onto a uniform grid (said so), negative
intensities are kept (background-subtracted data) but reported. What was done is recorded in
``Spectrum1D.notes`` and issued as a :class:`UserWarning`.

Energy axes are ``meV``, ``cm-1`` or ``THz``; the unit comes from the column header, the file's metadata or
the caller (``units=``), and conversions go through :func:`atomvib.units.frequency_factor`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..results import Result
from ..units import frequency_factor

#: canonical unit names accepted on axes
UNITS = ("meV", "cm-1", "THz")

_UNIT_PATTERNS = (
    ("cm-1", re.compile(r"cm\^?-1|cm1|cm_1|wavenumber|1/cm|cm\*\*-1", re.I)),
    ("meV", re.compile(r"mev|energy", re.I)),
    ("THz", re.compile(r"thz|frequency", re.I)),
)


def canonical_unit(unit: str) -> str:
    """Map a user/metadata spelling (``mev``, ``cm^-1``, ``1/cm``, ``thz``) onto ``meV``, ``cm-1`` or ``THz``."""
    u = str(unit).strip()
    for name, pat in _UNIT_PATTERNS[:1]:
        if pat.search(u):
            return name
    low = u.lower()
    if low in ("mev",):
        return "meV"
    if low in ("thz",):
        return "THz"
    raise InputError(f"unknown energy unit {unit!r}", fix="use one of meV, cm-1, THz (--units)")


def detect_unit(header: str) -> str | None:
    """The energy unit named in a column header (``energy_meV``, ``wavenumber_cm1``, ``frequency_thz``), or None."""
    for name, pat in _UNIT_PATTERNS:
        if pat.search(header):
            return name
    return None


@dataclass(frozen=True, eq=False)
class Spectrum1D(Result):
    """A 1D spectrum on a sorted, uniform, NaN-free axis.

    Attributes
    ----------
    x : ndarray, shape (n,), in ``unit`` (meV, cm^-1 or THz), strictly increasing and uniform
    y : ndarray, shape (n,), intensity (arbitrary units; may be negative after background subtraction)
    error : ndarray, shape (n,), standard uncertainty of ``y``, or None when the file has none
    unit : str, ``"meV"``, ``"cm-1"`` or ``"THz"``
    notes : tuple of str, what cleaning was applied (dropped NaNs, sorting, resampling, negative counts)
    source : str, where it came from
    """

    x: np.ndarray
    y: np.ndarray
    error: np.ndarray | None
    unit: str
    notes: tuple = field(default_factory=tuple)
    source: str = ""

    @property
    def step(self) -> float:
        """Bin width in ``unit``."""
        return float(self.x[1] - self.x[0]) if len(self.x) > 1 else 0.0

    def to_unit(self, unit: str) -> Spectrum1D:
        """The same spectrum on another energy axis; intensities are per bin, so they are not rescaled."""
        unit = canonical_unit(unit)
        f = frequency_factor(self.unit, unit)
        return Spectrum1D(self.x * f, self.y, self.error, unit, self.notes, self.source)

    def crop(self, xmin: float | None = None, xmax: float | None = None) -> Spectrum1D:
        """Keep ``xmin <= x <= xmax`` (in ``unit``)."""
        m = np.ones(len(self.x), bool)
        if xmin is not None:
            m &= self.x >= xmin
        if xmax is not None:
            m &= self.x <= xmax
        if m.sum() < 3:
            raise InputError(
                f"only {int(m.sum())} points of {self.source or 'the spectrum'} lie in {xmin}–{xmax} {self.unit}",
                fix=f"choose a range inside {self.x[0]:.4g}–{self.x[-1]:.4g} {self.unit}",
            )
        err = None if self.error is None else self.error[m]
        return Spectrum1D(self.x[m], self.y[m], err, self.unit, self.notes, self.source)


@dataclass(frozen=True, eq=False)
class SQEMap(Result):
    """A measured powder map S(|Q|, E) on bin centres; NaN where the instrument did not measure.

    Attributes
    ----------
    q_invA : ndarray, shape (nq,), |Q| bin centres in Å^-1
    energy_mev : ndarray, shape (ne,), energy-transfer bin centres in meV (positive: neutron energy loss)
    intensity : ndarray, shape (nq, ne), arbitrary units, NaN where not measured
    error : ndarray, shape (nq, ne), standard uncertainty, or None
    source : str
    ei_mev, temperature_k : float or None
        Incident energy (meV) and sample temperature (K) when the file records them (attributes such as
        ``Ei``/``ei_mev`` and ``T``/``temperature``), else None.
    instrument : str or None
        The instrument named in the file's attributes, else None.
    """

    q_invA: np.ndarray
    energy_mev: np.ndarray
    intensity: np.ndarray
    error: np.ndarray | None
    source: str = ""
    ei_mev: float | None = None
    temperature_k: float | None = None
    instrument: str | None = None

    def coverage(self, q_min: float, q_max: float) -> np.ndarray:
        """Boolean mask, shape (nq_in_range, ne): which (Q, E) bins in ``q_min <= Q <= q_max`` were measured."""
        qm = (self.q_invA >= q_min) & (self.q_invA <= q_max)
        return np.isfinite(self.intensity[qm])

    def reduce(self, q_min: float, q_max: float, mask=None) -> Spectrum1D:
        """Average over |Q| in [q_min, q_max] (Å^-1) → an energy spectrum (meV).

        Each energy bin is the mean over the Q bins measured at that energy (the kinematic limit removes high-Q
        bins at large energy transfer, so the count varies); errors add in quadrature, divided by the count.
        Energies where no Q bin was measured are dropped. ``mask`` (bool, shape (nq_in_range, ne), as
        :meth:`coverage`) restricts the average further, e.g. to the bins a computed map covers too.
        """
        qm = q_range_mask(self.q_invA, q_min, q_max, f"bin of {self.source}")
        d = self.intensity[qm]
        ok = np.isfinite(d)
        if mask is not None:
            ok &= np.asarray(mask, bool)
        if self.error is not None:
            ok &= np.isfinite(self.error[qm])
        n = ok.sum(axis=0)
        keep = n > 0
        if keep.sum() < 3:
            raise InputError(
                f"{self.source} has fewer than 3 measured energies in |Q| {q_min}–{q_max} Å^-1",
                fix="widen --q-range",
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(ok, d, 0.0).sum(axis=0) / np.maximum(n, 1)
            err = None
            if self.error is not None:
                e = np.where(ok, self.error[qm], 0.0)
                err = np.sqrt((e**2).sum(axis=0)) / np.maximum(n, 1)
        notes = [f"averaged over |Q| {q_min:g}–{q_max:g} Å^-1 ({int(qm.sum())} Q bins)"]
        if (~keep).any():
            notes.append(f"{int((~keep).sum())} energy bins with no measured Q bin dropped")
        return _clean(
            self.energy_mev[keep],
            y[keep],
            None if err is None else err[keep],
            "meV",
            self.source,
            notes,
            warn=False,
        )


def _clean(x, y, err, unit, source, notes=None, warn=True) -> Spectrum1D:
    """Drop NaNs, sort, resample a non-uniform axis, report negative intensities; see the module docstring."""
    notes = list(notes or [])
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    err = None if err is None else np.asarray(err, float)
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if err is not None:
        bad |= ~np.isfinite(err)
    if bad.all():
        raise InputError(f"{source}: every point is NaN or infinite", fix="check the file's columns")
    if bad.any():
        notes.append(f"dropped {int(bad.sum())} of {len(x)} points with NaN/inf values")
        x, y = x[~bad], y[~bad]
        err = None if err is None else err[~bad]
    if len(x) < 3:
        raise InputError(f"{source}: only {len(x)} usable points", fix="a spectrum needs at least 3 points")
    if err is not None and (err < 0).any():
        raise InputError(
            f"{source}: negative uncertainties in the error column",
            fix="the third column must be standard uncertainties (≥ 0)",
        )
    if np.any(np.diff(x) < 0):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        err = None if err is None else err[order]
        notes.append("axis was not sorted: sorted it")
    if np.any(np.diff(x) == 0):
        raise InputError(
            f"{source}: repeated axis values (e.g. {x[np.argmin(np.diff(x))]:g} {unit})",
            fix="merge or remove duplicate points",
        )
    dx = np.diff(x)
    if np.ptp(dx) > 1e-3 * np.median(dx):
        # Similarity measures and the Gaussian broadening of the fit assume equal bins: resample linearly onto
        # the median step (errors interpolated likewise: the fit's χ² is then approximate, and we say so).
        step = float(np.median(dx))
        n_new = (x[-1] - x[0]) / step
        if n_new > max(20 * len(x), 100_000):  # one wild axis value would make a grid of billions of points
            raise InputError(
                f"{source}: the axis spans {x[0]:g}–{x[-1]:g} {unit} with a median step of {step:.4g}: a gap or an "
                f"outlying value (resampling would need {n_new:.3g} points)",
                fix="remove the outlying rows or crop the file to the measured range",
            )
        xn = np.arange(x[0], x[-1] + 0.5 * step, step)
        xn = xn[xn <= x[-1] + 1e-9 * step]
        y = np.interp(xn, x, y)
        err = None if err is None else np.interp(xn, x, err)
        notes.append(
            f"axis was not uniform (steps {dx.min():.4g}–{dx.max():.4g} {unit}): resampled linearly "
            f"onto a uniform {step:.4g} {unit} grid"
        )
        x = xn
    if (y < 0).any():
        notes.append(f"{int((y < 0).sum())} negative intensities kept (background-subtracted data?)")
    if err is not None and (err == 0).all():
        err = None
        notes.append("error column is all zero: ignored")
    elif err is not None and (err == 0).any():
        # a zero error would give an infinite weight; use the smallest positive one instead
        err = np.where(err > 0, err, err[err > 0].min())
        notes.append("zero uncertainties replaced by the smallest positive one")
    if warn:
        for n in notes:
            warnings.warn(f"{source}: {n}", UserWarning, stacklevel=3)
    return Spectrum1D(x, y, err, unit, tuple(notes), str(source))


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def read_columns(path, units: str | None = None) -> Spectrum1D:
    """Read x, y[, error] from a text/CSV file.

    Lines starting with ``#`` are comments; the last comment line or a first non-numeric line is the header,
    from which the unit is detected (``energy_meV``, ``wavenumber_cm1``, ``frequency_thz``, ``E (meV)``...).
    Comma, semicolon, tab or whitespace separated. Extra columns beyond the third are ignored, except that a
    file with a header and no column named like an error (``err``, ``sigma``, ``std``) is read as x, y only
    (atomvib's own ``ins.csv``/``dos.csv`` have partial columns after the total).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"measured/computed spectrum {path} not found", fix="check the path")
    header = None
    rows = []
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc})", fix="check the file and its permissions") from None
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            if not rows:
                header = s.lstrip("#").strip() or header
            continue
        toks = [t for t in re.split(r"[,;\t ]+", s) if t]
        if not all(_is_number(t) for t in toks):
            if not rows:
                header = s
                continue
            raise InputError(f"{path}: line {line!r} is not numeric", fix="remove it or comment it with '#'")
        rows.append([float(t) for t in toks])
    if not rows:
        raise InputError(f"{path}: no numeric rows", fix="expected columns x, y[, error]")
    ncol = min(len(r) for r in rows)
    if ncol < 2:
        raise InputError(f"{path}: needs at least two columns (x, y)", fix="expected columns x, y[, error]")
    data = np.array([r[:ncol] for r in rows])
    names = [t for t in re.split(r"[,;\t]+|\s{2,}|\s(?=[A-Za-z])", header) if t] if header else []
    use_err = ncol >= 3
    if names and len(names) >= 3:
        use_err = bool(re.search(r"err|sigma|std|uncert|dy", names[2], re.I))
    unit = canonical_unit(units) if units else None
    if unit is None:
        unit = detect_unit(names[0] if names else (header or ""))
    if unit is None:
        raise InputError(
            f"{path}: cannot tell the energy unit from the header {header!r}",
            fix="name the first column e.g. energy_meV / wavenumber_cm1 / frequency_thz, or pass --units",
        )
    return _clean(data[:, 0], data[:, 1], data[:, 2] if use_err else None, unit, str(path))


def _decode(v) -> str:
    if isinstance(v, bytes | np.bytes_):
        return v.decode(errors="replace")
    if isinstance(v, np.ndarray) and v.size == 1:
        return _decode(v.ravel()[0])
    return str(v)


def read_sqe_map(path) -> SQEMap:
    """Read the histogram layout written by the ``multiphonon``/``histogram`` tools (ARCS reductions).

    Layout: ``iqe/data`` and ``iqe/errors`` (nq × ne, NaN where not measured), ``iqe/grid/Q/bin centers``
    (Å^-1) and ``iqe/grid/energy/bin centers`` (meV). The ``histogram`` package stores *squared* errors
    (variances) in ``errors``; we return their square root. (Checked on Al-iqe.h5: the bin-to-bin scatter of
    the data, ≈ 0.02, matches √errors, not errors ≈ 4e-4.)

    The incident energy, sample temperature and instrument are taken from attributes of the file or of
    ``iqe`` when present (:data:`EI_ATTRS`, :data:`TEMPERATURE_ATTRS`, ``instrument``); the histogram format
    has no standard place for them (Al-iqe.h5 records none).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found", fix="check the path")
    try:
        with h5py.File(path, "r") as f:
            if "iqe" not in f:
                raise InputError(
                    f"{path}: no 'iqe' group (not an S(Q,E) histogram)",
                    fix="expected iqe/data, iqe/grid/Q, iqe/grid/energy",
                )
            g = f["iqe"]
            data = g["data"][()]
            errs = g["errors"][()] if "errors" in g else None
            q = g["grid/Q/bin centers"][()]
            e = g["grid/energy/bin centers"][()]
            attrs = {**{k.lower(): v for k, v in f.attrs.items()}, **{k.lower(): v for k, v in g.attrs.items()}}
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})", fix="check the file") from None
    except KeyError as exc:
        raise InputError(
            f"{path}: histogram dataset missing ({exc})",
            fix="expected iqe/data, iqe/grid/Q/bin centers, iqe/grid/energy/bin centers",
        ) from None
    if data.shape != (len(q), len(e)):
        raise InputError(
            f"{path}: iqe/data has shape {data.shape}, grid is {len(q)}×{len(e)}", fix="check the file"
        )
    if errs is not None and errs.shape != data.shape:
        errs = None
    inst = next((_decode(attrs[k]) for k in ("instrument", "instrument_name") if k in attrs), None)
    return SQEMap(
        np.asarray(q, float),
        np.asarray(e, float),
        np.asarray(data, float),
        None if errs is None else np.sqrt(np.clip(np.asarray(errs, float), 0, None)),
        str(path),
        _number_attr(attrs, EI_ATTRS),
        _number_attr(attrs, TEMPERATURE_ATTRS),
        inst.strip().lower() if inst else None,
    )


#: attribute names (any case) read as the incident energy in meV / the sample temperature in K
EI_ATTRS = ("ei_mev", "ei", "incident_energy", "incident_energy_mev", "e_i")
TEMPERATURE_ATTRS = ("temperature_k", "temperature", "t", "sample_temperature")


def _number_attr(attrs: dict, names) -> float | None:
    """The first of ``names`` in ``attrs`` that holds one finite positive number, else None."""
    for k in names:
        if k in attrs:
            try:
                v = float(np.asarray(attrs[k], dtype=float).ravel()[0])
            except (TypeError, ValueError, IndexError):
                continue
            if np.isfinite(v) and v > 0:
                return v
    return None


def _read_mantid_1d(f, path: Path, units: str | None) -> Spectrum1D:
    """Mantid ``SaveNexusProcessed`` 1D: ``mantid_workspace_1/workspace/{values,errors,axis1}`` (first spectrum)."""
    ws = f["mantid_workspace_1/workspace"]
    y = np.asarray(ws["values"][()], float)
    y = y[0] if y.ndim == 2 else y
    err = np.asarray(ws["errors"][()], float) if "errors" in ws else None
    if err is not None:
        err = err[0] if err.ndim == 2 else err
    ax = ws["axis1"]
    x = np.asarray(ax[()], float)
    if len(x) == len(y) + 1:  # histogram workspace: bin boundaries → centres
        x = 0.5 * (x[1:] + x[:-1])
    unit = canonical_unit(units) if units else None
    if unit is None:
        meta = " ".join(_decode(ax.attrs.get(k, "")) for k in ("units", "caption", "label"))
        unit = detect_unit(meta) or ("meV" if "DeltaE" in meta else None)
    if unit is None:
        raise InputError(f"{path}: cannot tell the energy unit of axis1", fix="pass --units meV|cm-1|THz")
    return _clean(x, y, err, unit, str(path))


def read_spectrum(path, units: str | None = None, q_range: tuple[float, float] | None = None) -> Spectrum1D:
    """Read any supported measured 1D spectrum.

    Parameters
    ----------
    path : str or Path
        Text/CSV columns, an S(Q,E) histogram (``.h5`` with ``iqe``: reduced over ``q_range``), or a Mantid
        NeXus 1D workspace (``.nxs``/``.h5`` with ``mantid_workspace_1``).
    units : str, optional
        ``meV``, ``cm-1`` or ``THz``; overrides what the file says.
    q_range : (float, float), optional
        |Q| range in Å^-1 for an S(Q,E) map; default (3, 9), where ARCS powder coverage is good.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} not found", fix="check the path")
    if path.is_dir():
        raise InputError(
            f"measured spectrum {path} is a directory",
            fix="give the measured file itself (text/CSV columns, S(Q,E) .h5 or NeXus)",
        )
    try:
        with open(path, "rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc})", fix="check the file and its permissions") from None
    if magic == b"\x89HDF\r\n\x1a\n":
        import h5py

        with h5py.File(path, "r") as f:
            is_map = "iqe" in f
            is_mantid = "mantid_workspace_1/workspace/values" in f
            if is_mantid:
                return _read_mantid_1d(f, path, units)
        if is_map:
            qmin, qmax = q_range or (3.0, 9.0)
            s = read_sqe_map(path).reduce(qmin, qmax)
            return s.to_unit(units) if units else s
        raise InputError(
            f"{path}: HDF5 file with neither an 'iqe' histogram nor a Mantid 1D workspace",
            fix="convert it to two/three text columns (x, y, error)",
        )
    return read_columns(path, units)


def q_range_mask(q_ainv, q_min: float, q_max: float, what: str, tol: float = 0.0) -> np.ndarray:
    """The |Q| points of ``q_ainv`` (Å⁻¹, ascending) inside [q_min, q_max] (± ``tol``), or the one-line error that
    names ``what`` ("bin of FILE", "point of the map") and the range there is."""
    q = np.asarray(q_ainv, dtype=float)
    qm = (q >= q_min - tol) & (q <= q_max + tol)
    if not qm.any():
        raise InputError(f"no |Q| {what} lies in {q_min:g}–{q_max:g} Å^-1",
                         fix=f"choose --q-range inside {q[0]:.3g}–{q[-1]:.3g} Å^-1")
    return qm

