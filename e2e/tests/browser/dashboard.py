#!/usr/bin/env python3
"""The web dashboard in a real browser: Debian's chromium, headless, driven by
Selenium through chromedriver (e2e/tests/dashboard.rs starts the servers and runs this).

  dashboard.py walk URL PASSWORD_FILE OUT_DIR MARKER
      no token -> the login page; log in with Oakestra's login; the map shows the
      cluster; apply a Service -> its Instances become Running without a reload; its
      log shows what it printed; scale to 3 -> 3 shown; a bad manifest shows the
      field's error at its line; delete after a confirmation. Screenshots in OUT_DIR.
  dashboard.py perf URL TOKEN OUT_DIR
      against a root without controllers: 1,000 Services and 10,000 Instances, then
      the services page's first screen and the time from an API write to its row.

Prints one JSON object (what was seen, and the figures) on the last line of stdout.
"""

import base64
import concurrent.futures
import http.client
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
import urllib.parse

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium look for a driver online

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("OAKESTRA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OAKESTRA_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser(profile, width=1280, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The browser on the dashboard at `base`, with screenshots into `out`."""

    def __init__(self, driver, base, out):
        self.d = driver
        self.base = base.rstrip("/")
        self.out = out
        self.shots = []

    def open(self, hash_=""):
        self.d.get(f"{self.base}/ui/{hash_}")

    def go(self, hash_):
        self.d.execute_script("location.hash = arguments[0]", hash_)

    def wait(self, what, check, timeout=60):
        try:
            return WebDriverWait(
                self.d, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
            ).until(lambda d: check())
        except TimeoutException:
            self.shot(f"failed-{len(self.shots)}")
            body = self.d.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"timed out waiting for {what}; the page says:\n{body[:3000]}")

    def click(self, selector):
        """Click the first element `selector` finds (found again if the view drew it
        anew meanwhile)."""
        for _ in range(50):
            try:
                self.d.find_element(By.CSS_SELECTOR, selector).click()
                return
            except StaleElementReferenceException:
                time.sleep(0.05)
        raise AssertionError(f"{selector} kept being drawn anew")

    def css(self, selector):
        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector):
        """The text of the first element `selector` finds, as it reads (one call, so a
        view drawn again meanwhile is no stale element)."""
        return self.d.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
            selector,
        )

    def title(self):
        return self.text("main h1")

    def shot(self, name, max_height=2000):
        """A screenshot of the whole page (up to `max_height` CSS pixels), as a
        reader scrolls through it."""
        path = os.path.join(self.out, f"{name}.png")
        size = self.d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        # The capture lays the page out without a scroll bar: the window's full width.
        width = self.d.execute_script("return window.innerWidth")
        shot = self.d.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], max_height), "scale": 1},
            },
        )
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        self.shots.append(path)
        return path

    def rows(self, caption_start):
        """The rows of the table whose caption starts with `caption_start`, as lists of
        cell texts (the empty-table row left out)."""
        return self.d.execute_script(
            """
            const start = arguments[0];
            const t = [...document.querySelectorAll('main table')].find(
              (t) => t.caption && t.caption.textContent.startsWith(start));
            if (!t) return null;
            return [...t.tBodies[0].rows].filter((r) => !r.classList.contains('empty'))
              .map((r) => [...r.cells].map((c) => c.textContent));
            """,
            caption_start,
        )

    def errors(self):
        """What the browser's console said that is an error: failed scripts, CSP
        violations (a 401 the test asked for is expected)."""
        out = []
        for entry in self.d.get_log("browser"):
            message = entry.get("message", "")
            if entry.get("level") != "SEVERE":
                continue
            # A refusal the test asked for (401, 404, 409, 422) is the API's answer,
            # not a fault of the page; scripts that fail and CSP violations are.
            if "Failed to load resource: the server responded with a status of 4" in message:
                continue
            out.append(message)
        return out


def column(rows, index):
    return [r[index] for r in rows]


def walk(base, password_file, out, marker):
    password = open(password_file).read().strip()
    seen = {}
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        page = Page(driver, base, out)
        try:
            walk_steps(page, password, marker, seen)
        except Exception as e:
            seen["failed"] = str(e)
        finally:
            seen["console_errors"] = page.errors()
            seen["screenshots"] = [os.path.basename(p) for p in page.shots]
            driver.quit()
    return seen


