"""``segkit demo`` in a real browser (Playwright + the system's Chromium) and through gradio_client.

The app runs as ``python -m segkit demo`` on 127.0.0.1 with tiny models; every page result is
compared pixel for pixel with what the CLI writes for the same photo and settings.
Under CI (CI=true) these tests must run: a missing Chromium, Gradio or Playwright fails them.
"""

import importlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from segkit.cli import main
from segkit.labels import load_labels
from system import missing

CUTLER = Path(__file__).parent / "fixtures" / "cutler"
CHROMIUM = os.environ.get("SEGKIT_CHROMIUM", "/usr/bin/chromium")
MAX_PIXELS = 1_000_000
START_TIMEOUT_S = 120
RUN_TIMEOUT_MS = 120_000


def _need(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(f'{module} is not installed: pip install -e ".[test]"')


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny CLIPSeg and OneFormer (ADE20K labels) folders, and the CutLER fixture checkpoint."""
    from tiny_models import make_tiny_clipseg, tiny_oneformer

    root = tmp_path_factory.mktemp("demo_models")
    oneformer = root / "oneformer"
    tiny_oneformer(load_labels("ade20k_150").names, seed=2).save_pretrained(oneformer)
    return {"clipseg": make_tiny_clipseg(root / "clipseg"), "oneformer": oneformer,
            "cutler": CUTLER / "cascade_tiny.pth", "cutler_config": CUTLER / "cascade_tiny.yaml",
            "maskcut": Path(__file__).parent / "fixtures" / "maskcut" / "model"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """``segkit demo`` serving the tiny models; yields its URL."""
    _need("gradio")
    port = _free_port()
    log = tmp_path_factory.mktemp("demo_server") / "server.log"
    args = [sys.executable, "-m", "segkit", "demo", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
            "--offline", "--max-pixels", str(MAX_PIXELS),
            "--weights", f"oneformer-ade20k-swin-l={models['oneformer']}", "--weights", f"clipseg={models['clipseg']}",
            "--weights", f"cutler={models['cutler']}", "--config", f"cutler={models['cutler_config']}",
            "--weights", f"maskcut={models['maskcut']}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1])] + sys.path)}
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"segkit demo did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    playwright_api = _need("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        missing(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set SEGKIT_CHROMIUM)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Page:
    """One browser tab on the demo, recording every request it makes."""

    def __init__(self, browser, url):
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.requests = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)
        self.page.wait_for_selector("#oneformer-run")

    def open_tab(self, title):
        self.page.get_by_role("tab", name=title).click()

    def upload(self, backend, path):
        box = self.page.locator(f"#{backend}-image")
        clear = box.get_by_role("button", name="Clear")
        if clear.count():
            clear.click()
        box.locator("input[type=file]").set_input_files(str(path))
        self.page.wait_for_function(  # the upload is done when the box shows its name
            "([id, name]) => document.getElementById(id).innerText.replace(/\\s/g, '').includes(name)",
            arg=[f"{backend}-image", Path(path).name.replace(" ", "")])

    def set_number(self, element_id, value):
        box = self.page.locator(f"#{element_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")

    def start(self, backend):
        """Click Segment; returns what wait() needs to see this run's answer."""
        # Close earlier messages, so this run's message is told apart.
        self.page.evaluate("document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")
        self.page.wait_for_function("!document.querySelector('[data-testid=toast-text]')")
        before = self.page.locator(f"#{backend}-status").inner_text()
        self.page.click(f"#{backend}-run")
        return backend, before

    def wait(self, started):
        """This run's status line, or raises with the error toast's text."""
        backend, status = started
        self.page.wait_for_function(
            "([id, status]) => {const s = document.getElementById(id);"
            " return (s && / by \\S+ in [0-9.]+ s$/.test(s.innerText.trim()) && s.innerText !== status)"
            " || document.querySelector('[data-testid=toast-text]')}",
            arg=[f"{backend}-status", status], timeout=RUN_TIMEOUT_MS)
        messages = self.page.locator("[data-testid=toast-text]")
        if messages.count():
            raise PageError(messages.first.inner_text())
        return self.page.locator(f"#{backend}-status").inner_text()

    def run(self, backend):
        return self.wait(self.start(backend))

    def image(self, element_id) -> np.ndarray:
        return _png_pixels(self.page.locator(f"#{element_id} img").get_attribute("src"))

    def file(self, element_id) -> bytes:
        href = self.page.locator(f"#{element_id} a").first.get_attribute("href")
        with urllib.request.urlopen(href) as response:
            return response.read()

    def assert_local(self):
        """Every request of this page went to the demo's own host (no CDN, fonts or analytics)."""
        here = urlparse(self.page.url).netloc
        away = [u for u in self.requests if urlparse(u).scheme not in ("data", "blob") and urlparse(u).netloc != here]
        assert not away and len(self.requests) > 10


class PageError(Exception):
    """The page showed an error toast."""


@pytest.fixture
def page(browser, server):
    opened = Page(browser, server)
    yield opened
    opened.page.close()


def _png_pixels(url) -> np.ndarray:
    with urllib.request.urlopen(url) as response:
        data = response.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{url} is not a PNG"
    return np.asarray(Image.open(io.BytesIO(data)))


def _cli(args, out) -> Path:
    run = CliRunner().invoke(main, args + ["-o", str(out), "--device", "cpu"])
    assert run.exit_code == 0, run.output
    return out


def _photo_shape(path):
    with Image.open(path) as img:
        return img.height, img.width, 3


def _same_segments(page_json: bytes, cli_json: Path):
    ours, theirs = json.loads(page_json), json.loads(cli_json.read_text())
    assert ours["segments"] == theirs["segments"] and ours["options"] == theirs["options"]
    assert ours["model"] == theirs["model"] and Path(ours["image"]).name == Path(theirs["image"]).name


def _page_shows_cli_files(page, tab: str, cli: Path, photo: Path):
    """The tab's overlay is the CLI's pixel for pixel (so at the photo's own size), its S.json the CLI's."""
    np.testing.assert_array_equal(page.image(f"{tab}-overlay"), np.asarray(Image.open(cli / f"{photo.stem}_overlay.png")))
    _same_segments(page.file(f"{tab}-json"), cli / f"{photo.stem}.json")


def test_oneformer_tab_shows_what_the_cli_writes(page, models, examples_dir, tmp_path):
    photo = examples_dir / "cat.jpg"
    page.upload("oneformer", photo)
    for group, value in (("task", "panoptic"), ("dataset", "ade20k"), ("backbone", "swin-l")):
        page.page.locator(f"#oneformer-{group}").get_by_label(value, exact=True).check()
    page.set_number("oneformer-alpha", 0.6)
    status = page.run("oneformer")
    assert "by oneformer-ade20k-swin-l" in status
    common = ["panoptic", str(photo), "--dataset", "ade20k", "--backbone", "swin-l", "--weights",
              str(models["oneformer"]), "--save", "labels,json"]
    cli = _cli(common + ["--alpha", "0.6"], tmp_path / "cli")
    opaque = _cli(common + ["--alpha", "1"], tmp_path / "opaque")
    _page_shows_cli_files(page, "oneformer", cli, photo)
    np.testing.assert_array_equal(page.image("oneformer-map"), np.asarray(Image.open(opaque / "cat_overlay.png")))
    labels = np.asarray(Image.open(io.BytesIO(page.file("oneformer-labels"))))
    np.testing.assert_array_equal(labels, np.asarray(Image.open(cli / "cat_labels.png")))
    legend = page.page.locator("#oneformer-legend").inner_text().split("\n")
    names = [s["label"] for s in json.loads((cli / "cat.json").read_text())["segments"]]
    assert [n.strip() for n in legend if n.strip()] == list(dict.fromkeys(names))
    page.assert_local()


def test_cutler_tab_shows_what_the_cli_writes(page, models, examples_dir, tmp_path):
    photo = examples_dir / "coffee.jpg"
    page.open_tab("CutLER")
    page.upload("cutler", photo)
    page.set_number("cutler-threshold", 0.05)
    page.set_number("cutler-alpha", 0.3)
    page.page.locator("#cutler-max_detections textarea, #cutler-max_detections input").first.fill("7")
    assert "7 segments by cutler-cascade" in page.run("cutler")
    cli = _cli(["cutler", str(photo), "--weights", str(models["cutler"]), "--config", str(models["cutler_config"]),
                "--threshold", "0.05", "--max-detections", "7", "--alpha", "0.3", "--save", "labels,json"],
               tmp_path / "cli")
    _page_shows_cli_files(page, "cutler", cli, photo)
    page.assert_local()


def test_clipseg_tab_shows_what_the_cli_writes(page, models, examples_dir, tmp_path):
    photo = examples_dir / "cat.jpg"
    page.open_tab("CLIPSeg")
    page.upload("clipseg", photo)
    page.page.locator("#clipseg-prompts textarea").fill("cat\ngrass\n")
    page.set_number("clipseg-threshold", 0.5)
    page.set_number("clipseg-alpha", 0.7)
    assert "2 segments by clipseg-rd64-refined" in page.run("clipseg")
    cli = _cli(["clipseg", str(photo), "-p", "cat", "-p", "grass", "--weights", str(models["clipseg"]),
                "--threshold", "0.5", "--alpha", "0.7", "--save", "json,grid"], tmp_path / "cli")
    _page_shows_cli_files(page, "clipseg", cli, photo)
    np.testing.assert_array_equal(page.image("clipseg-grid"), np.asarray(Image.open(cli / "cat_grid.png")))
    page.assert_local()


def test_maskcut_tab_shows_what_the_cli_writes(page, models, examples_dir, tmp_path):
    photo = examples_dir / "coffee.jpg"
    page.open_tab("MaskCut")
    page.upload("maskcut", photo)
    page.set_number("maskcut-fixed_size", 160)
    page.set_number("maskcut-alpha", 0.4)
    assert "by maskcut-dino-vitb8" in page.run("maskcut")
    cli = _cli(["maskcut", str(photo), "--weights", str(models["maskcut"]), "--fixed-size", "160", "--no-crf",
                "--alpha", "0.4", "--save", "labels,json"], tmp_path / "cli")
    _page_shows_cli_files(page, "maskcut", cli, photo)
    assert json.loads(page.file("maskcut-json"))["segments"]  # something was found, so the overlay shows it
    page.assert_local()


def _png_header_only(path, width, height):
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_bad_uploads_show_one_line_and_the_app_keeps_serving(page, examples_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a photo")
    huge = tmp_path / "huge.png"
    Image.new("RGB", (1100, 1000), (90, 120, 30)).save(huge)
    bomb = _png_header_only(tmp_path / "bomb.png", 40_000, 40_000)
    page.open_tab("CutLER")
    expected = {broken: "not an image file", huge: "--max-pixels", bomb: "too many pixels"}
    for upload, words in expected.items():
        page.upload("cutler", upload)
        with pytest.raises(PageError) as error:
            page.run("cutler")
        message = error.value.args[0]
        assert upload.name in message and words in message and "Traceback" not in message
        assert str(upload.parent) not in message  # names the upload, not the server's temporary path
    page.page.locator("#cutler-image").get_by_role("button", name="Clear").click()
    page.page.locator("button:visible", has_text="cat.jpg").click()  # a shipped example, one click away
    page.page.wait_for_function("document.getElementById('cutler-image').innerText.includes('cat')")
    assert "by cutler-cascade" in page.run("cutler")
    assert page.image("cutler-overlay").shape == _photo_shape(examples_dir / "cat.jpg")


def test_a_model_that_cannot_load_shows_segkits_message(page, examples_dir):
    page.upload("oneformer", examples_dir / "cat.jpg")
    page.page.locator("#oneformer-dataset").get_by_label("coco", exact=True).check()
    with pytest.raises(PageError) as error:
        page.run("oneformer")
    message = error.value.args[0]
    assert "oneformer-coco-dinat-l" in message or "oneformer-coco-swin-l" in message
    assert "segkit models download" in message and "Traceback" not in message


def test_two_pages_at_once_get_their_own_results(browser, server, models, examples_dir, tmp_path):
    jobs = {"cat": ("cat.jpg", "cat\nsky"), "coffee": ("coffee.jpg", "cup\ncoffee")}
    pages = {name: Page(browser, server) for name in jobs}
    try:
        started = {}
        for name, (photo, prompts) in jobs.items():
            pages[name].open_tab("CLIPSeg")
            pages[name].upload("clipseg", examples_dir / photo)
            pages[name].page.locator("#clipseg-prompts textarea").fill(prompts)
        for name in jobs:
            started[name] = pages[name].start("clipseg")
        for name, (photo, prompts) in jobs.items():
            pages[name].wait(started[name])
            cli_args = ["clipseg", str(examples_dir / photo), "--weights", str(models["clipseg"])]
            for prompt in prompts.split("\n"):
                cli_args += ["-p", prompt]
            cli = _cli(cli_args, tmp_path / name)
            np.testing.assert_array_equal(pages[name].image("clipseg-overlay"),
                                          np.asarray(Image.open(cli / f"{Path(photo).stem}_overlay.png")))
    finally:
        for opened in pages.values():
            opened.page.close()


def test_api_gives_the_cli_files(server, models, examples_dir, tmp_path):
    client_api = _need("gradio_client")
    from gradio_client.exceptions import AppError

    client = client_api.Client(server, verbose=False)
    photo = examples_dir / "rocket.jpg"
    overlay, json_file, labels_file, status = client.predict(
        image=client_api.handle_file(str(photo)), model="cutler-cascade", threshold=0.05, max_detections="",
        alpha=0.5, api_name="/cutler")
    cli = _cli(["cutler", str(photo), "--weights", str(models["cutler"]), "--config", str(models["cutler_config"]),
                "--threshold", "0.05", "--save", "labels,json"], tmp_path / "cli")
    assert Path(overlay).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(overlay)), np.asarray(Image.open(cli / "rocket_overlay.png")))
    _same_segments(Path(json_file).read_bytes(), cli / "rocket.json")
    np.testing.assert_array_equal(np.asarray(Image.open(labels_file)), np.asarray(Image.open(cli / "rocket_labels.png")))
    assert status.startswith(f"{len(json.loads(Path(json_file).read_text())['segments'])} segments by cutler-cascade")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(AppError, match="broken.png: "):
        client.predict(image=client_api.handle_file(str(broken)), model="cutler-cascade", threshold=0.05,
                       max_detections="", alpha=0.5, api_name="/cutler")
    with pytest.raises(AppError, match="max.detections"):
        client.predict(image=client_api.handle_file(str(photo)), model="cutler-cascade", threshold=0.05,
                       max_detections="many", alpha=0.5, api_name="/cutler")


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    run = CliRunner().invoke(main, ["demo"])
    assert run.exit_code == 1
    assert run.output.strip() == 'error: the web demo needs Gradio: pip install "segkit[demo]"'


