"""Debian's headless chromium driven by Selenium, for the explorer's browser tests.

``browser`` is a module-scoped fixture: a test file imports it, and each file gets its own
browser; any test that asks for it is marked ``browser`` (conftest). Where chromium,
chromedriver or selenium is missing the tests fail and name it (they never skip).
"""

import os

import pytest

# Debian's packages; the variables exist so a test can point them at nothing and see the failure.
CHROMIUM = os.environ.get("TAGSCALE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TAGSCALE_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT_S = 30


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"the browser tests need Debian's chromium and chromium-driver; missing {', '.join(missing)} "
            "(`make test` installs them; as root: apt-get install -y chromium chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser tests need selenium (a dev dependency in setup.py): run `make install`")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium never looks for (or downloads) one of its own.
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait(driver, condition, message):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A view re-renders wholesale, so an element read mid-render can go stale: read again.
    waiter = WebDriverWait(driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return waiter.until(lambda d: condition(d), message)


def open_view(driver, server, hash_):
    driver.get(server.url + hash_)
    wait(
        driver,
        lambda d: d.execute_script("return document.body.dataset.ready") == hash_,
        f"view {hash_} did not render",
    )


def no_console_errors(driver):
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
