import os
from pathlib import Path

import pytest

# Pin thread pools before torch/BLAS are imported (see atomvib.runtime).
os.environ.setdefault("ATOMVIB_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# no force-worker pools in the tests unless a test asks for one (each worker holds a model copy)
os.environ.setdefault("ATOMVIB_WORKERS", "1")

#: the project's reference data, checked out next to the repository as ../shared/data
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("reference data ../shared/data not present")
    return SHARED_DATA


@pytest.fixture
def phonopy_examples(shared_data) -> Path:
    d = shared_data / "phonopy-examples"
    if not d.is_dir():
        pytest.skip("phonopy-examples not present")
    return d