def test_command_checks_weights_pairs_and_warns_on_public_host(monkeypatch, models):
    _need("gradio")
    import segkit.demo.app as app_module

    run = CliRunner().invoke(main, ["demo", "--weights", "no-equals-sign"])
    assert run.exit_code == 2 and "use NAME=PATH" in run.output
    run = CliRunner().invoke(main, ["demo", "--weights", "nosuchmodel=/tmp/x"])
    assert run.exit_code == 2 and "unknown model 'nosuchmodel'" in run.output
    run = CliRunner().invoke(main, ["demo", "--weights", "cutler=/no/such/file.pth"])
    assert run.exit_code == 1 and run.output.strip().splitlines() == [
        "error: /no/such/file.pth: no such weights file or folder; check the --weights path"]
    launched = {}
    monkeypatch.setattr(app_module, "launch", lambda app, **kwargs: launched.update(kwargs))
    run = CliRunner().invoke(main, ["demo", "--host", "0.0.0.0", "--port", "7999", "--device", "cpu",
                                    "--weights", f"clipseg={models['clipseg']}"])
    assert run.exit_code == 0, run.output
    assert launched == {"host": "0.0.0.0", "port": 7999}
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no authentication" in warnings[0]
    run = CliRunner().invoke(main, ["demo", "--device", "cpu"])
    assert run.exit_code == 0 and "warning" not in run.stderr and launched["host"] == "127.0.0.1"


