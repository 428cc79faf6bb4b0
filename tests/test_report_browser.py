"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium opens a report rendered from a small
synthetic set of records and checks what a person would see:

- the page logs no console error and opens no dialog, although variant names,
  details, case text, the command and the environment hold markup and script
  (every such string must reach the page as text, never as HTML);
- those strings are shown verbatim as visible text;
- the findings list each bug, a known one marked, and a script opens as text;
- typing into the failures filter shows exactly the matching rows, header kept;
- clicking a column header sorts the rows, numerically where the cells are
  numbers (``-inf``, ``1.23e+03``), ascending then descending;
- the page fetches nothing from the network (it must be self-contained).

Without selenium, chromium or chromedriver the tests are skipped with the reason,
except under CI (``CI=true``), where they fail: CI must run them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from harness.records import Record

pytestmark = pytest.mark.xdist_group("browser")  # one browser for the whole module under xdist

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 10

XSS_SCRIPT = '<script>console.error("xss")</script>'
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_ATTR = '" onmouseover="alert(2)" data-x=\''
AMP = "Q&A <b>bold</b> &amp; 'single' \"double\""

V_PLAIN = "sdpa_math"
V_SCRIPT = "flash" + XSS_SCRIPT
V_IMG = "kern" + XSS_IMG
V_AMP = "a&b \"quoted\" 'single'"
V_DOC = "per_document_sdpa"
DOC_CASE = "docs3_0_4-t2-m5-h2x1-d8v8-f32-s0"
DOC_PARAMS = {"documents": [3, 0, 4], "slack": 2, "boundaries": [5]}  # 9 tokens, a cut at 5
HOSTILE = (XSS_SCRIPT, XSS_IMG, XSS_ATTR, AMP, V_SCRIPT, V_IMG, V_AMP)


def _record(variant, check, target, status, *, family="attention", case_id="b1-h2x2-q4-k4-d8v8-f32-s0",
            error=math.nan, threshold=math.nan, detail="", case="", known_failure="", case_params=None) -> Record:
    margin = 1 - error / threshold if not (math.isnan(error) or math.isnan(threshold)) else math.nan
    return Record(case_id=case_id, family=family, variant=variant, check=check, target=target, status=status,
                  dtype="float32", error=error, threshold=threshold, rel_rms=error / 10, rel_rms_threshold=threshold,
                  margin=margin, worst_index="(0, 1, 2, 3)" if status == "fail" else "", detail=detail,
                  seconds=0.01, case=case or f"attention {case_id}", case_params=case_params or {"seed": 0, "note": XSS_IMG},
                  reproduce=f"attn-oracle run --family {family} --variants '{variant}' --case {case_id}",
                  known_failure=known_failure)


# The failures (status fail or error), with the margin each shows: the report
# writes numbers as '%.3g', so -12.0 -> '-12', an infinite error -> 'inf', '-inf'.
FAILURES = [
    # variant, check, target, status, error, threshold, detail, case text, known failure
    (V_PLAIN, "OUT", "out", "fail", 0.5, 1.0, "max-abs above threshold", "", ""),            # margin 0.5
    (V_PLAIN, "GRAD", "dq", "fail", 13.0, 1.0, "dq drifts " + AMP, "", ""),                  # margin -12
    (V_SCRIPT, "OUT", "out", "fail", 1234.5, 1.0, "scores leak " + XSS_SCRIPT, "", ""),      # margin -1.23e+03
    (V_SCRIPT, "GRAD", "dk", "fail", 4.0, 1.0, "dk off", "causal " + XSS_IMG, ""),           # margin -3
    (V_IMG, "FIN", "out", "fail", math.inf, 1.0, "NaN/Inf in output", "", ""),               # margin -inf
    (V_IMG, "OUT", "out", "error", math.nan, math.nan, "RuntimeError: " + XSS_IMG + XSS_ATTR, "", ""),  # nan
    (V_AMP, "ZERO", "dq", "fail", 0.002, 0.001, "nonzero " + AMP, "", "declared: " + AMP),  # margin -1
    (V_DOC, "INV", "other_document", "fail", 3.0, 1.0, "leak across documents", "documents [3, 0, 4]", ""),  # -2
]


