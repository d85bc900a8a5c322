"""Speed of the web app (issue 15's targets): page loads, the predictor preview of a 20-atom cell, the result page of
a ~100-atom cell, and a bounded load test (concurrent users browsing results, p95 latency).

    python benchmarks/web_speed.py [--users 20] [--requests 10] [--out benchmarks/web_speed.json]

It makes two results with EMT (Al 1-atom; a rattled Al 108-atom cell, P1, so 324 branches; one supercell),
serves them with `atomvib serve` in a subprocess on a free local port, and measures in headless Chromium (Selenium)
and with httpx. Needs chromium + chromedriver for the browser numbers (skipped, and said so, without them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ATOMVIB_THREADS", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_results(data: Path) -> dict[str, str]:
    """Store rows for a small and a ~100-atom EMT result (through the batch runner, as the app's jobs)."""
    from ase.build import bulk
    from ase.io import write

    from atomvib.batch import run_batch
    from atomvib.settings import PhononSettings
    from atomvib.store import Store

    inputs = data / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    write(inputs / "Al.cif", bulk("Al", "fcc", a=4.05))
    big_cell = bulk("Al", "fcc", a=4.05, cubic=True) * (3, 3, 3)
    big_cell.rattle(stdev=0.03, seed=1)  # P1: its primitive cell is all 108 atoms (324 branches)
    write(inputs / "Al108.cif", big_cell)
    db = str(data / "atomvib.db")
    small = PhononSettings(engine="emt", relax=False, min_supercell_length_a=8.0)
    big = PhononSettings(engine="emt", relax=False, primitive=False, supercell=(1, 1, 1), mesh_density=40.0)
    t0 = time.perf_counter()
    run_batch([str(inputs / "Al.cif")], settings=small, db=db, results_dir=data / "results", workers=1, quiet=True)
    run_batch([str(inputs / "Al108.cif")], settings=big, db=db, results_dir=data / "results", workers=1, quiet=True)
    print(f"results computed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    store = Store(db)
    df = store.calculations(status="done")
    store.close()
    return dict(zip(("al1", "al108"), df.key))  # in the order computed


def twenty_atom_cell(path: Path) -> Path:
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("ZnO", "wurtzite", a=3.25, c=5.21) * (1, 1, 5)  # 20 atoms
    write(path, atoms)
    return path


def browser_numbers(base: str, keys: dict) -> dict:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        return {"browser": "skipped: no chromium/chromedriver"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=opts)
    out = {}
    nav = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"
    try:
        for name, path in (("new", "/"), ("jobs", "/jobs")):
            drv.get(base + path)  # warm (the first load fetches plotly.js and 3Dmol once; then cached)
            loads = []
            for _ in range(3):
                drv.get(base + path)
                loads.append(drv.execute_script(nav))
            out[f"page_load_{name}_ms"] = round(statistics.median(loads), 1)
        for label, key in keys.items():
            plots, server, loads = [], [], []
            for _ in range(3):
                drv.get(f"{base}/results/{key}")
                WebDriverWait(drv, 120).until(
                    lambda d: d.find_element("id", "status").get_attribute("data-state") == "done")
                plots.append(float(drv.find_element("id", "status").get_attribute("data-ms")))
                server.append(float(drv.find_element("id", "status").text.split("server ")[1].split(" ms")[0]))
                loads.append(drv.execute_script(nav))
            out[f"result_{label}_plots_ms"] = round(statistics.median(plots), 1)
            out[f"result_{label}_server_ms"] = round(statistics.median(server), 1)
            out[f"result_{label}_page_load_ms"] = round(statistics.median(loads), 1)
            out[f"result_{label}_branches"] = drv.execute_script(
                "return document.getElementById('dispersion').data.filter(t => t.meta && t.meta.kind === 'branch')"
                ".length")
    finally:
        drv.quit()
    return out


def preview_numbers(base: str, cell: Path) -> dict:
    import httpx

    h = {"X-Atomvib": "1"}
    with httpx.Client(base_url=base, timeout=120) as c:
        up = c.post("/api/structures", files={"file": (cell.name, cell.read_bytes())}, headers=h).json()
        c.get(f"/api/structures/{up['id']}/preview")  # model warm
        server, wall = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            t_up = c.post("/api/structures", files={"file": (cell.name, cell.read_bytes())}, headers=h).json()
            r = c.get(f"/api/structures/{t_up['id']}/preview").json()
            wall.append(1e3 * (time.perf_counter() - t0))
            server.append(r["predict_ms"])
    return {"preview_natoms": up["natoms"], "preview_predict_ms_median": round(statistics.median(server), 1),
            "upload_plus_preview_ms_median": round(statistics.median(wall), 1)}


async def load_test(base: str, keys: dict, users: int, requests: int) -> dict:
    """``users`` concurrent clients, each ``requests`` rounds over: job list, store table, result pages and their data
    (plots); the INS of each result is asked for once before (computed once, then served from the app's cache)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    paths = ["/jobs", "/api/jobs", "/api/calculations"]
    for key in keys.values():
        paths += [f"/results/{key}", f"/api/results/{key}", f"/api/results/{key}/ins?instrument=vision"]
    async with httpx.AsyncClient(base_url=base, timeout=600) as c:
        t_ins = {}
        for key in keys.values():
            t0 = time.perf_counter()
            await c.get(f"/api/results/{key}/ins?instrument=vision")
            t_ins[key] = round(1e3 * (time.perf_counter() - t0), 1)

    async def user(i):
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=120) as c:
            for r in range(requests):
                path = paths[(i + r) % len(paths)]
                t0 = time.perf_counter()
                resp = await c.get(path)
                latencies.append(1e3 * (time.perf_counter() - t0))
                errors += resp.status_code != 200

    t0 = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(users)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"load_users": users, "load_requests": len(lat), "load_errors": errors,
            "load_p50_ms": round(lat[len(lat) // 2], 1), "load_p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 1),
            "load_max_ms": round(lat[-1], 1), "load_seconds": round(wall, 2),
            "ins_first_request_ms": {label: t_ins[k] for label, k in keys.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="atomvib_web_speed_"))
    keys = make_results(data)
    cell = twenty_atom_cell(data / "ZnO_1x1x5.cif")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "atomvib.cli.main", "serve", "--data", str(data),
                               "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        t_end = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > t_end or server.poll() is not None:
                raise RuntimeError("atomvib serve did not start")
            time.sleep(0.3)
        out = {"cores": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}
        out.update(preview_numbers(base, cell))
        out.update(browser_numbers(base, keys))
        out.update(asyncio.run(load_test(base, keys, args.users, args.requests)))
        out["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
