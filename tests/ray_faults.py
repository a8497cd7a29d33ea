"""A fault for the Ray tests, installed in every Ray worker process by ``worker_process_setup_hook``.

A worker that is about to read the image named by SEGKIT_TEST_DIE_ON exits abruptly (as a killed
or crashed process does), once: the marker file SEGKIT_TEST_DIE_MARKER records that it happened,
so Ray's retry of the same images on a restarted worker succeeds.
"""

import os
from pathlib import Path


def die_once():
    target, marker = os.environ.get("SEGKIT_TEST_DIE_ON"), os.environ.get("SEGKIT_TEST_DIE_MARKER")
    if not target or not marker:
        return
    import segkit.imageio

    read_image = segkit.imageio.read_image

    def read_or_die(path, *args, **kwargs):
        if Path(path).name == target and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        return read_image(path, *args, **kwargs)

    segkit.imageio.read_image = read_or_die
