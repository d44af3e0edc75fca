import io
import sys

from nudiff.utils import progress_bar


def test_progress_redraws_rarely_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # like a nohup log
    out = io.StringIO()
    with progress_bar(total=1000, file=out) as bar:
        for _ in range(1000):
            bar.update(1)
    assert bar.mininterval == 30.0
    assert out.getvalue().count("\r") < 5  # tqdm's default would redraw many times
    with progress_bar(total=1, mininterval=0.5, file=out) as bar:
        assert bar.mininterval == 0.5  # an explicit choice wins


def test_atomic_files_get_a_normal_mode(tmp_path):
    import os
    import stat

    from nudiff.utils import write_text

    write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
