"""Take the README's screenshot of a running ``segkit demo`` (Playwright + the system's Chromium).

    segkit demo --port 7860 &
    python docs/screenshot.py --url http://127.0.0.1:7860/ --out docs/demo.png

The PNG is reduced to 256 colours so the README stays light.
"""

import argparse
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

PHOTO = Path(__file__).parents[1] / "segkit" / "demo" / "examples" / "rocket.jpg"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--out", default="docs/demo.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 860})
        page.goto(args.url)
        page.locator("#oneformer-image input[type=file]").set_input_files(str(PHOTO))
        page.locator("#oneformer-task").get_by_label("semantic", exact=True).check()
        page.click("#oneformer-run")
        page.wait_for_function("/ by \\S+ in [0-9.]+ s$/.test(document.getElementById('oneformer-status').innerText.trim())",
                               timeout=300_000)
        page.wait_for_timeout(500)  # let the images finish drawing
        shot = page.screenshot(full_page=False)
        browser.close()
    image = Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