def synthetic_frame() -> pd.DataFrame:
    documents = dict(family="documents", case_id=DOC_CASE, case_params=DOC_PARAMS)
    rows = [_record(v, c, t, s, error=e, threshold=th, detail=d, case=case, known_failure=k,
                    **(documents if v == V_DOC else {}))
            for v, c, t, s, e, th, d, case, k in FAILURES]
    rows += [
        _record(V_PLAIN, "OUT", "out", "pass", error=0.1, threshold=1.0, case_id="b2-h4x2-q7-k19-d16v16-f16-br-causal-s1"),
        _record(V_PLAIN, "FIN", "out", "pass", error=0.0, threshold=1.0),
        _record(V_SCRIPT, "FIN", "out", "pass", error=0.0, threshold=1.0),
        _record(V_SCRIPT, "ZERO", "dq", "unsupported", detail="no fully-masked rows " + XSS_SCRIPT),
        _record(V_IMG, "GRAD", "dq", "unsupported", detail="forward only " + XSS_IMG + XSS_ATTR),
        _record(V_AMP, "OUT", "out", "pass", error=0.2, threshold=1.0),
        _record("chunked", "STATE", "state", "pass", family="gated_delta", case_id="gd-t9-h2-d8-f32-s0",
                error=0.0, threshold=1.0),
        _record("chunked", "PACK", "out", "unsupported", family="documents", case_id="docs3_6-m5-h4x2-d16v16-f32-s2",
                detail="no varlen " + AMP),
    ]
    return pd.DataFrame([asdict(r) for r in rows], columns=list(Record.__dataclass_fields__))


def _margin_text(error: float, threshold: float) -> str:
    margin = 1 - error / threshold if not (math.isnan(error) or math.isnan(threshold)) else math.nan
    return "%.3g" % margin


def _margin_order(failures) -> list:
    """Ascending by the margin the page shows: numbers first (-inf lowest), then 'nan'."""
    def key(f):
        margin = float(_margin_text(f[4], f[5]))
        return math.isnan(margin), 0.0 if math.isnan(margin) else margin
    return sorted(failures, key=key)


def _browser_or_skip() -> None:
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[browser]')")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            missing.append(f"{path} (apt-get install {package})")
    if missing:
        reason = "the report's browser test needs " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-extensions", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    options.set_capability("unhandledPromptBehavior", "ignore")  # a dialog stays open for the test to find
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER), log_output=str(log)),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


REGRESSION = {"family": "documents", "case_id": DOC_CASE, "variant": "leaky" + XSS_SCRIPT, "found": "2026-11-23",
              "shrunk": True, "reproduce": "@reproduce_failure('6.170.15', b'AXicY2BgAAAABAAB')",
              "file": "regressions/documents.jsonl"}
LIMITATIONS = [
    {"family": "attention", "variant": V_SCRIPT, "applies": "features: softcap", "reason": "no soft-cap " + XSS_SCRIPT},
    {"family": "attention", "variant": V_IMG, "applies": "checks: backward", "reason": "forward only " + XSS_IMG},
    {"family": "documents", "variant": "chunked", "applies": "everywhere here", "reason": "needs " + AMP},
]


SCRIPT_TEXT = "# attn-oracle finding: " + V_SCRIPT + "\nprint('" + XSS_IMG + "')\n"
FINDING = dict(family="documents", check="INV", target="other_document", kind="mismatch", checks=["INV:other_document"],
               status="fail",
               known_records=0, records=1, cases=1, case_id=DOC_CASE, case_params=DOC_PARAMS, size=9, dtype="float32",
               error=3.0, threshold=1.0, margin=-2.0, worst_index="(0, 1)", reproduce="attn-oracle run --family documents")
FINDINGS = {"findings": [
    dict(FINDING, variant=V_SCRIPT, origin="user file /x/" + XSS_ATTR, known="", known_versions="", case="docs " + AMP,
         detail="leak " + XSS_IMG, script="findings/flash.py", no_script="", script_text=SCRIPT_TEXT),
    dict(FINDING, variant=V_DOC, origin="built-in", known="declared: " + AMP, known_versions="torch>=2.0", known_records=1,
         case="docs", detail="", script="", no_script="no repro snippet " + XSS_SCRIPT, script_text=""),
], "left_out": {"mutant records": 2, "unregistered variants": [], "adapter errors": []}}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from harness import report as report_module

    # The registry's own limitations depend on the extras installed: the page gets a
    # fixed table with hostile strings instead.
    context = {"environment": {"torch": "2.13.0", "device": "cpu " + XSS_SCRIPT, "note": AMP},
               "command": "attn-oracle run --variants '" + V_IMG + "'",
               "hypothesis": {"profile": "ci (max_examples=15)", "seed": "3 (given)"},
               "limitations": LIMITATIONS, "regressions": [REGRESSION]}
    html = report_module.render_html(synthetic_frame(), context, findings=FINDINGS)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.fixture()