def walk_steps(page, password, marker, seen):
    d = page.d
    # No token: the login page, and the API itself refuses the page's request.
    page.open()
    page.wait("the login form", lambda: page.css("#login-password-form"))
    seen["login_title"] = page.title()
    # Signed out, nothing of the signed-in page shows (no views, no "Log out").
    seen["chrome_at_login"] = d.execute_script(
        "return [...document.querySelectorAll('#nav, #logout, #who')].filter((e) => e.offsetParent !== null).length"
    )
    seen["anonymous_api"] = d.execute_async_script(
        "const done = arguments[0];"
        "fetch('/apis/oakestra.io/v1/services').then((r) => done(r.status), () => done(0));"
    )
    page.shot("login")

    # A wrong token is refused at the login, and nothing is kept.
    token = page.css("#login-token")[0]
    token.send_keys("abc.wrong")
    token.send_keys(Keys.ENTER)
    page.wait("the refusal of a wrong token", lambda: "refused" in page.text("[role=alert]"))
    seen["wrong_token"] = page.text("[role=alert]")

    # Log in with Oakestra's login (user admin and the root's password).
    # (With the keyboard: the password and Enter.)
    page.css("#login-password")[0].send_keys(password, Keys.ENTER)
    page.wait("the clusters view", lambda: page.title() == "Clusters")
    page.wait(
        "cluster local on the map, Ready",
        lambda: any(
            "local" in m.text and "Ready" in m.text for m in page.css("svg.world a.marker")
        ),
    )
    markers = page.css("svg.world a.marker")
    seen["map_markers"] = [m.text for m in markers]
    seen["cluster_rows"] = page.rows("Clusters")
    page.shot("clusters")

    # The cluster's page: its nodes, read from the cluster's API through the root.
    page.click("svg.world a.marker")
    page.wait("the cluster view", lambda: page.title() == "Cluster local")
    page.wait(
        "node local Ready, through the root",
        lambda: (rows := page.rows("Nodes of local")) and any(r[0] == "local" and "Ready" in r[1] for r in rows),
    )
    seen["nodes"] = page.rows("Nodes of local")
    page.shot("cluster")
    # Marks this document: a reload would forget it.
    d.execute_script("window.__sameDocument = 'yes'")

    # Apply a Service from the page.
    page.go("#/apply")
    page.wait("the apply form", lambda: page.css("#manifest"))
    manifest = (
        "apiVersion: oakestra.io/v1\n"
        "kind: Service\n"
        "metadata:\n"
        "  name: hello\n"
        "spec:\n"
        "  replicas: 1\n"
        "  template:\n"
        "    runtime: process\n"
        "    executable: /bin/sh\n"
        f"    command: [-c, 'echo {marker} says hello; while true; do echo {marker} tick; sleep 1; done']\n"
        "    resources: {cpuMillicores: 50, memoryMiB: 16}\n"
    )
    area = page.css("#manifest")[0]
    area.send_keys(manifest)
    page.click("#apply-button")
    page.wait("the apply's result", lambda: page.css("#applied-title"))
    seen["applied"] = page.text(".applied")
    page.click(".applied a")
    page.wait("the service view", lambda: page.title() == "Service hello")
    page.wait(
        "an Instance of hello Running on the page",
        lambda: (rows := page.rows("Instances of hello")) and any("Running" in r[1] for r in rows),
        timeout=90,
    )
    seen["instances_running"] = page.rows("Instances of hello")
    seen["same_document_after_running"] = d.execute_script("return window.__sameDocument || ''")
    page.shot("service")

    # Its log, through the root, shows what it printed.
    page.click("main table tbody tr a[aria-label^='Logs of']")
    page.wait("the log view", lambda: page.title().startswith("Log of hello"))
    page.wait(f"'{marker} says hello' in the log", lambda: f"{marker} says hello" in page.text("#log-text"))
    seen["log_has_line"] = True
    ticks = lambda: page.text("#log-text").count(f"{marker} tick")
    first = ticks()
    page.wait("the followed log to grow", lambda: ticks() > first, timeout=30)
    seen["log_follows"] = True
    page.shot("logs")

    # Scale to 3: three Instances, all Running.
    d.back()
    page.wait("the service view again", lambda: page.title() == "Service hello")
    replicas = page.css("#scale-replicas")[0]
    replicas.clear()
    replicas.send_keys("3")
    replicas.send_keys(Keys.ENTER)
    page.wait("'Scaled to 3'", lambda: "Scaled to 3" in page.text(".result"))
    page.wait(
        "3 Instances Running",
        lambda: (rows := page.rows("Instances of hello"))
        and len(rows) == 3
        and all("Running" in r[1] for r in rows),
        timeout=90,
    )
    seen["after_scale"] = [r[1] for r in page.rows("Instances of hello")]
    page.wait("the summary to say 3 of 3 ready", lambda: "3 of 3" in page.text(".summary"))
    seen["same_document_after_scale"] = d.execute_script("return window.__sameDocument || ''")
    page.shot("service-scaled")

    # A Service no cluster has room for: the services table says why, in words.
    page.go("#/apply")
    page.wait("the apply form", lambda: page.css("#manifest"))
    too_big = manifest.replace("name: hello", "name: too-big").replace("memoryMiB: 16", "memoryMiB: 100000000")
    page.css("#manifest")[0].send_keys(too_big)
    page.click("#apply-button")
    page.wait("the apply's result", lambda: page.css("#applied-title"))
    page.go("#/services")
    page.wait("the services table", lambda: page.rows("Services"))
    page.wait("hello Ready in the services table",
              lambda: any(r[0] == "hello" and "Ready" in r[5] for r in page.rows("Services")))
    page.wait(
        "too-big not placed, with the reason",
        lambda: any(r[0] == "too-big" and "Not placed" in r[5] and "NoResourcesAvailable" in r[5]
                    for r in page.rows("Services")),
    )
    seen["services_rows"] = page.rows("Services")
    seen["unplaced"] = next(r[5] for r in page.rows("Services") if r[0] == "too-big")
    page.shot("services")

    page.go("#/events")
    page.wait("events", lambda: page.rows("Events"))
    page.shot("events")

    # A bad manifest: the API's error, at the line of its field.
    page.go("#/apply")
    page.wait("the apply form", lambda: page.css("#manifest"))
    bad = manifest.replace("name: hello", "name: broken").replace("replicas: 1", "replicas: -1")
    page.css("#manifest")[0].send_keys(bad)
    page.click("#apply-button")
    page.wait("the refusal", lambda: page.css(".annotated .problem"))
    problem = page.css(".annotated .problem")[0]
    seen["field_error"] = problem.text
    seen["field_error_after_line"] = d.execute_script(
        "return arguments[0].previousElementSibling.textContent", problem
    )
    page.shot("apply-error")
    # Nothing was written.
    seen["broken_exists"] = d.execute_async_script(
        "const done = arguments[0];"
        "const s = JSON.parse(sessionStorage.getItem('oakestra.dashboard.session'));"
        "fetch('/apis/oakestra.io/v1/namespaces/default/services/broken',"
        " {headers: {Authorization: 'Bearer ' + s.token}}).then((r) => done(r.status));"
    )

    # A phone-sized screen.
    d.set_window_size(375, 812)
    page.go("#/clusters")
    page.wait("the clusters view", lambda: page.title() == "Clusters")
    page.wait("the map's marker", lambda: page.css("svg.world a.marker"))
    seen["phone_overflow"] = d.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    page.shot("phone-clusters")
    page.go("#/services/default/hello")
    page.wait("the service view", lambda: page.title() == "Service hello")
    page.wait("its rows", lambda: len(page.rows("Instances of hello") or []) == 3)
    page.shot("phone-service")
    d.set_window_size(1280, 900)

    # Delete, after a confirmation: Cancel keeps it, Delete removes it.
    page.wait("the delete button", lambda: page.css("#delete-service"))
    page.click("#delete-service")
    page.wait("the confirmation", lambda: page.css("dialog.confirm[open]"))
    seen["confirm_text"] = page.text("dialog.confirm")
    page.shot("delete-confirm")
    # With the keyboard: the focus starts on Cancel, Escape cancels; Tab reaches Delete.
    seen["confirm_focus"] = d.switch_to.active_element.text
    d.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait("the dialog to close", lambda: not page.css("dialog.confirm[open]"))
    seen["kept_after_cancel"] = page.title() == "Service hello"
    page.click("#delete-service")
    page.wait("the confirmation", lambda: page.css("dialog.confirm[open]"))
    d.switch_to.active_element.send_keys(Keys.TAB)
    seen["confirm_tab"] = d.switch_to.active_element.text
    d.switch_to.active_element.send_keys(Keys.ENTER)
    page.wait("the services view", lambda: page.title() == "Services")
    page.wait(
        "hello gone from the services table",
        lambda: (rows := page.rows("Services")) is not None
        and not any(r[0] == "hello" for r in rows),
        timeout=60,
    )
    seen["deleted"] = True

    # Logging out returns to the login, and the session is gone.
    page.click("#logout")
    page.wait("the login again", lambda: page.css("#login-password-form"))
    seen["after_logout"] = d.execute_script("return sessionStorage.length")


