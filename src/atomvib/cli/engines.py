"""``atomvib engines``: list the force engines and whether each is usable here."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "engines",
        help="list force engines and whether each is usable here",
        description="List the force engines, whether each can be used on this machine, and why not.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..engines import list_engines
    from ..engines.registry import DEFAULT_CRYSTAL_ENGINE, DEFAULT_MOLECULE_ENGINE

    rows = list_engines()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "yes" if r["usable"] else "no "
        default = ""
        if r["name"] == DEFAULT_CRYSTAL_ENGINE:
            default = " [default: crystals]"
        elif r["name"] == DEFAULT_MOLECULE_ENGINE:
            default = " [default: molecules]"
        print(f"{r['name']:<{w}} {mark}  {r['description']}{default}")
        print(f"{'':<{w}}      e.g. --engine {r['example']}" + (f"   ({r['reason']})" if r["reason"] else ""))
    return 0
