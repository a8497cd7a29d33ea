"""The Gradio page: one tab per backend, every request through segkit's runner and writer.

Gradio itself is imported through :func:`segkit.demo.import_gradio`, which turns its analytics off
first; this module does not import it at import time.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SegkitError
from . import EXAMPLES, import_gradio
from .controls import model_for, tab_controls
from .segment import RequestFolders, segment
from .tabs import available_tabs

CSS = """
.segkit-legend { display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 0.9em; }
.segkit-legend-item { display: inline-flex; align-items: center; gap: 4px; }
.segkit-swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #0006; }
"""
SYSTEM_FONTS = ("Helvetica", "Arial", "sans-serif")  # no web fonts: nothing is fetched, not even locally
SYSTEM_MONO = ("Menlo", "Consolas", "monospace")


def theme(gr):
    return gr.themes.Default(font=[gr.themes.Font(f) for f in SYSTEM_FONTS],
                             font_mono=[gr.themes.Font(f) for f in SYSTEM_MONO])


def example_photos() -> list[Path]:
    return sorted(EXAMPLES.glob("*.jpg"))


def build(cache, folders: RequestFolders, *, max_pixels: int | None = None):
    """The demo's Blocks for the models in ``cache`` (a ModelCache), writing into ``folders``."""
    gr = import_gradio()
    with gr.Blocks(title="segkit demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown("# segkit demo\nSegment your own photos on this machine: nothing leaves it. "
                    "Each result is what the `segkit` command writes for the same settings.")
        for tab in available_tabs():
            with gr.Tab(tab.title, id=tab.backend, elem_id=f"{tab.backend}-tab"):
                _tab(gr, tab, cache, folders, max_pixels)
    return app


def _tab(gr, tab, cache, folders, max_pixels):
    from ..commands.images import backend_package
    from ..registry import get_spec

    start_model = cache.preferred(tab.backend) or get_spec(tab.backend).name
    gr.Markdown(tab.intro)
    with gr.Row():
        with gr.Column():
            image = gr.File(label="Image", file_types=["image"], type="filepath", elem_id=f"{tab.backend}-image")
            controls = tab_controls(gr, tab, backend_package(tab.backend), start_model)
            button = gr.Button("Segment", variant="primary", elem_id=f"{tab.backend}-run")
        with gr.Column():
            # show_label=False: the label would sit on the drawing's own legend (top left)
            overlay = gr.Image(label="Overlay", show_label=False, format="png", type="filepath", interactive=False,
                               elem_id=f"{tab.backend}-overlay")
            outputs = [overlay]
            if tab.figure is not None:
                label = "Segmentation map" if tab.figure == "map" else "Heatmaps"
                outputs.append(gr.Image(label=label, show_label=False, format="png", type="filepath",
                                        interactive=False, elem_id=f"{tab.backend}-{tab.figure}"))
            if tab.figure == "map":
                outputs.append(gr.HTML(label="Legend", elem_id=f"{tab.backend}-legend"))
            with gr.Row():
                outputs.append(gr.File(label="Segments (S.json, COCO RLE)", elem_id=f"{tab.backend}-json"))
                outputs.append(gr.File(label="Label image (S_labels.png)", elem_id=f"{tab.backend}-labels"))
            outputs.append(gr.Markdown(label="Status", elem_id=f"{tab.backend}-status"))
    gr.Examples([[str(p)] for p in example_photos()], inputs=[image], label="Example photos")
    run = _run_function(gr, tab, controls, cache, folders, max_pixels, start_model)
    status = outputs[-1]
    clear_status = button.click(None, None, [status], js="() => ''")  # in the browser: the last run's line goes
    clear_status.then(run, inputs=[image] + [c.component for c in controls], outputs=outputs, api_name=tab.backend)


def _run_function(gr, tab, controls, cache, folders, max_pixels, start_model):
    def run(image, *values_and_progress):
        *values, progress = values_and_progress  # Gradio passes its tracker last, as the signature says
        if not image:
            raise gr.Error("upload an image first (or pick an example photo)", print_exception=False)
        try:
            model = model_for(tab.backend, controls, values, start_model)
            options, alpha = _request(controls, values)
            import segkit

            if cache.loaded(model) is None:
                progress(0, desc=f"Loading {model} (first use: weights are read once, then kept)")
            segkit.check(model, device=cache.device, **options)  # before any weights are loaded
            with cache.lock(tab.backend):
                segmenter = _load(cache, model)
                progress(0.5, desc="Segmenting")
                out = segment(segmenter, image, options, folders.new(), save=tab.save, alpha=alpha,
                              opaque_map=tab.figure == "map", max_pixels=max_pixels)
        except SegkitError as exc:
            raise gr.Error(exc.for_cli(), print_exception=False) from None
        result = [str(out.overlay)]
        if tab.figure is not None:
            figure = out.files.get(tab.figure)
            result.append(str(figure) if figure else None)
        if tab.figure == "map":
            result.append(out.legend)
        for role in ("json", "labels"):
            result.append(str(out.files[role]) if role in out.files else None)
        result.append(out.summary)
        return result

    run.__signature__ = _signature(gr, controls)
    return run


def _signature(gr, controls):
    """The run function's parameters by control name, so the API (gradio_client) names them too, and
    a last one whose default is a gr.Progress: Gradio passes its progress tracker there."""
    import inspect

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("image", kind)] + [inspect.Parameter(c.name, kind) for c in controls]
    params.append(inspect.Parameter("progress", kind, default=gr.Progress()))
    return inspect.Signature(params)


def _request(controls, values) -> tuple[dict, float]:
    """The predict options the page sets (blank ones left to the model) and the overlay opacity."""
    options, alpha = {}, 0.5
    for control, raw in zip(controls, values):
        if control.kind == "alpha":
            alpha = float(raw)
        elif control.kind == "option" and (value := control.value(raw)) is not None:
            options[control.name] = value
    return options, alpha


def _load(cache, model):
    """The cached model; any failure to load becomes segkit's one-line message."""
    try:
        return cache.get(model)[0]
    except SegkitError:
        raise
    except Exception as exc:
        raise SegkitError(f"could not load {model}: {type(exc).__name__}: {exc}") from None


def launch(app, *, host: str, port: int, block: bool = True):
    """Serve ``app``; with ``block=False`` return once it listens (tests, scripts)."""
    gr = import_gradio()
    return app.launch(server_name=host, server_port=port, theme=theme(gr), css=CSS, ssr_mode=False,
                      allowed_paths=[str(EXAMPLES)], prevent_thread_lock=not block, show_error=False)