# ------------------------------------------------------------------ performance


class Api:
    """Requests to the root with a bearer token, one TLS connection per thread."""

    def __init__(self, base, token):
        url = urllib.parse.urlparse(base)
        self.host, self.port = url.hostname, url.port
        self.token = token
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.local = __import__("threading").local()

    def request(self, method, path, body=None, content_type="application/json"):
        for attempt in range(3):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=60)
                self.local.conn = conn
            try:
                headers = {"Authorization": f"Bearer {self.token}"}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = content_type
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                text = response.read()
                return response.status, text
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise


def create_many(api, services, per_service, workers=16):
    template = {"runtime": "process", "executable": "/bin/true", "resources": {"cpuMillicores": 10, "memoryMiB": 8}}
    def service(i):
        name = f"svc-{i:04d}"
        body = {
            "apiVersion": "oakestra.io/v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"replicas": per_service, "template": template},
        }
        status, text = api.request("POST", "/apis/oakestra.io/v1/namespaces/default/services", body)
        assert status in (201, 409), (status, text[:300])
    def instance(n):
        i, k = divmod(n, per_service)
        body = {
            "apiVersion": "oakestra.io/v1",
            "kind": "Instance",
            "metadata": {"name": f"svc-{i:04d}-perf-{k}"},
            "spec": {"service": f"svc-{i:04d}", "ordinal": k, "template": template},
        }
        status, text = api.request("POST", "/apis/oakestra.io/v1/namespaces/default/instances", body)
        assert status in (201, 409), (status, text[:300])
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(service, range(services)))
        list(pool.map(instance, range(services * per_service)))
    return time.monotonic() - start


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[index]


