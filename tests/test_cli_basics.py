"""CLI behaviour that needs no model: help, version, usage errors, offline failure."""

import os
import subprocess
import sys

from click.testing import CliRunner

from segkit._version import __version__
from segkit.cli import main

VERSION_LINE = f"segkit, version {__version__}\n"  # the exact version, not just "some version"


def _run(*args, env=None, timeout=60):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "segkit", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def test_help_and_version_do_not_import_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom segkit.cli import main\n"
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(main, ['clipseg', '--help']); assert r.exit_code == 0, r.output\n"
            f"r = CliRunner().invoke(main, ['--version']); assert r.output == {VERSION_LINE!r}, r.output\n"
            "bad = [m for m in ('torch', 'transformers', 'numpy', 'PIL') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_version_subprocess():
    proc = _run("--version")
    assert proc.returncode == 0 and proc.stdout == VERSION_LINE


def test_usage_errors_exit_2(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["clipseg"]).exit_code == 2
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    result = runner.invoke(main, ["clipseg", str(img)])
    assert result.exit_code == 2 and "--prompt" in result.output
    result = runner.invoke(main, ["clipseg", str(img), "--prompt", "a", "--save", "bogus"])
    assert result.exit_code == 2 and "bogus" in result.output
    result = runner.invoke(main, ["clipseg", str(img), "--prompt", "a", "--prompt-image", str(tmp_path / "no.png")])
    assert result.exit_code == 2


def test_unwritable_output_reported_before_loading(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    img = tmp_path / "x.png"
    img.write_bytes(b"")
    result = CliRunner().invoke(main, ["clipseg", str(img), "-p", "a", "-o", str(blocker / "out")])
    assert result.exit_code == 1
    assert "not writable" in result.output and "Traceback" not in result.output


def test_offline_missing_weights_fails_fast_with_fixes(tmp_path, examples_dir):
    env = {"HF_HOME": str(tmp_path / "hf"), "SEGKIT_CACHE": str(tmp_path / "cache")}
    image = examples_dir / "cat.jpg"
    for args in (["clipseg", str(image), "-p", "cat", "--offline"],
                 ["cutler", str(image), "--offline"]):
        proc = _run(*args, "-o", str(tmp_path / "out"), env=env)  # a retry loop would hit _run's timeout
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, proc.stderr
        assert "segkit models download" in lines[0] and "--weights" in lines[0]


def test_models_list(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "SEGKIT_CACHE": str(tmp_path / "cache")}
    proc = _run("models", env=env)
    assert proc.returncode == 0
    for name in ("clipseg-rd64-refined", "cutler-cascade", "oneformer-coco-dinat-l", "oneformer-ade20k-swin-l"):
        assert name in proc.stdout
    proc = _run("models", "download", "no-such-model", env=env)
    assert proc.returncode == 2 and "unknown model" in proc.stderr


def test_info():
    proc = _run("info")
    assert proc.returncode == 0 and "torch" in proc.stdout and "cpu" in proc.stdout