def page(browser, report):
    """The report freshly loaded, with the logs of earlier tests drained."""
    from selenium.common.exceptions import UnexpectedAlertPresentException

    browser.get_log("browser")
    browser.get_log("performance")
    try:
        browser.get(report.as_uri())
        _wait(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    except UnexpectedAlertPresentException as exc:
        browser.switch_to.alert.dismiss()
        pytest.fail(f"the page opened a dialog ({exc.alert_text!r}): a hostile string ran as script")
    return browser


def _wait(driver, condition, message=""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def _assert_no_dialog(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert
        text = alert.text
    except NoAlertPresentException:
        return
    alert.dismiss()
    pytest.fail(f"the page opened a dialog ({text!r}): a hostile string ran as script")


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


_ROWS_JS = """
var table = document.getElementById(arguments[0]);
var heads = Array.from(table.tHead.rows[0].cells).map(function (c) { return c.textContent.trim(); });
var col = function (name) { return heads.indexOf(name); };
return {
  header_visible: table.tHead.rows[0].getClientRects().length > 0,
  rows: Array.from(table.tBodies[0].rows).map(function (r) {
    return {variant: r.cells[col("variant")].textContent,
            check: r.cells[col("check")].textContent.match(/^\\s*(\\S+ \\(\\w+\\))/)[1],
            margin: col("margin") >= 0 ? r.cells[col("margin")].textContent.trim() : null,
            error: col("error") >= 0 ? r.cells[col("error")].textContent.trim() : null,
            visible: r.getClientRects().length > 0};
  })
};
"""


def _rows(driver, table="failures") -> dict:
    return driver.execute_script(_ROWS_JS, table)


def _key(variant, check, target, status) -> tuple:
    return variant, f"{check}:{target} ({status})"


def _visible(driver) -> list[tuple]:
    return [(r["variant"], r["check"]) for r in _rows(driver)["rows"] if r["visible"]]


def _in_order(driver) -> list[tuple]:
    return [(r["variant"], r["check"]) for r in _rows(driver)["rows"]]


def _header(driver, table: str, name: str):
    from selenium.webdriver.common.by import By

    for th in driver.find_elements(By.CSS_SELECTOR, f"#{table} thead th"):
        if th.text.strip() == name:
            return th
    raise AssertionError(f"no column {name!r} in #{table}")


def test_page_loads_clean_and_hostile_strings_stay_text(page):
    from selenium.webdriver.common.by import By

    _assert_no_dialog(page)
    text = page.find_element(By.TAG_NAME, "body").text
    for hostile in HOSTILE:
        assert hostile in text, f"{hostile!r} is not shown verbatim as text"
    matrix = page.find_element(By.ID, "matrix").text
    for variant in (V_SCRIPT, V_IMG, V_AMP):
        assert variant in matrix
    injected = page.execute_script("""
        var found = [];
        document.querySelectorAll("*").forEach(function (el) {
          Array.from(el.attributes).forEach(function (a) {
            if (/^on/i.test(a.name)) found.push(el.tagName + " " + a.name + "=" + a.value);
          });
        });
        document.querySelectorAll("script").forEach(function (s) {
          var data = s.type === "application/json";  // inert data: it must hold no markup at all
          if (data ? /[<>]/.test(s.textContent) : s.textContent.indexOf("xss") >= 0) found.push("script: " + s.textContent);
        });
        document.querySelectorAll("img").forEach(function (i) {
          if (i.getAttribute("src") === "x") found.push("img src=x");
        });
        return found;""")
    assert injected == [], f"hostile strings became markup: {injected}"
    severe = _severe(page)
    assert severe == [], f"console errors: {severe}"


def test_page_fetches_nothing_from_the_network(page):
    external = page.execute_script("""
        var found = [];
        document.querySelectorAll("[src], [href], [srcset], [action], [poster], [data]").forEach(function (el) {
          ["src", "href", "srcset", "action", "poster", "data"].forEach(function (name) {
            var v = el.getAttribute(name);
            if (v && /^\\s*(https?:|wss?:|ftp:|\\/\\/)/i.test(v)) found.push(el.tagName + " " + name + "=" + v);
          });
        });
        Array.from(document.styleSheets).forEach(function (sheet) {
          Array.from(sheet.cssRules).forEach(function (rule) {
            if (/@import|url\\(\\s*['"]?\\s*(https?:|\\/\\/)/i.test(rule.cssText)) found.push("css " + rule.cssText);
          });
        });
        performance.getEntriesByType("resource").forEach(function (e) {
          if (!/^data:/.test(e.name)) found.push("fetched " + e.name);
        });
        return found;""")
    assert external == [], f"the report loads resources: {external}"
    # Every request made for the report's document (the browser's own pages, such as
    # a new-tab page still loading at start-up, are not the report's).
    report_url = page.current_url
    requested = []
    for entry in page.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent" and message["params"].get("documentURL") == report_url:
            requested.append(message["params"]["request"]["url"])
    assert report_url in requested, f"the performance log did not record the report's own load: {requested}"
    remote = [url for url in requested if url != report_url and not url.startswith("data:")]
    assert remote == [], f"the page requested {remote}"
    assert _severe(page) == []


def test_filter_changes_the_visible_rows(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    everything = _visible(page)
    expected_all = sorted(_key(v, c, t, s) for v, c, t, s, *_ in FAILURES)
    assert sorted(everything) == expected_all
    field = page.find_element(By.ID, "filter")

    # The variant whose name holds <img ...>, and the rows whose case text or detail
    # hold it (matched as text, case-insensitively).
    field.send_keys("ONERROR=alert(1)")
    expected = [_key(V_SCRIPT, "GRAD", "dk", "fail"), _key(V_IMG, "FIN", "out", "fail"),
                _key(V_IMG, "OUT", "out", "error")]
    _wait(page, lambda d: sorted(_visible(d)) == sorted(expected), f"filter 'onerror': {_visible(page)}")
    assert _rows(page)["header_visible"]

    # Markup typed in matches the text shown, not the page's HTML source.
    field.clear()
    field.send_keys("<b>bold</b> &amp;")
    expected = [_key(V_PLAIN, "GRAD", "dq", "fail"), _key(V_AMP, "ZERO", "dq", "fail")]
    _wait(page, lambda d: sorted(_visible(d)) == sorted(expected), f"filter '<b>bold</b>': {_visible(page)}")

    field.clear()
    field.send_keys("GRAD:")
    expected = [_key(V_PLAIN, "GRAD", "dq", "fail"), _key(V_SCRIPT, "GRAD", "dk", "fail")]
    _wait(page, lambda d: sorted(_visible(d)) == sorted(expected), f"filter 'GRAD:': {_visible(page)}")

    field.send_keys("no row has this")
    _wait(page, lambda d: _visible(d) == [], f"filter matching nothing: {_visible(page)}")
    assert _rows(page)["header_visible"]

    # Clearing by keyboard (an input event) shows every row again.
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)
    _wait(page, lambda d: sorted(_visible(d)) == expected_all, "an empty filter shows every row")
    _assert_no_dialog(page)
    assert _severe(page) == []


def test_sorting_a_column_orders_rows_numerically(page):
    by_margin = _margin_order(FAILURES)
    ascending = [_key(v, c, t, s) for v, c, t, s, *_ in by_margin]
    shown = [r["margin"] for r in _rows(page)["rows"]]
    assert len(set(shown)) == len(shown) == len(FAILURES)  # no ties, so both directions are exact
    before = _in_order(page)
    assert before != ascending

    margin = _header(page, "failures", "margin")
    margin.click()
    _wait(page, lambda d: _in_order(d) == ascending, f"margin ascending: {_in_order(page)}")
    assert [r["margin"] for r in _rows(page)["rows"]] == ["-inf", "-1.23e+03", "-12", "-3", "-2", "-1", "0.5", "nan"]

    margin.click()
    # Descending: the numbers from the largest, text ('nan') before them.
    descending = list(reversed(ascending))
    _wait(page, lambda d: _in_order(d) == descending, f"margin descending: {_in_order(page)}")

    # Another numeric column: '1.23e+03' comes after '4' and '13', unlike in text order.
    _header(page, "failures", "error").click()
    _wait(page, lambda d: [r["error"] for r in _rows(d)["rows"]] == ["0.002", "0.5", "3", "4", "13", "1.23e+03", "inf", "nan"],
          f"error ascending: {[r['error'] for r in _rows(page)['rows']]}")

    # A text column sorts as text; rows of one variant keep their order (a stable sort).
    by_error = _in_order(page)
    _header(page, "failures", "variant").click()
    by_variant = sorted(by_error, key=lambda row: row[0][0])  # the variants start with a, f, k, p, s
    _wait(page, lambda d: _in_order(d) == by_variant, f"variant ascending: {_in_order(page)}")
    _assert_no_dialog(page)
    assert _severe(page) == []


def test_sort_and_filter_together(page):
    from selenium.webdriver.common.by import By

    _header(page, "failures", "margin").click()
    page.find_element(By.ID, "filter").send_keys("fail)")
    expected = [_key(v, c, t, s) for v, c, t, s, *_ in _margin_order(FAILURES) if s == "fail"]
    _wait(page, lambda d: _visible(d) == expected, f"sorted and filtered: {_visible(page)}")
    assert _severe(page) == []


def test_a_matrix_cell_opens_its_cases_as_text(page):
    from selenium.webdriver.common.by import By

    cases = page.find_element(By.ID, "cases")
    assert not cases.is_displayed()
    cell = page.find_element(By.CSS_SELECTOR, f'a.cell[data-cell="attention/{V_PLAIN}/OUT"]')
    cell.click()
    _wait(page, lambda d: cases.is_displayed(), "the cases section opens")
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in page.find_elements(By.CSS_SELECTOR, "#cell-cases tbody tr")]
    assert sorted((r[0], r[2]) for r in rows) == [("b1-h2x2-q4-k4-d8v8-f32-s0", "fail"),
                                                 ("b2-h4x2-q7-k19-d16v16-f16-br-causal-s1", "pass")]
    # Another cell replaces them; a detail holding a script tag is shown as text.
    page.execute_script("arguments[0].click()", page.find_element(
        By.CSS_SELECTOR, 'a.cell[data-cell="attention/' + V_SCRIPT.replace('"', '\\"') + '/OUT"]'))
    _wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cell-cases tbody tr")) == 1, "one case")
    detail = page.find_element(By.CSS_SELECTOR, "#cell-cases tbody tr td:last-child").text
    assert detail == "scores leak " + XSS_SCRIPT
    assert V_SCRIPT in page.find_element(By.ID, "cases-title").text
    _assert_no_dialog(page)
    assert _severe(page) == []


def test_a_documents_failure_shows_its_layout_drawn_and_its_pinned_regression(page):
    from selenium.webdriver.common.by import By

    row = next(tr for tr in page.find_elements(By.CSS_SELECTOR, "#failures tbody tr") if V_DOC in tr.text)
    svg = row.find_element(By.CSS_SELECTOR, "svg.layout")
    titles = [t.get_attribute("textContent") for t in svg.find_elements(By.TAG_NAME, "title")]
    assert titles == ["document 0: tokens 0..2", "document 2: tokens 3..6", "slack: tokens 7..8",
                      "micro-sequence starts at 5", "the micro-sequence under test: tokens 5..8"]
    assert svg.size["width"] > 0 and svg.size["height"] > 0
    assert "pinned by attn-oracle fuzz on 2026-11-23 (shrunk, found with leaky" + XSS_SCRIPT in row.text
    assert "@reproduce_failure('6.170.15', b'AXicY2BgAAAABAAB')" in row.text
    assert _severe(page) == []


def test_the_margins_table_filters_and_shows_the_run_context(page):
    from selenium.webdriver.common.by import By

    def shown():
        return [tr.find_elements(By.TAG_NAME, "td")[2].text
                for tr in page.find_elements(By.CSS_SELECTOR, "#margins tbody tr") if tr.is_displayed()]

    assert sorted(shown()) == sorted([V_PLAIN, V_PLAIN, V_SCRIPT, V_AMP, "chunked"])
    page.find_element(By.ID, "filter-margins").send_keys("STATE")
    _wait(page, lambda d: shown() == ["chunked"], f"margins filtered: {shown()}")
    text = page.find_element(By.ID, "environment").find_element(By.XPATH, "following-sibling::table").text
    assert "hypothesis profile ci (max_examples=15)" in text and "hypothesis seed 3 (given)" in text
    assert _severe(page) == []


def test_findings_list_each_bug_and_open_its_script_as_text(page):
    from selenium.webdriver.common.by import By

    rows = page.find_elements(By.CSS_SELECTOR, "#findings tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text.splitlines()[0] for r in rows] == [V_SCRIPT, V_DOC]
    assert "known failure (torch>=2.0): declared: " + AMP in rows[1].text and "known" in rows[1].get_attribute("class")
    assert "no repro script: no repro snippet " + XSS_SCRIPT in rows[1].text
    link = rows[0].find_element(By.CSS_SELECTOR, "a")
    assert link.get_attribute("href").endswith("/findings/flash.py") and link.text == "findings/flash.py"
    script = rows[0].find_element(By.TAG_NAME, "pre")
    assert not script.is_displayed()
    rows[0].find_element(By.TAG_NAME, "summary").click()
    _wait(page, lambda d: script.is_displayed(), "the script opens")
    assert script.text == SCRIPT_TEXT.strip()  # shown verbatim, markup as text
    assert rows[0].find_element(By.CSS_SELECTOR, "svg.layout").size["width"] > 0
    _assert_no_dialog(page)
    assert _severe(page) == []