WRITE_TO_ROW = """
const [name, replicas, token, done] = arguments;
const key = 'default/' + name;
const cell = () => {
  const row = document.querySelector(`tr[data-key="${key}"]`);
  return row ? row.cells[2].textContent : null;
};
const start = performance.now();
const observer = new MutationObserver(() => {
  if (cell() === String(replicas)) {
    observer.disconnect();
    done(performance.now() - start);
  }
});
observer.observe(document.querySelector('main'), {childList: true, subtree: true, characterData: true});
fetch(`/apis/oakestra.io/v1/namespaces/default/services/${name}`, {
  method: 'PATCH',
  headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/merge-patch+json'},
  body: JSON.stringify({spec: {replicas}}),
}).then((r) => { if (!r.ok) { observer.disconnect(); done(-r.status); } });
setTimeout(() => { observer.disconnect(); done(null); }, 20000);
"""


def perf(base, token, out, services=1000, per_service=10):
    api = Api(base, token)
    created_in = create_many(api, services, per_service)
    figures = {"services": services, "instances": services * per_service, "created_in_s": round(created_in, 1)}
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        page = Page(driver, base, out)
        try:
            # Log in with the token (the other way in).
            page.open()
            page.wait("the login form", lambda: page.css("#login-token"))
            page.css("#login-token")[0].send_keys(token)
            page.click("#login-token-form button[type=submit]")
            page.wait("the clusters view", lambda: page.title() == "Clusters")

            def first_screen(hash_, view, caption):
                driver.get("about:blank")
                page.open(hash_)
                page.wait(f"the first screen of {view}", lambda: (rows := page.rows(caption)) and len(rows) == 50)
                ms = page.d.execute_script(f"return window.oakDashboard.perf.firstScreen['{view}']")
                return ms

            services_ms = [first_screen("#/services", "services", "Services") for _ in range(3)]
            figures["services_first_screen_ms"] = [round(x) for x in services_ms]
            page.wait("every Service listed", lambda: "1000 in all" in page.text(".count"))
            page.shot("perf-services")

            # Writes through the API; the time until the row shows them.
            samples = []
            for n in range(100):
                name = f"svc-{n % 50:04d}"
                ms = driver.execute_async_script(WRITE_TO_ROW, name, 100 + n, token)
                assert ms is not None and ms >= 0, f"row {name} did not update: {ms}"
                samples.append(ms)
            applied = driver.execute_script("return window.oakDashboard.perf.appliedMs")
            figures["write_to_row_ms"] = {
                "p50": round(statistics.median(samples), 1),
                "p99": round(percentile(samples, 99), 1),
                "max": round(max(samples), 1),
                "n": len(samples),
            }
            figures["event_to_applied_ms"] = {
                "p50": round(statistics.median(applied), 2),
                "p99": round(percentile(applied, 99), 2),
                "n": len(applied),
            }

            instances_ms = first_screen("#/instances", "instances", "Instances")
            figures["instances_first_screen_ms"] = round(instances_ms)
            page.wait("every Instance listed", lambda: "10000 in all" in page.text(".count"), timeout=120)
            figures["instances_all_listed_ms"] = round(driver.execute_script("return performance.now()"))
            page.shot("perf-instances")
            figures["console_errors"] = page.errors()
        finally:
            driver.quit()
    return figures


def main():
    mode = sys.argv[1]
    if mode == "walk":
        _, _, base, password_file, out, marker = sys.argv
        result = walk(base, password_file, out, marker)
    elif mode == "perf":
        _, _, base, token, out = sys.argv
        result = perf(base, token, out)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
