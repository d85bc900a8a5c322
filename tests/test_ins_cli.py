"""`atomvib ins` end to end, in-process: files, columns, agreement with the API, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomvib.cli.main import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "phonopy-examples" / "MgO"


@pytest.fixture
def mgo():
    if not DATA.is_dir():
        pytest.skip("reference data ../shared/data not present")
    return ["--forces", str(DATA / "FORCE_SETS"), "--born", str(DATA / "BORN")], str(
        DATA / "phonopy_disp.yaml"
    )


def test_vision_csv_and_png(mgo, tmp_path, capsys):
    import pandas as pd

    opts, yaml = mgo
    rc = main(
        [
            "ins",
            yaml,
            *opts,
            "--instrument",
            "vision",
            "--mesh",
            "16",
            "--emax",
            "200",
            "--out",
            str(tmp_path / "v"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(tmp_path / "v" / "ins.csv")
    assert list(df.columns) == [
        "energy_meV",
        "intensity",
        "intensity_forward",
        "Mg",
        "O",
        "order_1",
        "order_2",
        "order_3",
    ]
    assert np.allclose(df["Mg"] + df["O"], df["intensity"], rtol=1e-6, atol=1e-9)
    assert np.allclose(
        df[["order_1", "order_2", "order_3"]].sum(axis=1), df["intensity"], rtol=1e-6, atol=1e-9
    )
    # strongest MgO peak near 49 meV (OCLIMAX on the same forces: 48.95 meV)
    assert df["energy_meV"][df["intensity"].idxmax()] == pytest.approx(49.0, abs=0.6)
    assert (tmp_path / "v" / "ins.png").stat().st_size > 10_000
    assert (tmp_path / "v" / "ins.json").is_file()


def test_arcs_map_h5(mgo, tmp_path, capsys):
    import h5py

    opts, yaml = mgo
    rc = main(
        [
            "ins",
            yaml,
            *opts,
            "--instrument",
            "arcs",
            "--ei",
            "100",
            "--mesh",
            "6",
            "--order",
            "2",
            "--no-plot",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with h5py.File(tmp_path / "a" / "ins_map.h5") as f:
        z = f["intensity"][()]
        assert z.shape == (len(f["q_ainv"]), len(f["energy_mev"]))
        assert f["energy_mev"][-1] < 90.5
        assert f.attrs["instrument"] == "arcs"
    assert np.isnan(z).any() and np.nanmin(z) >= 0
    # the 1D cut for `atomvib compare`: compare's default |Q| range, covered points only, said in the first line
    head, cols = (tmp_path / "a" / "ins.csv").read_text().splitlines()[:2]
    assert head.startswith("# atomvib ins: ARCS powder map at Ei 100 meV") and "q_range_ainv=3,9" in head
    assert cols == "energy_meV,intensity,n_q_points"
    cut = np.loadtxt(tmp_path / "a" / "ins.csv", delimiter=",", skiprows=2)
    assert 0 < cut[:, 2].min() and cut[:, 2].max() == 61 and np.all(cut[:, 1] >= 0)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--instrument", "iris"], "unknown instrument 'iris' (fix: use one of vision, tosca, arcs"),
        (["--instrument", "arcs"], "needs an incident energy"),
        (["--instrument", "arcs", "--ei", "0.5"], "below the lowest phonon energy"),
        (["--order", "0"], "--order 0 out of range"),
    ],
)
def test_bad_input_one_line_exit_2(mgo, tmp_path, capsys, extra, message):
    opts, yaml = mgo
    rc = main(["ins", yaml, *opts, "--mesh", "4", "--out", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_cross_section(tmp_path, capsys):
    """Polonium (Z = 84) is not in the Sears table used: a one-line error naming the element."""
    from ase.build import bulk

    from atomvib.errors import InputError
    from atomvib.spectra.neutron_data import total_cross_sections_barn

    with pytest.raises(InputError, match="'Po'"):
        total_cross_sections_barn(["Na", "Po"])
    bulk("Po", "sc", a=3.35).write(tmp_path / "Po.cif")
    rc = main(
        [
            "ins",
            str(tmp_path / "Po.cif"),
            "--engine",
            "lj",
            "--no-relax",
            "--mesh",
            "2",
            "--out",
            str(tmp_path / "p"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "no neutron cross-section for element 'Po'" in err
