"""Files from the browser: size limits, generated names under the data directory, the CLI's readers.

No name, path or id from a client reaches the file system: an upload is written as
``DATA/uploads/<32 hex>.<extension from a fixed table>`` and found again only by that generated id, checked
against :data:`ID_RE`. The client's file name is kept for display only (cleaned of paths and control
characters). Structures are read by :func:`atomvib.read_structure` (the CLI's reader and validation), measured
spectra by :func:`atomvib.spectra.read_spectrum`; errors are the same one-line :class:`AtomvibError` messages,
with the stored path replaced by the name the user gave.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

#: generated ids: uploads, jobs (hex only: nothing else is ever joined to a path)
ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: calculation keys of the store (16 hex chars; they also name result directories)
KEY_RE = re.compile(r"^[0-9a-f]{16}$")
#: structure uploads: file name pattern → (stored extension, ASE format)
STRUCTURE_TYPES = (
    (re.compile(r"\.cif$", re.I), ".cif", "cif"),
    (re.compile(r"\.extxyz$", re.I), ".extxyz", "extxyz"),
    (re.compile(r"\.xyz$", re.I), ".xyz", "extxyz"),  # ASE reads plain XYZ with its extxyz reader
    (re.compile(r"(\.vasp|\.poscar)$|^(POSCAR|CONTCAR)", re.I), ".vasp", "vasp"),
)
#: measured spectra: the suffixes `atomvib compare` reads
SPECTRUM_SUFFIXES = (".csv", ".txt", ".dat", ".xy", ".tsv", ".h5", ".hdf5", ".nxs")
DEFAULT_MAX_UPLOAD_BYTES = 5 * 1024 * 1024


class UploadTooLarge(InputError):
    """An upload over the app's limit (HTTP 413)."""


def display_name(name: str | None, default: str = "upload") -> str:
    """The last path component of a client's file name, printable characters only, at most 100 of them."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    base = base.lstrip(".") or default  # no hidden or relative names, even for display
    return base[:100]


def structure_type(name: str) -> tuple[str, str]:
    """(stored extension, ASE format) of a structure file name; InputError for any other kind of file."""
    base = display_name(name)
    for pattern, ext, fmt in STRUCTURE_TYPES:
        if pattern.search(base):
            return ext, fmt
    raise InputError(
        f"{base}: not a structure file the app reads",
        fix="upload a CIF (.cif), POSCAR/CONTCAR (.vasp), extended XYZ (.extxyz) or XYZ (.xyz) file",
    )


def spectrum_suffix(name: str) -> str:
    base = display_name(name)
    suffix = Path(base).suffix.lower()
    if suffix not in SPECTRUM_SUFFIXES:
        raise InputError(
            f"{base}: not a measured-spectrum file the app reads",
            fix="upload text/CSV columns (.csv, .txt, .dat, .xy), an S(Q,E) histogram (.h5) or a NeXus 1D (.nxs)",
        )
    return suffix


def one_line(exc: BaseException, stored: Path | None = None, shown: str = "") -> str:
    """The one-line message of an error, the stored path replaced by the user's file name."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if stored is not None and shown:
        msg = msg.replace(str(stored), shown)
    return msg


@dataclass(frozen=True)
class Upload:
    """A file the app keeps: generated id, where it is, what the user called it, its kind."""

    id: str
    path: Path
    name: str
    kind: str  # "structure" or "spectrum"
    fmt: str = ""
    owner: str | None = None

    def meta(self) -> dict:
        return {"id": self.id, "file": self.path.name, "name": self.name, "kind": self.kind, "fmt": self.fmt,
                "owner": self.owner, "created": time.time()}


class UploadStore:
    """Uploaded files under ``DATA/uploads`` with generated names; lookups only by generated id.

    With ``per_user``, an upload records the user who sent it and is found only for that user (another user's
    upload id is "unknown", as if it did not exist).
    """

    def __init__(self, data_dir: Path, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, per_user: bool = False):
        self.dir = Path(data_dir) / "uploads"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.per_user = bool(per_user)

    def check_size(self, n: int, name: str) -> None:
        if n > self.max_bytes:
            raise UploadTooLarge(
                f"{display_name(name)}: {n / 1e6:.1f} MB is more than the upload limit of {self.max_bytes / 1e6:.1f} MB",
                fix="upload a smaller file (a unit or primitive cell), or start the app with a larger --max-upload-mb",
            )
        if n == 0:
            raise InputError(f"{display_name(name)} is empty", fix="give a file that contains a structure")

    def save(self, data: bytes, name: str, kind: str, owner: str | None = None) -> Upload:
        """Write ``data`` under a new generated name (the client's ``name`` decides only the extension)."""
        self.check_size(len(data), name)
        if kind == "structure":
            ext, fmt = structure_type(name)
        else:
            ext, fmt = spectrum_suffix(name), ""
        uid = secrets.token_hex(16)
        up = Upload(uid, self.dir / f"{uid}{ext}", display_name(name), kind, fmt, owner)
        tmp = self.dir / f".{uid}.tmp"
        tmp.write_bytes(data)
        tmp.replace(up.path)
        (self.dir / f"{uid}.json").write_text(json.dumps(up.meta()))
        return up

    def get(self, uid: str, kind: str | None = None, owner: str | None = None) -> Upload:
        """The upload of a generated id; InputError for anything else (a path, another kind, an unknown id, and
        with ``per_user`` another user's upload)."""
        if not isinstance(uid, str) or not ID_RE.match(uid):
            raise InputError("unknown upload id", fix="upload the file again")
        try:
            meta = json.loads((self.dir / f"{uid}.json").read_text())
        except (OSError, ValueError):
            raise InputError("unknown upload id", fix="upload the file again") from None
        path = self.dir / Path(str(meta.get("file", ""))).name
        if not path.name.startswith(uid) or not path.is_file() or (kind and meta.get("kind") != kind):
            raise InputError("unknown upload id", fix="upload the file again")
        if self.per_user and meta.get("owner") != owner:
            raise InputError("unknown upload id", fix="upload the file again")
        return Upload(uid, path, display_name(meta.get("name")), meta.get("kind", ""), meta.get("fmt", ""),
                      meta.get("owner"))


def read_uploaded_structure(up: Upload):
    """The Structure of an upload through the CLI's reader; its errors name the user's file, not ours."""
    from ..errors import AtomvibError
    from ..structure import read_structure

    try:
        s = read_structure(up.path, fmt=up.fmt or None)
    except AtomvibError as exc:
        raise InputError(one_line(exc, up.path, up.name)) from None
    # the source shown everywhere (and recorded in the store) is the user's name; the file stays ours
    import dataclasses

    return dataclasses.replace(s, source=up.name)
