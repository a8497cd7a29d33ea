"""Faults for the Ray tests, installed in every Ray worker process by ``worker_process_setup_hook``.

A worker that is about to read an image named in SEGKIT_TEST_DIE_ON, or to segment the third
batch of frames of a video named there, exits abruptly (as a killed or crashed process does),
once per name: a marker file of that name in the folder SEGKIT_TEST_DIE_MARKERS records that it
happened (and which process died), so Ray's retry of the same inputs on a restarted worker succeeds.
"""

import os
from pathlib import Path

VIDEO_BATCHES_BEFORE_DYING = 2  # streamed to the driver before the worker dies


def die_once():
    names, markers = os.environ.get("SEGKIT_TEST_DIE_ON"), os.environ.get("SEGKIT_TEST_DIE_MARKERS")
    if not names or not markers:
        return
    import segkit.imageio
    import segkit.video

    names = names.split(",")
    read_image, predicted_batches = segkit.imageio.read_image, segkit.video.predicted_batches

    def die_the_first_time(name):
        marker = Path(markers) / name
        if name in names and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)

    def read_or_die(path, *args, **kwargs):
        die_the_first_time(Path(path).name)
        return read_image(path, *args, **kwargs)

    def predict_or_die(segmenter, info, **kwargs):
        for k, batch in enumerate(predicted_batches(segmenter, info, **kwargs)):
            if k == VIDEO_BATCHES_BEFORE_DYING:
                die_the_first_time(info.path.name)
            yield batch

    segkit.imageio.read_image = read_or_die
    segkit.video.predicted_batches = predict_or_die