def test_model_cache_keeps_one_model_per_backend(models):
    from segkit.demo.models import ModelCache, model_paths

    weights = model_paths([f"clipseg={models['clipseg']}", f"clipseg-rd16={models['clipseg']}"], "--weights")
    assert weights == {"clipseg-rd64-refined": str(models["clipseg"]), "clipseg-rd16": str(models["clipseg"])}
    cache = ModelCache(weights=weights, device="cpu")
    assert cache.preferred("clipseg") == "clipseg-rd64-refined" and cache.preferred("cutler") is None
    with cache.lock("clipseg"):
        first, _ = cache.get("clipseg-rd64-refined")
        assert cache.get("clipseg-rd64-refined") == (first, 0.0)  # kept, not loaded again
        second, _ = cache.get("clipseg-rd16")
    assert second.name == "clipseg-rd16" and second is not first
    assert cache.loaded("clipseg-rd16") is second and cache.loaded("clipseg-rd64-refined") is None
    assert cache.lock("clipseg") is cache.lock("clipseg") is not cache.lock("cutler")


def test_page_says_so_while_weights_load(browser, models, examples_dir):
    """An app in this process whose model load waits for the test: the page shows the loading message."""
    from segkit.demo.app import build, launch
    from segkit.demo.models import ModelCache
    from segkit.demo.segment import RequestFolders

    release = threading.Event()

    class HeldCache(ModelCache):
        def get(self, name):
            release.wait(RUN_TIMEOUT_MS / 1000)
            return super().get(name)

    folders = RequestFolders()
    app = build(HeldCache(weights={"clipseg-rd64-refined": str(models["clipseg"])}, device="cpu"), folders)
    port = _free_port()
    launch(app, host="127.0.0.1", port=port, block=False)
    try:
        page = Page(browser, f"http://127.0.0.1:{port}/")
        page.open_tab("CLIPSeg")
        page.upload("clipseg", examples_dir / "cat.jpg")
        page.page.locator("#clipseg-prompts textarea").fill("cat")
        started = page.start("clipseg")
        page.page.locator("#clipseg-overlay").get_by_text("Loading clipseg-rd64-refined").wait_for()
        release.set()
        assert "by clipseg-rd64-refined" in page.wait(started)
    finally:
        release.set()
        app.close()
        folders.cleanup()
