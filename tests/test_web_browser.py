"""The web app end to end in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven
by Selenium against ``atomvib serve``'s app on a local port.

Upload examples/Si.cif, see the predictor's preview, submit (Lennard-Jones: a fast engine that covers Si; EMT does
not, and that refusal is checked too), watch the job finish in the job list, count the dispersion's branches, download
phonopy.yaml and load it with phonopy; upload a broken CIF and see the CLI's one-line error; compare a measured
spectrum and see the fitted values. Skips (with the reason) where no Chromium, driver or Selenium is installed.

With ``ATOMVIB_WEB_SCREENSHOTS=DIR`` the pages are saved as PNGs there, with the measured timings in
``DIR/web_timings.json`` (how docs/web.md's figures and numbers are made).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BRANCHES_SI = 6  # 2 atoms × 3
LJ_SI = "lj:2.09,0.1"  # σ = d(Si–Si)/2^(1/6): a toy, fast force field that covers Si (unstable: imaginary modes shown)


def _find(*names):
    for n in names:
        p = shutil.which(n)
        if p:
            return p
    return None


def _browser_or_skip():
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    for mod in ("fastapi", "uvicorn", "multipart"):
        pytest.importorskip(mod)
    chrome = os.environ.get("ATOMVIB_CHROMIUM") or _find("chromium", "chromium-browser", "google-chrome")
    driver = os.environ.get("ATOMVIB_CHROMEDRIVER") or _find("chromedriver", "chromium-driver")
    if not chrome or not driver:
        pytest.skip("no headless Chromium and chromedriver found (Debian: apt-get install chromium chromium-driver)")
    return chrome, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _browser_or_skip()
    import uvicorn

    from atomvib.web import create_app

    data = tmp_path_factory.mktemp("webapp")
    app = create_app(data, workers=1, phonon_defaults={"mesh_density": 50.0},
                     allowed_hosts=["127.0.0.1", "localhost"])
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    t_end = time.monotonic() + 60
    while not srv.started:
        if time.monotonic() > t_end or not t.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", data
    srv.should_exit = True
    t.join(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-extensions"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    drv.downloads = downloads
    yield drv
    drv.quit()


SHOTS = os.environ.get("ATOMVIB_WEB_SCREENSHOTS")
TIMINGS: dict = {}


def _shot(drv, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        height = drv.execute_script("return document.body.scrollHeight")
        drv.set_window_size(1280, min(max(int(height) + 40, 700), 2400))
        drv.save_screenshot(str(Path(SHOTS) / f"web_{name}.png"))
        drv.set_window_size(1280, 1000)


def _wait(drv, cond, timeout=60.0, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(drv, timeout, poll_frequency=0.2).until(cond, message=f"waiting for {what}")


def _page_load_ms(drv) -> float:
    return float(drv.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;"))


def _js_errors(drv) -> list[str]:
    try:
        logs = drv.get_log("browser")
    except Exception:  # not every driver keeps the console
        return []
    return [e["message"] for e in logs if e.get("level") == "SEVERE" and "favicon" not in e["message"]
            and "status of 4" not in e["message"]]  # a 400 the page shows as an error is not a script error


def _by_id(drv, id_):
    from selenium.webdriver.common.by import By

    return drv.find_element(By.ID, id_)


def _upload(drv, base, path: Path):
    drv.get(base + "/")
    _by_id(drv, "file").send_keys(str(path))


@pytest.fixture(scope="module")
def finished(server, browser):
    """Si.cif uploaded, previewed, submitted with LJ, finished; returns the result key."""
    from selenium.webdriver.common.by import By

    base, _ = server
    drv = browser
    # the first page load: the app warms up its engine list and predictor in the background
    _upload(drv, base, EXAMPLES / "Si.cif")
    _wait(drv, lambda d: _by_id(d, "s-formula").text == "Si", 60, "the structure facts")
    assert _by_id(drv, "s-natoms").text == "2"
    assert _by_id(drv, "s-spacegroup").text.startswith("Fd-3m")
    _wait(drv, lambda d: _by_id(d, "preview-status").get_attribute("data-state") in ("done", "failed"), 90,
          "the preview")
    assert _by_id(drv, "preview-status").get_attribute("data-state") == "done", _by_id(drv, "preview-status").text
    assert "C_v(300 K)" in _by_id(drv, "preview-status").text
    n_traces = drv.execute_script("return document.getElementById('preview-dos').data.length")
    assert n_traces == 3  # band edges + mean
    # measured once warm: a second upload of the same file
    t0 = time.perf_counter()
    drv.get(base + "/")
    TIMINGS["new_page_load_ms"] = _page_load_ms(drv)
    _by_id(drv, "file").send_keys(str(EXAMPLES / "Si.cif"))
    _wait(drv, lambda d: _by_id(d, "preview-status").get_attribute("data-state") == "done", 60, "the preview")
    TIMINGS["upload_to_preview_ms"] = 1e3 * (time.perf_counter() - t0)
    TIMINGS["preview_request_ms_in_browser"] = float(_by_id(drv, "preview-status").get_attribute("data-ms"))
    _shot(drv, "new")
    # EMT does not cover Si: refused on submit, in one line on the page
    eng = _by_id(drv, "engine")
    eng.clear()
    eng.send_keys("emt")
    _by_id(drv, "submit").click()
    _wait(drv, lambda d: _by_id(d, "error").is_displayed(), 30, "the engine error")
    assert "does not cover element(s) Si" in _by_id(drv, "error").text
    eng.clear()
    eng.send_keys(LJ_SI)
    if _by_id(drv, "relax").is_selected():
        _by_id(drv, "relax").click()
    ml = _by_id(drv, "min-length")
    ml.clear()
    ml.send_keys("6")
    _by_id(drv, "submit").click()
    _wait(drv, lambda d: d.current_url.endswith("/jobs"), 30, "the job list")
    TIMINGS["jobs_page_load_ms"] = _page_load_ms(drv)
    row = "#jobs tbody tr[data-status='done'] a.result-link"
    _wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, row) or d.find_elements(
        By.CSS_SELECTOR, "#jobs tbody tr[data-status='failed']"), 240, "the job to finish")
    failed = drv.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-status='failed']")
    assert not failed, failed[0].text
    _wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, "#calcs tbody tr"), 10, "the store table")
    _shot(drv, "jobs")
    key = drv.find_element(By.CSS_SELECTOR, "#jobs tbody tr[data-status='done']").get_attribute("data-key")
    drv.find_element(By.CSS_SELECTOR, row).click()
    _wait(drv, lambda d: "/results/" in d.current_url, 30, "the result page")
    return key


def test_result_page_dispersion_and_download(server, browser, finished):
    import phonopy

    base, _ = server
    drv = browser
    drv.get(f"{base}/results/{finished}")
    _wait(drv, lambda d: _by_id(d, "status").get_attribute("data-state") == "done", 60, "the plots")
    TIMINGS["result_page_load_ms"] = _page_load_ms(drv)
    TIMINGS["result_plots_ms"] = float(_by_id(drv, "status").get_attribute("data-ms"))
    branches = drv.execute_script(
        "return document.getElementById('dispersion').data.filter(t => t.meta && t.meta.kind === 'branch').length")
    assert branches == BRANCHES_SI
    dos = drv.execute_script(
        "return document.getElementById('dispersion').data.filter(t => t.meta && t.meta.kind === 'dos').length")
    assert dos == 1
    # LJ diamond Si is unstable: the warning and the red points are there
    assert _by_id(drv, "instability").is_displayed() and "imaginary" in _by_id(drv, "instability").text
    assert drv.execute_script(
        "return document.getElementById('dispersion').data.some(t => t.meta && t.meta.kind === 'imaginary')")
    # a band's mode animated in the 3D view (what a click on the dispersion does)
    drv.execute_script("window.atomvibShowMode(20, 5)")
    _wait(drv, lambda d: _by_id(d, "mode-label").get_attribute("data-band") == "5", 30, "the mode")
    assert "branch 6" in _by_id(drv, "mode-label").text
    _shot(drv, "result")
    from selenium.webdriver.common.by import By

    link = drv.find_element(By.CSS_SELECTOR, "#downloads a[href$='phonopy.yaml']")
    link.click()
    target = drv.downloads / f"{finished}_phonopy.yaml"
    _wait(drv, lambda d: target.is_file() and target.stat().st_size > 0, 30, "the download")
    time.sleep(0.3)  # Chromium renames the .crdownload file into place
    ph = phonopy.load(str(target), produce_fc=True, log_level=0)
    assert len(ph.primitive) == 2 and ph.force_constants is not None
    assert not _js_errors(drv)


def test_spectra_page(server, browser, finished):
    base, _ = server
    drv = browser
    drv.get(f"{base}/results/{finished}/spectra")
    _wait(drv, lambda d: _by_id(d, "ins-status").get_attribute("data-state") == "done", 60, "the VISION spectrum")
    TIMINGS["spectra_page_load_ms"] = _page_load_ms(drv)
    first = drv.execute_script("return document.getElementById('ins').data[0].y.slice()")
    order = _by_id(drv, "order")
    order.clear()
    order.send_keys("1")
    drv.execute_script("document.getElementById('order').dispatchEvent(new Event('change', {bubbles: true}))")
    _wait(drv, lambda d: d.execute_script("return document.getElementById('ins').data.length") == 2, 60,
          "the spectrum with one order")  # total + 1-phonon
    again = drv.execute_script("return document.getElementById('ins').data[0].y")
    assert np.nanmax(np.array(first, float)) > 0 and len(again) == len(first)
    _shot(drv, "spectra")
    assert not _js_errors(drv)  # nothing refused by the Content-Security-Policy, no script error


def test_compare_page_fit(server, browser, finished, tmp_path):
    base, data = server
    drv = browser
    # a "measurement" made from the result's DOS stretched by 4 %: the fit finds the scale
    import urllib.request

    with urllib.request.urlopen(f"{base}/results/{finished}/files/dos.csv") as r:
        dos = np.loadtxt(r, delimiter=",", skiprows=1)
    x = np.linspace(0.3, 1.15 * dos[:, 0].max(), 300)
    y = np.interp(x / 1.04, dos[:, 0], dos[:, 1], left=0, right=0) * 3.0 + 0.02
    meas = tmp_path / "measured_dos.txt"
    meas.write_text("# frequency_THz intensity\n" + "\n".join(f"{a:.5f} {b:.6g}" for a, b in zip(x, y)))
    drv.get(f"{base}/results/{finished}/compare")
    TIMINGS["compare_page_load_ms"] = _page_load_ms(drv)
    _by_id(drv, "measured").send_keys(str(meas))
    _by_id(drv, "run-compare").click()
    _wait(drv, lambda d: _by_id(d, "compare-status").get_attribute("data-state") in ("done", "failed"), 60, "the fit")
    assert _by_id(drv, "compare-status").get_attribute("data-state") == "done", _by_id(drv, "error").text
    from selenium.webdriver.common.by import By

    cell = drv.find_element(By.CSS_SELECTOR, "#fit-table tr[data-param='frequency_scale'] td").text
    value = float(cell.split("±")[0])
    assert abs(value - 1.04) < 0.03, cell
    _shot(drv, "compare")
    assert not _js_errors(drv)


def test_broken_cif_shows_the_error(server, browser, tmp_path):
    base, _ = server
    drv = browser
    bad = tmp_path / "broken.cif"
    bad.write_text("data_broken\n_cell_length_a 4.0\n_cell_length_b\nloop_\n_atom_site_label\n")
    _upload(drv, base, bad)
    _wait(drv, lambda d: _by_id(d, "error").is_displayed(), 30, "the error")
    msg = _by_id(drv, "error").text
    from atomvib import read_structure
    from atomvib.errors import InputError

    with pytest.raises(InputError) as exc:
        read_structure(bad)
    assert msg == str(exc.value).replace(str(bad), "broken.cif")
    assert not _by_id(drv, "structure-card").is_displayed()
    _shot(drv, "error")


def test_job_list_polls_and_shows_progress(server, browser):
    """The job list asks for /api/jobs every 2 s without reloading the page and draws a running job's progress
    (displacements done / total, ETA) as a bar. The answers are stood in for in the page (a real job of this size
    ends before a poll could see it); test_web.py checks that the server's answers carry the store's progress."""
    base, _ = server
    drv = browser
    drv.get(f"{base}/jobs")
    drv.execute_script("""
      window.atomvibMarker = "same page";
      window.atomvibProgress = {done: 3, total: 12, unit: "calc", eta_s: 42, stage: "forces of 12 displaced cells"};
      const real = window.fetch;
      window.fetch = function (url, opts) {
        if (String(url) !== "/api/jobs") return real(url, opts);
        const job = {id: "f".repeat(32), name: "slow.cif", formula: "Al2", natoms: 2, engine: "emt",
                     created: Date.now() / 1000, status: "running", key: "0123456789abcdef", elapsed: 30,
                     error: "", progress: window.atomvibProgress};
        return Promise.resolve(new Response(JSON.stringify({jobs: [job]}),
                                            {headers: {"content-type": "application/json"}}));
      };""")
    # read in one script: the table is drawn again on every poll (an element found before may be gone after)
    read = """const c = document.querySelector("#jobs tbody tr[data-status='running'] td.progress-cell");
              return c && {done: c.dataset.done, total: c.dataset.total, text: c.textContent,
                           value: c.querySelector("progress").value};"""
    _wait(drv, lambda d: d.execute_script(read), 10, "the progress bar")
    cell = drv.execute_script(read)
    assert cell["done"] == "3" and cell["total"] == "12" and cell["value"] == 3
    assert "3 / 12 displacements" in cell["text"] and "ETA 42 s" in cell["text"]
    drv.execute_script("window.atomvibProgress = {done: 9, total: 12, unit: 'calc', eta_s: 75, stage: 'forces'}")
    _wait(drv, lambda d: (d.execute_script(read) or {}).get("done") == "9", 10, "the next poll")
    assert "ETA 1 min 15 s" in drv.execute_script(read)["text"]
    assert drv.execute_script("return window.atomvibMarker") == "same page"  # updated in place, not reloaded
    assert not _js_errors(drv)


def test_molecule_modes_ir_and_raman(server, browser, tmp_path):
    """Water through the pages: the default engine for a molecule (xtb), the normal modes table, a mode animated,
    IR broadened again on a parameter change, Raman computed on the app's workers when asked."""
    from selenium.webdriver.common.by import By

    from atomvib.engines import list_engines

    if not any(e["name"] == "xtb" and e["usable"] for e in list_engines()):
        pytest.skip("no molecule engine with dipoles here (xtb needs tblite)")
    base, _ = server
    drv = browser
    water = tmp_path / "water.xyz"
    water.write_text("3\nwater\nO 0 0 0.119\nH 0 0.763 -0.477\nH 0 -0.763 -0.477\n")
    _upload(drv, base, water)
    _wait(drv, lambda d: _by_id(d, "s-formula").text == "H2O", 60, "the structure facts")
    assert _by_id(drv, "s-kind").text == "molecule"
    eng = _by_id(drv, "engine")
    eng.clear()
    eng.send_keys("xtb")
    _by_id(drv, "submit").click()
    _wait(drv, lambda d: d.current_url.endswith("/jobs"), 30, "the job list")
    row = "//table[@id='jobs']/tbody/tr[td[2]='water.xyz'][@data-status='{}']"
    _wait(drv, lambda d: d.find_elements(By.XPATH, row.format("done")) or d.find_elements(
        By.XPATH, row.format("failed")), 120, "the water job")
    assert not drv.find_elements(By.XPATH, row.format("failed"))
    key = drv.find_element(By.XPATH, row.format("done")).get_attribute("data-key")
    drv.get(f"{base}/results/{key}")
    _wait(drv, lambda d: _by_id(d, "status").get_attribute("data-state") == "done", 60, "the modes")
    rows = drv.find_elements(By.CSS_SELECTOR, "#modes-table tbody tr")
    assert len(rows) == 3 and float(rows[0].find_elements(By.TAG_NAME, "td")[2].text) > 50  # the bend: strong IR
    rows[1].find_element(By.TAG_NAME, "button").click()
    _wait(drv, lambda d: _by_id(d, "mode-label").get_attribute("data-mode") == "1", 30, "the animated mode")
    assert "mode 2" in _by_id(drv, "mode-label").text
    _shot(drv, "molecule")
    drv.get(f"{base}/results/{key}/spectra")
    _wait(drv, lambda d: _by_id(d, "ir-status").get_attribute("data-state") == "done", 60, "the IR spectrum")
    _wait(drv, lambda d: _by_id(d, "raman-status").get_attribute("data-state") in ("none", "done"), 30, "Raman state")
    first = drv.execute_script("return document.getElementById('ir').data[0].y.slice()")
    fwhm = _by_id(drv, "fwhm")
    fwhm.clear()
    fwhm.send_keys("40")
    drv.execute_script("document.getElementById('fwhm').dispatchEvent(new Event('change', {bubbles: true}))")
    _wait(drv, lambda d: max(d.execute_script("return document.getElementById('ir').data[0].y")) < 0.5 * max(first),
          30, "the IR spectrum broadened again")
    if _by_id(drv, "raman-status").get_attribute("data-state") == "none":
        _by_id(drv, "raman-start").click()
    _wait(drv, lambda d: _by_id(d, "raman-status").get_attribute("data-state") in ("done", "failed"), 120, "Raman")
    assert _by_id(drv, "raman-status").get_attribute("data-state") == "done", _by_id(drv, "raman-status").text
    assert "3643" in _by_id(drv, "raman-status").text  # strongest Raman band: the symmetric stretch
    assert drv.execute_script("return document.getElementById('raman').data.length") == 2  # curve + sticks
    _shot(drv, "ir_raman")
    assert not _js_errors(drv)


def test_zz_write_timings():
    if SHOTS and TIMINGS:
        (Path(SHOTS) / "web_timings.json").write_text(json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}, indent=2))
