"""The page of ``python -m nbmlp explain --html`` in a real headless browser.

Chromium from Debian (``apt-get install chromium chromium-driver``, which ``.ci/run`` does),
driven by selenium through the system chromedriver, so nothing is downloaded.  The test
loads the file, clicks a weight line, a table cell and a bias, reads the numbers the page
shows back, and compares them with gradients computed here in NumPy.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from nbmlp import explain
from nbmlp.network import MLP

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                                else None)
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Chromium and chromedriver are not installed "
                                "(apt-get install chromium chromium-driver)")

N, SEED = 3, 0


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="nbmlp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "explain.html"
    assert explain.main(["explain", "--html", str(path), "--n", str(N), "--seed", str(SEED)]) == 0
    return path


def numpy_gradients():
    """The note's gradients, written out in NumPy here."""
    X, T, _ = explain.make_batch(N, SEED)
    net = MLP(explain.SIZES, seed=SEED)
    s = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    h = [s(X)]
    for W, b in zip(net.W, net.b, strict=True):
        h.append(s(h[-1] @ W + b))
    dz2 = (h[2] - T) * h[2] * (1 - h[2])
    dz1 = (dz2 @ net.W[1].T) * h[1] * (1 - h[1])
    return {"h": h, "dz": [None, dz1, dz2], "W": [h[0].T @ dz1, h[1].T @ dz2], "b": [dz1.sum(0), dz2.sum(0)]}


def read_panel(driver):
    from selenium.webdriver.common.by import By

    value = lambda css: [float(e.get_attribute("data-value")) for e in driver.find_elements(By.CSS_SELECTOR, css)]  # noqa: E731
    return {
        "param": driver.find_element(By.ID, "panel").get_attribute("data-param"),
        "a": value("#terms td.factor-a"), "b": value("#terms td.factor-b"), "terms": value("#terms td.term-value"),
        "sum": value("#sum")[0], "loop": value("#loop")[0], "matrix": value("#matrix")[0], "fd": value("#fd")[0],
        "verdict": driver.find_element(By.ID, "verdict").text,
        "formula": driver.find_element(By.ID, "formula").text,
        "printed": driver.find_element(By.ID, "printed").text,
        "shown_terms": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#terms td.term-value")],
    }


@pytest.mark.parametrize("element, name", [
    ("hit-W2-1-1", "W2[1,1]"),   # a line of the network drawing
    ("cell-W1-2-4", "W1[2,4]"),  # a cell of the weight table
    ("bias-b2-3", "b2[3]"),      # a bias box
    ("cell-b1-5", "b1[5]"),
])
def test_click_shows_the_sum_term_by_term(browser, page, element, name):
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    browser.find_element(By.ID, element).click()
    shown = read_panel(browser)
    assert shown["param"] == name
    p = explain.parse_param(name)
    ref = numpy_gradients()
    dz = ref["dz"][p.layer][:, p.k - 1]
    np.testing.assert_allclose(shown["a"], dz, rtol=1e-12, atol=1e-15)
    if p.kind == "W":
        h_prev = ref["h"][p.layer - 1][:, p.j - 1]
        np.testing.assert_allclose(shown["b"], h_prev, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(shown["terms"], dz * h_prev, rtol=1e-12, atol=1e-15)
        want = ref["W"][p.layer - 1][p.j - 1, p.k - 1]
    else:
        assert shown["b"] == []
        np.testing.assert_allclose(shown["terms"], dz, rtol=1e-12, atol=1e-15)
        want = ref["b"][p.layer - 1][p.k - 1]
    for key in ("sum", "loop", "matrix"):
        assert shown[key] == pytest.approx(want, abs=1e-12), key
    assert shown["fd"] == pytest.approx(want, abs=1e-7)
    assert shown["verdict"] == "all agree"
    # the visible text is the number to 10 decimals, as explain prints it
    assert shown["shown_terms"] == [f"{t:+.10f}" for t in shown["terms"]]
    assert shown["printed"].startswith(f"── ∂L/∂{p.symbol}") and "all agree" in shown["printed"]
    assert shown["formula"] in shown["printed"]  # the same formula line explain prints
    for t in shown["shown_terms"]:
        assert t in shown["printed"]


def test_the_units_show_the_chosen_samples_values(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    ref = numpy_gradients()
    for i in (1, N):
        Select(browser.find_element(By.ID, "sample")).select_by_value(str(i))
        for layer, size in enumerate(explain.SIZES):
            shown = [float(browser.find_element(By.ID, f"unit-{layer}-{u}").text) for u in range(1, size + 1)]
            np.testing.assert_allclose(shown, ref["h"][layer][i - 1], atol=5.1e-4)


def test_nothing_is_fetched(browser, page):
    browser.get(page.as_uri())
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_the_chinese_page(browser, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "explain.zh.html"
    assert explain.main(["explain", "--html", str(path), "--lang", "zh", "--n", str(N), "--seed", str(SEED)]) == 0
    browser.get(path.as_uri())
    browser.find_element(By.ID, "cell-W2-5-3").click()
    shown = read_panel(browser)
    assert shown["param"] == "W2[5,3]" and shown["verdict"] == "全部一致"
    assert shown["loop"] == pytest.approx(numpy_gradients()["W"][1][4, 2], abs=1e-12)
    assert "循环实现" in shown["printed"] and "各项之和" in shown["printed"]
    assert "点击" in browser.find_element(By.TAG_NAME, "body").text
