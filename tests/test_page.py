"""The page in a real browser: Debian's headless Chromium, driven by Selenium, on a live service."""

import re
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.cleaning import clean_text
from pipeline.predict import Predictor, label_of
from tests.live_service import running

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver fonts-noto-cjk)",
)
REVIEWS = ["배송 빠르고 좋아요!!", "별로에요 다시는 안 사요", "가격 대비 괜찮은데 포장이 아쉬워요"]
POSITIVE_RGB, NEGATIVE_RGB = (22, 163, 74), (220, 38, 38)  # the page's --pos and --neg


def chromium(profile: Path) -> webdriver.Chrome:
    """Headless Debian Chromium with a fresh profile, quiet: no network of its own."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1000,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def background(span) -> tuple[tuple[int, int, int], float]:
    """(rgb, alpha) of an element's computed background colour."""
    value = span.value_of_css_property("background-color")
    numbers = [float(n) for n in re.findall(r"[\d.]+", value)]
    return tuple(int(n) for n in numbers[:3]), numbers[3] if len(numbers) > 3 else 1.0


def submit(browser, text: str, count: str) -> None:
    box = browser.find_element(By.ID, "reviews")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "score").click()
    WebDriverWait(browser, 60).until(
        lambda d: (
            d.find_element(By.ID, "results").get_attribute("data-count") == count
            or d.find_element(By.ID, "error").is_displayed()
        )
    )


def test_the_page_labels_scores_and_shades_typed_reviews(trained, browser, tmp_path):
    predictor = Predictor(trained.artifacts_dir)
    probs = predictor.predict_proba(REVIEWS)
    with running(trained) as base:
        browser.get(base + "/")
        font = browser.find_element(By.TAG_NAME, "body").value_of_css_property("font-family")
        assert font.startswith('"Noto Sans CJK KR"')
        submit(browser, "\n".join(REVIEWS) + "\n\n", str(len(REVIEWS)))  # blank lines: skipped
        assert not browser.find_element(By.ID, "error").is_displayed()
        cards = browser.find_elements(By.CSS_SELECTOR, "#results .result")
        assert len(cards) == len(REVIEWS)
        for card, review, prob in zip(cards, REVIEWS, probs, strict=True):
            assert float(card.get_attribute("data-probability")) == pytest.approx(prob, abs=1e-5)
            assert float(card.find_element(By.CLASS_NAME, "prob").text) == pytest.approx(
                prob, abs=6e-5
            )
            assert card.find_element(By.CLASS_NAME, "label").text == label_of(prob)
            fill = card.find_element(By.CLASS_NAME, "fill").size["width"]
            bar = card.find_element(By.CLASS_NAME, "bar").size["width"]
            assert fill / bar == pytest.approx(prob, abs=0.01)

            cleaned = clean_text(review)
            spans = card.find_elements(By.CSS_SELECTOR, ".chars span")
            assert "".join(s.get_attribute("textContent") for s in spans) == cleaned
            # Occlusion computed here, independently of the service.
            variants = [cleaned[:i] + cleaned[i + 1 :] for i in range(len(cleaned))]
            effects = predictor.predict_proba(cleaned)[0] - predictor.predict_proba(variants)
            shown = np.array([float(s.get_attribute("data-effect")) for s in spans])
            np.testing.assert_allclose(shown, effects, atol=2e-5)
            strongest = np.abs(effects).max()
            assert strongest > 0
            for span, effect in zip(spans, effects, strict=True):
                rgb, alpha = background(span)
                assert rgb == (POSITIVE_RGB if effect >= 0 else NEGATIVE_RGB)
                assert alpha == pytest.approx(0.85 * abs(effect) / strongest, abs=0.01)
        browser.save_screenshot(str(tmp_path / "serve_page.png"))

        # An error from the service is shown on the page, in its own words.
        submit(browser, "\n".join(["좋아요"] * 21), "never")
        error = browser.find_element(By.ID, "error")
        assert error.is_displayed() and "the limit is 20" in error.text
    assert (tmp_path / "serve_page.png").stat().st_size > 10_000


def test_the_api_docs_render_offline_listing_every_operation(trained, browser, tmp_path):
    """/docs is Swagger UI with its script and styles served by the service: no CDN needed."""
    with running(trained) as base:
        browser.get(base + "/docs")
        WebDriverWait(browser, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        )
        paths = {
            op.get_attribute("data-path")
            for op in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        assert {"/predict", "/explain", "/health", "/info", "/metrics"} <= paths
        loaded = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert loaded and all(url.startswith(base + "/") for url in loaded), loaded
        browser.save_screenshot(str(tmp_path / "docs.png"))
    assert (tmp_path / "docs.png").stat().st_size > 10_000
