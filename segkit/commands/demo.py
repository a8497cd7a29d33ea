"""``segkit demo``: the web demo, served from this machine (needs ``pip install "segkit[demo]"``)."""

import click

from ..errors import RequestError, SegkitError


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 serves the whole network (the page has no login).")
@click.option("--port", default=7860, show_default=True, type=click.IntRange(1, 65535))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--offline", is_flag=True, help="Never touch the network; use cached or --weights weights only.")
@click.option("--weights", "weights", multiple=True, metavar="NAME=PATH",
              help="Serve local weights for a model (NAME: a model from 'segkit models', or a backend name for "
                   "its default model). Repeat for several.")
@click.option("--config", "configs", multiple=True, metavar="NAME=PATH",
              help="A model config to use instead of the built-in one (backends that take one).")
@click.option("--max-pixels", type=click.IntRange(min=1),
              help="Refuse uploads with more pixels than this (default: Pillow's decompression-bomb limit).")
def command(host, port, device, offline, weights, configs, max_pixels):
    """A web page to segment photos with every backend, on this machine (Gradio).

    \b
    Examples:
      segkit demo
      segkit demo --offline --weights oneformer-ade20k-swin-l=/models/oneformer_ade20k_swin_large
    """
    if offline:
        from ..weights import set_offline

        set_offline()  # before Gradio imports huggingface_hub
    from ..demo import import_gradio
    from ..demo.models import ModelCache, model_paths

    try:
        import_gradio()
        cache = ModelCache(weights=model_paths(weights, "--weights"), configs=model_paths(configs, "--config"),
                           device=device)
        from .. import check
        from ..weights import local_weights

        for name in {**cache.weights, **cache.configs}:
            check(name, device=device)
        for path in cache.weights.values():
            local_weights(path)  # a mistyped path is said now, not on the first request
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except SegkitError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(2 if isinstance(exc, RequestError) else 1) from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who can reach this address can use the page; "
                   "it has no authentication", err=True)
    from ..demo.app import build, launch
    from ..demo.segment import RequestFolders

    folders = RequestFolders()
    try:
        launch(build(cache, folders, max_pixels=max_pixels), host=host, port=port)
    finally:
        folders.cleanup()
