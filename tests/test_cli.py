"""cli/: every exit code, --json, --quiet, shared options and environment variables.

These run in-process with the tiny test engine; test_end_to_end.py runs the real
console script with the real ResNet-50.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import tiny_engine
from dupecheck.cli import app
from helpers import LAYOUT_DIRS, jpeg_bytes, post, synthetic_photo, write_tree

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


@pytest.fixture
def export(tmp_path):
    meta = LAYOUT_DIRS["D"]
    files = {f"{meta}/posts_1.json": [post(f"media/posts/2024/{s}.jpg", 1700000000 + s,
                                           f"caption {s} <b>[bold]x[/bold]</b>")
                                      for s in (1, 2, 3)]}
    files.update({f"media/posts/2024/{s}.jpg": jpeg_bytes(synthetic_photo(s)) for s in (1, 2, 3)})
    return write_tree(tmp_path / "export", files)


@pytest.fixture
def indexed(tmp_path, export, tiny_weights):
    idx = tmp_path / "idx"
    result = invoke("index", str(export), "--index", str(idx), "--model", "tiny-test",
                    "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    return idx


@pytest.fixture
def candidates(tmp_path, export):
    posted = tmp_path / "posted.jpg"
    posted.write_bytes((export / "media/posts/2024/2.jpg").read_bytes())
    new = tmp_path / "new.jpg"
    new.write_bytes(jpeg_bytes(synthetic_photo(99)))
    return posted, new


def test_index_prints_a_summary_and_json(tmp_path, export, tiny_weights):
    idx = tmp_path / "i2"
    result = invoke("index", str(export), "--index", str(idx), "--model", "tiny-test",
                    "--weights", str(tiny_weights), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["photos"], doc["embedded"], doc["reused"], doc["videos"]) == (3, 3, 0, 0)
    assert doc["layouts"] == ["D"]
    plain = invoke("index", str(export), "--index", str(idx), "--model", "tiny-test",
                   "--weights", str(tiny_weights))
    assert plain.exit_code == 0
    assert "photos in the index" in plain.stdout and "reused" in plain.stdout


def test_check_new_photo_exits_0(indexed, candidates):
    _, new = candidates
    result = invoke("check", str(new), "--index", str(indexed), "--threshold", "1.0")
    assert result.exit_code == 0, result.output
    assert ": new (not posted yet)" in " ".join(result.stdout.split())


def test_check_posted_photo_exits_1_with_json(indexed, candidates):
    posted, new = candidates
    result = invoke("check", str(posted), str(new), "--index", str(indexed), "--json",
                    "--top-k", "2", "--threshold", "1.0")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "tiny-test" and doc["threshold"] == 1.0
    first, second = doc["results"]
    assert first["photo"] == str(posted) and first["verdict"] == "exact"
    assert second["verdict"] == "new"
    top = first["matches"][0]
    assert set(top) >= {"rank", "score", "pdq_distance", "evidence", "kind", "taken_at",
                        "caption", "carousel_index", "path"}
    assert (top["rank"], top["evidence"], top["path"], top["kind"]) == (
        1, "exact", "media/posts/2024/2.jpg", "post")
    assert top["caption"] == "caption 2 <b>[bold]x[/bold]</b>"  # whole, unescaped in JSON
    assert top["taken_at"] == "2023-11-14T22:13:22+00:00"
    assert len(first["matches"]) == 2 and first["matches"][1]["evidence"] is None
    assert all(m["evidence"] is None for m in second["matches"])  # new still lists nearest


def test_quiet_prints_nothing_but_the_exit_code_speaks(indexed, candidates):
    posted, new = candidates
    result = invoke("check", "--quiet", str(posted), "--index", str(indexed))
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "")
    result = invoke("check", "-q", str(new), "--index", str(indexed), "-t", "1.0")
    assert (result.exit_code, result.stdout) == (0, "")


def test_unreadable_photo_exits_2_and_the_others_are_still_checked(indexed, candidates,
                                                                    tmp_path):
    posted, _ = candidates
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 10)
    result = invoke("check", str(bad), str(posted), "--index", str(indexed), "--json")
    assert result.exit_code == 2  # 2 beats 1: the highest wins
    assert "bad.jpg: not a photo" in result.stderr
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert [r["verdict"] for r in doc["results"]] == [None, "exact"]


@pytest.mark.parametrize("args", [["check"], ["check", "x.jpg", "--top-k", "0"],
                                  ["check", "x.jpg", "--threshold", "1.5"], ["nonsense"],
                                  ["index"]])
def test_bad_usage_exits_2(args, indexed):
    result = invoke(*args, "--index", str(indexed)) if args[0] != "nonsense" else invoke(*args)
    assert result.exit_code == 2


def test_no_index_exits_3(tmp_path, candidates):
    posted, _ = candidates
    result = invoke("check", str(posted), "--index", str(tmp_path / "none"))
    assert result.exit_code == 3
    assert "no index here yet" in result.stderr
    assert invoke("info", "--index", str(tmp_path / "none")).exit_code == 3


def test_other_weights_exit_3(indexed, candidates, tmp_path):
    posted, _ = candidates
    other = tiny_engine.write_weights(tmp_path / "other.npy", seed=5)
    result = invoke("check", str(posted), "--index", str(indexed), "--weights", str(other))
    assert result.exit_code == 3
    assert "not the weights this index was built with" in result.stderr


def test_weights_rewritten_in_place_with_the_same_size_and_mtime_are_refused(
        indexed, candidates, tiny_weights):
    """The SHA-256 cache must not be fooled by a file whose size and mtime were kept."""
    import os

    posted, _ = candidates
    assert invoke("check", "-q", str(posted), "--index", str(indexed), "--weights",
                  str(tiny_weights)).exit_code == 1  # the hash is now cached
    st = os.stat(tiny_weights)
    data = bytearray(tiny_weights.read_bytes())
    data[-1] ^= 0x01
    tiny_weights.write_bytes(bytes(data))
    os.utime(tiny_weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(tiny_weights)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    result = invoke("check", "-q", str(posted), "--index", str(indexed), "--weights",
                    str(tiny_weights))
    assert result.exit_code == 3
    assert "not the weights this index was built with" in result.stderr


def test_missing_weights_exit_3(indexed, candidates, tiny_weights):
    posted, _ = candidates
    tiny_weights.unlink()  # the file the index remembers is gone, and tiny has no download
    result = invoke("check", str(posted), "--index", str(indexed))
    assert result.exit_code == 3
    assert "--weights" in result.stderr


def test_model_not_in_index_exits_3(indexed, candidates):
    posted, _ = candidates
    result = invoke("check", str(posted), "--index", str(indexed), "--model", "resnet50")
    assert result.exit_code == 3
    assert "holds no 'resnet50' embeddings" in result.stderr


def test_corrupt_index_exits_3(indexed, candidates):
    posted, _ = candidates
    gen = (indexed / "CURRENT").read_text().split()[0]
    (indexed / gen / "embeddings-tiny-test.npy").write_bytes(b"\x93NUMPY garbage")
    result = invoke("check", str(posted), "--index", str(indexed))
    assert result.exit_code == 3 and "embeddings-tiny-test.npy" in result.stderr


def test_index_exit_codes(tmp_path, tiny_weights, export):
    bad = tmp_path / "notes.txt"
    bad.write_text("hi")
    result = invoke("index", str(bad), "--index", str(tmp_path / "i"), "--model", "tiny-test",
                    "--weights", str(tiny_weights))
    assert result.exit_code == 2 and "not a zip file or a folder" in result.stderr
    result = invoke("index", str(export), "--index", str(tmp_path / "i"), "--model",
                    "tiny-test", "--weights", str(tmp_path / "absent.npy"))
    assert result.exit_code == 3 and "absent.npy" in result.stderr
    # An unreadable archive is bad usage even where no weights could be had.
    result = invoke("index", str(tmp_path / "absent.zip"), "--index", str(tmp_path / "i"))
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
    # A name with [brackets] is printed as it is, not taken for markup.
    result = invoke("index", str(tmp_path / "[bold]export[/bold].zip"), "--index",
                    str(tmp_path / "i"))
    assert result.exit_code == 2 and "[bold]export[/bold].zip" in result.stderr
    result = invoke("index", str(export), "--index", str(tmp_path / "i"), "--model", "vgg")
    assert result.exit_code == 2 and "unknown model" in result.stderr


def test_env_vars_set_index_and_weights(tmp_path, export, tiny_weights, candidates):
    posted, _ = candidates
    env = {"DUPECHECK_INDEX": str(tmp_path / "envidx"), "DUPECHECK_WEIGHTS": str(tiny_weights)}
    assert invoke("index", str(export), "--model", "tiny-test", env=env).exit_code == 0
    assert (tmp_path / "envidx" / "CURRENT").exists()
    result = invoke("check", "-q", str(posted), env={"DUPECHECK_INDEX": env["DUPECHECK_INDEX"]})
    assert result.exit_code == 1  # the index remembers model and weights


def test_default_index_location_is_the_user_data_dir(tmp_path, export, tiny_weights,
                                                     monkeypatch):
    import os
    from pathlib import Path

    result = invoke("index", str(export), "--model", "tiny-test", "--weights", str(tiny_weights))
    assert result.exit_code == 0
    # XDG_DATA_HOME is set for every test (conftest); platformdirs' user data dir is under it.
    expected = Path(os.environ["XDG_DATA_HOME"]) / "dupecheck" / "index"
    assert (expected / "CURRENT").exists()
    assert invoke("info", "--json").exit_code == 0  # found there with no --index


def test_info(indexed):
    result = invoke("info", "--index", str(indexed), "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["photos"] == 3 and doc["kinds"] == {"post": 3}
    assert doc["models"]["tiny-test"]["dim"] == 16
    assert doc["dates"]["first"].startswith("2023-11-14")
    text = invoke("info", "--index", str(indexed))
    assert "tiny-test" in text.stdout and "post" in text.stdout


def test_info_says_whether_weights_match(indexed, tiny_weights, tmp_path):
    other = tiny_engine.write_weights(tmp_path / "o.npy", seed=3)
    same = json.loads(invoke("info", "--index", str(indexed), "--weights", str(tiny_weights),
                             "--json").stdout)
    assert same["weights_match"] is True
    differ = invoke("info", "--index", str(indexed), "--weights", str(other))
    assert "do not match" in " ".join(differ.stdout.split())


def test_index_exits_3_on_a_corrupt_index_or_unusable_weights(indexed, export, tmp_path):
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not weights")
    result = invoke("index", str(export), "--index", str(indexed), "--model", "tiny-test",
                    "--weights", str(junk), "--rebuild")
    assert result.exit_code == 3 and "not a tiny-test checkpoint" in result.stderr
    (indexed / "CURRENT").write_text("gen-x 00")
    result = invoke("index", str(export), "--index", str(indexed), "--model", "tiny-test",
                    "--weights", str(tmp_path / "junk.npy"))
    assert result.exit_code == 3 and "--rebuild" in result.stderr


def test_captions_with_markup_are_shown_as_text(indexed, candidates):
    posted, _ = candidates
    result = invoke("check", str(posted), "--index", str(indexed))
    assert "[bold]x[/bold]" in result.stdout


def test_version_and_help():
    assert "dupecheck" in invoke("--version").stdout
    result = invoke("--help")
    assert result.exit_code == 0 and "check" in result.stdout and "index" in result.stdout


def test_help_names_every_registered_model():
    """--help lists the models from defaults.MODEL_NAMES (the CLI defines its options
    before it imports numpy), which must be the registry's."""
    import subprocess
    import sys

    from dupecheck.defaults import DEFAULT_MODEL, MODEL_NAMES

    registered = subprocess.run(  # without the tests' own tiny engine
        [sys.executable, "-c", "import dupecheck.engines as e; print(*sorted(e.MODELS))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert registered == sorted(MODEL_NAMES) and DEFAULT_MODEL in registered
    text = " ".join(invoke("check", "--help").stdout.split())
    assert all(name in text for name in registered), text


@pytest.mark.parametrize("argv, one_thread", [
    (["dupecheck", "check", "x.jpg"], True),
    (["dupecheck", "--debug", "check", "x.jpg", "--top-k", "3"], True),
    (["dupecheck", "index", "export"], False),
    (["dupecheck", "dupes"], False),
])
def test_check_starts_numpy_with_one_blas_thread_and_other_commands_with_all(argv, one_thread):
    """A check's matrix work is small and numpy's OpenBLAS pool costs its start-up; the
    pool is sized when numpy is imported, so the CLI decides before importing anything."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.argv = " + repr(argv) + "; import dupecheck.cli, numpy; "
            "from threadpoolctl import threadpool_info; "
            "print(max(p['num_threads'] for p in threadpool_info() "
            "if p['internal_api'] == 'openblas'))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    cores = len(os.sched_getaffinity(0))
    assert (int(out) == 1) == (one_thread or cores == 1), out


def test_the_photos_a_check_names_are_found_before_typer_parses():
    """Option values (a weights file, an index folder) are never taken for photos."""
    from dupecheck.cli import _check_arguments

    assert _check_arguments(["dupecheck", "--debug", "check", "a.jpg", "--top-k", "3",
                             "--json", "b.heic", "--index=/x", "-t", "0.9"]) == ["a.jpg", "b.heic"]
    assert _check_arguments(["dupecheck", "check", "--weights", "w.pth", "-q", "a.jpg",
                             "--not", "media/1.jpg"]) == ["a.jpg"]
    assert _check_arguments(["dupecheck", "check", "-k3", "a.jpg", "-t0.9"]) == ["a.jpg"]
    assert _check_arguments(["dupecheck", "index", "export"]) is None
    assert _check_arguments(["dupecheck", "compare", "a.jpg", "b.jpg"]) is None


def test_the_cli_loads_without_the_library():
    """Commands import the library when they run (`--help` in a quarter second; a check
    opens its index and starts its model before the search and the report load)."""
    import subprocess
    import sys

    code = ("import sys; import dupecheck.cli; "
            "print(sorted(m for m in ('numpy', 'dupecheck.store', 'dupecheck.search', "
            "'dupecheck.report', 'dupecheck.archive', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_check_ends_without_the_interpreters_teardown(indexed, candidates, tmp_path):
    """The console script ends a check once its output is flushed and the atexit hooks
    have run, without the interpreter's teardown (which would also wait for every
    non-daemon thread): the output is whole, the exit code the documented one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    posted, new = candidates
    marker = tmp_path / "atexit-ran"
    tests = Path(__file__).parent
    code = ("import atexit, sys, threading, time; import tiny_engine; "
            f"atexit.register(lambda: open({str(marker)!r}, 'w').close()); "
            "threading.Thread(target=time.sleep, args=(120,)).start(); "
            f"sys.argv = ['dupecheck', 'check', {str(posted)!r}, {str(new)!r}, '--json', "
            f"'--index', {str(indexed)!r}]; "
            "import dupecheck.cli; dupecheck.cli.main()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)  # a teardown would wait 120 s for the thread
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["verdict"] for r in doc["results"]] == ["exact", "new"]
    assert marker.exists()


def test_text_from_captions_and_photos_never_reaches_the_terminal_as_controls_or_markup(
        tmp_path, indexed, tiny_weights):
    """A caption added from the phone with terminal escapes (a clipboard write, a screen
    clear, a window title, a bidi override) and an EXIF date that is markup: `check` and
    `info` show them as text, with no control character and no style obeyed."""
    from PIL import Image

    from dupecheck.imaging import decode

    hostile = ("[reverse]x[/reverse] \x1b]52;c;aGVsbG8=\x07 \x1b[2J\x1b]0;owned\x07 "
               "\u202etxt.exe \x9b31m")
    photo = tmp_path / "edited.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "[reverse]x[/rev] 12"  # 19 characters, not a date
    synthetic_photo(77).save(photo, "JPEG", exif=exif)
    invoke("add", str(photo), "--caption", hostile, "--index", str(indexed), "--weights",
           str(tiny_weights), "--model", "tiny-test")
    check = invoke("check", str(photo), "--index", str(indexed), "--weights", str(tiny_weights),
                   "--model", "tiny-test", env={"COLUMNS": "300"})
    assert check.exit_code == 1, check.output
    info = invoke("info", "--index", str(indexed))
    for text in (check.stdout, info.stdout, check.stderr):
        assert not any(c in text for c in "\x1b\x07\x9b\u202e"), repr(text)
    assert decode(photo.read_bytes(), "edited.jpg").taken_at is None  # its EXIF is no date
    assert "\\x1b]52;c;aGVsbG8=\\x07" in check.stdout and "[reverse]x[/reverse]" in check.stdout
    doc = json.loads(invoke("check", str(photo), "--index", str(indexed), "--weights",
                            str(tiny_weights), "--model", "tiny-test", "--json").stdout)
    top = doc["results"][0]["matches"][0]
    assert top["caption"] == hostile  # --json keeps the text as it is (JSON escapes it)
    assert top["taken_at"] is None or top["taken_at"][:4].isdigit()
