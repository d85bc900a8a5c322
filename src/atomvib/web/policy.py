"""What a web user may choose: engine specs that name no file on the server and import no code.

The CLI trusts its user with ``ase:module:Class`` (imports a module named by the user), ``sevennet:PATH``,
``chgnet:PATH`` and ``mace:PATH`` (read a server file, unpickled with ``--trust-model-file``). A web user is a
stranger: only the bundled models and the parameter-only engines are accepted, checked here before
:func:`atomvib.get_engine` sees the spec.
"""

from __future__ import annotations

import re

from ..errors import InputError

_NUM = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_PATTERNS = {
    "emt": re.compile(r"^emt$"),
    "lj": re.compile(rf"^lj(?::{_NUM},{_NUM})?$"),
    "xtb": re.compile(r"^xtb(?::[A-Za-z0-9-]{1,20})?$"),
    "pyscf": re.compile(r"^pyscf(?::[A-Za-z0-9_+\-(),*]{1,40}/[A-Za-z0-9_+\-*()]{1,40})?$"),
    "chgnet": re.compile(r"^chgnet(?::(0\.3\.0|0\.2\.0))?$"),
}


def web_engine_spec(spec: str | None) -> str | None:
    """``spec`` if a web user may run it (None: the default engine); InputError otherwise, in one line."""
    if spec is None or not str(spec).strip():
        return None
    spec = str(spec).strip()
    name = spec.partition(":")[0].lower()
    ok = False
    if name == "sevennet":
        from ..engines.mlip import _BUNDLED_SEVENNET

        arg = spec.partition(":")[2]
        model, _, head = arg.partition(":")
        ok = (not arg or model.lower() in _BUNDLED_SEVENNET) and re.fullmatch(r"[A-Za-z0-9_-]{0,20}", head) is not None
    elif name in _PATTERNS:
        ok = _PATTERNS[name].match(spec) is not None
    if not ok:
        raise InputError(
            f"engine '{spec[:80]}' is not offered by the web app",
            fix="choose a bundled model (sevennet, sevennet:7net-l3i5, sevennet:7net-mf-0[:r2scan], chgnet), xtb, "
            "pyscf:XC/BASIS, emt or lj:SIGMA,EPSILON; model files and ase:module:Class only from the command line",
        )
    return spec
