"""A committee of force engines: one crystal through several bundled MLIPs, every quantity with its spread.

Universal MLIPs soften phonons, each by its own amount, so one engine's answer comes with no idea of its
error. Running the same structure through independently trained models (each relaxing it with its own
model) and reporting the mean and the spread is the cheapest honest error bar there is (a "committee", as
in Musil et al., J. Chem. Theory Comput. 15, 906 (2019)). Models trained on the same data agree more than
their errors warrant, so the spread is multiplied by a scale factor fitted on DFPT crystals
(``scripts/calibrate_committee.py`` → ``committee_calibration.json`` beside this module): one for each scalar
quantity with a DFT reference (ω_max, F, S, Cv at 300 K), so that its 90 % interval ``mean ± 1.645·σ`` holds the
DFT value for 85–95 % of the Petretto valid crystals used, and one pooled over the four for what has no per-crystal
reference (bands, DOS, spectra).

The members are ordinary :class:`~atomvib.harmonic.crystal.CrystalPhonons`; this module only stacks them.
Engines are created once per spec per process (the registry), so a committee over many inputs loads each
model once. Units as in CrystalPhonons: THz, states/THz per primitive cell, per mole of the primitive cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AtomvibError, EngineError, InputError
from ..results import Result
from .crystal import BandStructure, CrystalPhonons

#: members of ``--engine committee``: the bundled crystal engines, each trained on its own (see docs/validation.md)
DEFAULT_MEMBERS: tuple[str, ...] = ("sevennet", "sevennet:7net-l3i5", "chgnet")
#: z of the two-sided 90 % interval of a normal distribution
Z90 = 1.6448536269514722
CALIBRATION_FILE = Path(__file__).with_name("committee_calibration.json")
#: thermal field → its name in the calibration's per-quantity ``scales``
_THERMAL_QUANTITY = {"free_energy_kj_per_mol": "F", "entropy_j_per_k_per_mol": "S", "heat_capacity_j_per_k_per_mol": "Cv"}


def split_specs(text: str) -> tuple[str, ...]:
    """Engine specs from a comma-separated list; a number after a comma belongs to the spec before it
    (``lj:2.55,0.4,emt`` → ``("lj:2.55,0.4", "emt")``)."""
    out: list[str] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        try:
            float(tok)
            is_number = True
        except ValueError:
            is_number = False
        if is_number and out:
            out[-1] += f",{tok}"
        else:
            out.append(tok)
    return tuple(out)


def calibration(members) -> dict:
    """The σ scale factor fitted for this set of members (``{"scale": 1.0, ...}`` uncalibrated when none was)."""
    if CALIBRATION_FILE.is_file():
        table = json.loads(CALIBRATION_FILE.read_text())
        for entry in table.get("committees", []):
            if sorted(entry["members"]) == sorted(members):
                return entry
    return {"scale": 1.0, "members": list(members), "note": "uncalibrated: no fit for this set of members"}


def fit_scale(errors, sigmas, coverage: float = 0.9) -> float:
    """The factor k such that ``|error| ≤ z·k·σ`` for a fraction ``coverage`` of the points (z of a normal
    two-sided interval: 1.645 for 90 %). ``errors`` and ``sigmas`` are arrays of the same shape (pooled)."""
    from scipy.stats import norm

    z = np.abs(np.ravel(errors)) / np.maximum(np.ravel(sigmas), 1e-300)
    return float(np.quantile(z, coverage) / norm.ppf(0.5 + coverage / 2))


def interval_coverage(errors, sigmas, k: float, z: float = Z90) -> float:
    """Fraction of points whose |error| lies inside ``z·k·σ``."""
    return float(np.mean(np.abs(np.ravel(errors)) <= z * k * np.ravel(sigmas)))


@dataclass(frozen=True, eq=False)
class Spread:
    """Mean and calibrated standard deviation of a quantity over the committee.

    Attributes
    ----------
    mean, std : ndarray, same shape (the quantity's shape and unit)
        ``std`` is the members' sample standard deviation (ddof=1) times the calibration scale.
    members : ndarray, shape (n_members, ...)
        Each member's value.
    """

    mean: np.ndarray
    std: np.ndarray
    members: np.ndarray

    @classmethod
    def of(cls, values, scale: float = 1.0) -> Spread:
        v = np.asarray(values, dtype=float)
        std = v.std(axis=0, ddof=1) if len(v) > 1 else np.zeros_like(v[0])
        return cls(mean=v.mean(axis=0), std=scale * std, members=v)

    def interval(self, z: float = Z90) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) = mean ∓ z·std; z = 1.645 gives the calibrated 90 % interval."""
        return self.mean - z * self.std, self.mean + z * self.std


@dataclass(frozen=True, eq=False)
class CommitteePhonons(Result):
    """Phonons of one crystal from several engines, with the spread as an error bar.

    Attributes
    ----------
    members : tuple of CrystalPhonons
        One result per engine, each on its own relaxed structure.
    scale : float
        Calibration factor applied to standard deviations (pooled; 1.0 = uncalibrated); ω_max, F, S and Cv use
        their own factors from ``calibration["scales"]`` where fitted (:meth:`scale_for`).
    calibration : dict
        Where ``scale`` comes from (members, number of crystals, coverage before/after).
    """

    members: tuple
    scale: float = 1.0
    calibration: dict = field(default_factory=dict)

    kind = "committee"

    @property
    def engines(self) -> list[str]:
        return [m.engine.spec or m.engine.name for m in self.members]

    @property
    def primitive(self):
        return self.members[0].primitive

    @property
    def structure(self):
        return self.members[0].structure

    @property
    def settings(self):
        return self.members[0].settings

    def scale_for(self, quantity: str | None = None) -> float:
        """The σ factor of ``quantity`` ("ω_max", "F", "S", "Cv": fitted for each; None or anything else: the
        pooled ``scale``)."""
        return float(self.calibration.get("scales", {}).get(quantity, self.scale))

    @property
    def has_imaginary(self) -> bool:
        """True when any member has imaginary modes (the members are listed in the summary)."""
        return any(m.has_imaginary for m in self.members)

    def spread(self, fn, quantity: str | None = None) -> Spread:
        """The spread of ``fn(member)`` (any array of the same shape for every member) over the committee, σ scaled
        by :meth:`scale_for` ``(quantity)``."""
        return Spread.of([np.asarray(fn(m), dtype=float) for m in self.members], self.scale_for(quantity))

    def omega_max(self) -> Spread:
        """Highest frequency, THz."""
        return self.spread(lambda m: m.omega_max_thz, "ω_max")

    def thermal(self, temperatures_k=None) -> dict[str, Spread]:
        """F (kJ/mol), S, Cv (J/K/mol) per mole of the primitive cell on ``temperatures_k`` (default: the grid)."""
        th = [m.thermal(temperatures_k) for m in self.members]
        names = ("free_energy_kj_per_mol", "entropy_j_per_k_per_mol", "heat_capacity_j_per_k_per_mol")
        out = {n: Spread.of([getattr(t, n) for t in th], self.scale_for(_THERMAL_QUANTITY[n])) for n in names}
        out["temperatures_k"] = th[0].temperatures_k
        return out

    def dos(self, frequencies_thz=None) -> tuple[np.ndarray, Spread]:
        """Total DOS (states/THz per primitive cell) of every member on one axis: (axis (nf,), Spread (nf,))."""
        if frequencies_thz is None:
            top = max(float(m.dos().frequencies_thz.max()) for m in self.members)
            frequencies_thz = np.arange(0.0, top, self.settings.dos_step_thz)
        f = np.asarray(frequencies_thz, dtype=float)
        return f, self.spread(lambda m: np.interp(f, m.dos().frequencies_thz, m.dos().total, left=0.0, right=0.0))

    def band_structure(self) -> tuple[BandStructure, Spread]:
        """The first member's path and the frequencies (nq, nbands) THz of every member along it."""
        shapes = {m.band_structure().frequencies_thz.shape for m in self.members}
        if len(shapes) != 1:
            raise InputError(
                "the committee's members relaxed to structures with different band paths",
                fix="compare their space groups in summary.json; relax with --fix-cell or --no-relax",
            )
        return self.members[0].band_structure(), self.spread(lambda m: m.band_structure().frequencies_thz)

    def summary(self) -> dict:
        from ..output import thermal_bases

        t = self.settings.summary_temperature("crystal")
        at = [m.thermal_.at(t) for m in self.members]  # the grid's values, as each member's summary has them
        th = {k: Spread.of([a[label] for a in at], self.scale_for(_THERMAL_QUANTITY[k])) for k, label in (
            ("free_energy_kj_per_mol", "free_energy_kJ_per_mol"), ("entropy_j_per_k_per_mol", "entropy_J_per_K_per_mol"),
            ("heat_capacity_j_per_k_per_mol", "heat_capacity_J_per_K_per_mol"))}
        prim = self.primitive
        om = self.omega_max()

        def entry(s: Spread) -> dict:
            lo, hi = s.interval()
            return {"mean": float(np.ravel(s.mean)[0]), "std": float(np.ravel(s.std)[0]),
                    "interval_90": [float(np.ravel(lo)[0]), float(np.ravel(hi)[0])],
                    "members": [float(x) for x in np.ravel(s.members)]}

        values = {
            "temperature_K": t,
            "free_energy_kJ_per_mol": entry(th["free_energy_kj_per_mol"]),
            "entropy_J_per_K_per_mol": entry(th["entropy_j_per_k_per_mol"]),
            "heat_capacity_J_per_K_per_mol": entry(th["heat_capacity_j_per_k_per_mol"]),
        }
        z = prim.formula_units or 1
        per_fu = {k: ({kk: (vv / z if kk != "members" and not isinstance(vv, list) else
                            [x / z for x in vv]) for kk, vv in v.items()} if isinstance(v, dict) else v)
                  for k, v in values.items()}
        bases = thermal_bases({}, prim)
        return {
            "kind": "committee",
            "engines": self.engines,
            "members": [m.engine.to_dict() for m in self.members],
            "structure": {"formula": prim.formula, "cell_formula": prim.cell_formula, "formula_units": z,
                          "natoms": prim.natoms, "spacegroups": [m.primitive.spacegroup() for m in self.members]},
            "omega_max_thz": entry(om),
            "has_imaginary": [bool(m.has_imaginary) for m in self.members],
            "thermal": {**values, "basis": bases["basis"],
                        "per_formula_unit": {**per_fu, "basis": bases["per_formula_unit"]["basis"]}},
            "uncertainty": {"scale": self.scale, "scales": self.calibration.get("scales", {}),
                            "std": "members' sample standard deviation × scale (per quantity where fitted)",
                            "interval_90": "mean ± 1.645 std", "calibration": self.calibration},
        }

    def _write_files(self, out) -> None:
        f, dos = self.dos()
        np.savetxt(out / "dos.csv", np.column_stack([f, dos.mean, dos.std, *dos.members]), delimiter=",",
                   header=",".join(["frequency_thz", "total_mean", "total_std", *self.engines]), comments="",
                   fmt="%.8g")
        th = self.thermal()
        cols, names = [th["temperatures_k"]], ["temperature_K"]
        for key, label in (("free_energy_kj_per_mol", "free_energy_kJ_per_mol"),
                           ("entropy_j_per_k_per_mol", "entropy_J_per_K_per_mol"),
                           ("heat_capacity_j_per_k_per_mol", "heat_capacity_J_per_K_per_mol")):
            cols += [th[key].mean, th[key].std]
            names += [f"{label}_mean", f"{label}_std"]
        np.savetxt(out / "thermal.csv", np.column_stack(cols), delimiter=",", header=",".join(names), comments="",
                   fmt="%.8g")


def committee_phonons(inp, members=DEFAULT_MEMBERS, settings=None, *, checkpoint_dir=None, progress=False,
                      fmt=None, **overrides) -> CommitteePhonons:
    """Phonons of ``inp`` (a crystal) from every engine in ``members``, back to back in this process.

    Parameters
    ----------
    inp : path, ase.Atoms or Structure
    members : sequence of str
        Engine specs (``atomvib engines``); at least two.
    settings : PhononSettings, optional
        Shared by every member (the ``engine`` field is ignored); keyword ``overrides`` replace fields.
    checkpoint_dir : path, optional
        Each member checkpoints its relaxation and forces in a subdirectory named after its engine.
    """
    from ..progress import as_progress
    from ..workflow import phonons

    members = tuple(dict.fromkeys(str(m).strip() for m in members if str(m).strip()))
    if len(members) < 2:
        raise InputError(f"a committee needs at least two engines, got {list(members)}",
                         fix="give e.g. --committee sevennet,sevennet:7net-l3i5,chgnet")
    progress = as_progress(progress)
    out = []
    for spec in members:
        progress.message(f"committee member {spec}")
        sub = Path(checkpoint_dir) / ("member_" + "".join(c if c.isalnum() else "_" for c in spec)) \
            if checkpoint_dir else None
        try:
            r = phonons(inp, engine=spec, settings=settings, checkpoint_dir=sub, progress=progress, fmt=fmt,
                        **overrides)
        except AtomvibError as exc:
            raise type(exc)(f"committee member {spec}: {exc.problem}",
                            fix=exc.fix or "leave this engine out of --committee") from None
        if not isinstance(r, CrystalPhonons):
            raise EngineError("a committee is for crystals; this input is a molecule", fix="drop --committee")
        out.append(r)
    cal = calibration(members)
    return CommitteePhonons(members=tuple(out), scale=float(cal.get("scale", 1.0)), calibration=cal)
