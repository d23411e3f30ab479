"""The `vessa` entry point itself: --version, a bare `vessa`, -v anywhere, SIGTERM like Ctrl-C."""

from __future__ import annotations

import os
import signal

import matplotlib.figure
import pytest
from test_bank_and_evaluate_cli import write_case

from vessa import __version__
from vessa.cli import build_parser, main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"vessa {__version__}"


def test_bare_vessa_exits_2_like_a_bare_subcommand(capsys):
    assert main([]) == 2
    assert "usage: vessa" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bank"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv", [
    ["-v", "bank", "list", "b"],
    ["bank", "-v", "list", "b"],
    ["bank", "list", "b", "-v"],
    ["segment", "--image", "i.nrrd", "--bank", "b", "--text", "x", "--out", "o.seg.nrrd", "--verbose"],
])
def test_verbose_is_accepted_before_and_after_the_subcommand(argv):
    assert build_parser().parse_args(argv).verbose is True


def test_verbose_is_off_by_default():
    assert not getattr(build_parser().parse_args(["bank", "list", "b"]), "verbose", False)


def test_sigterm_while_writing_is_an_interrupt_that_removes_the_temporary_file(tmp_path, monkeypatch, capsys):
    _, ref = write_case(tmp_path, "ref")
    plot, scores = tmp_path / "dice.png", tmp_path / "s.csv"
    plot.write_bytes(b"old plot")
    scores.write_text("old scores")

    def killed_while_saving(figure, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed_while_saving)
    handler = signal.getsignal(signal.SIGTERM)
    code = main(["evaluate", "--pred", str(ref), "--ref", str(ref), "--csv", str(scores),
                 "--plot", str(plot)])
    assert code == 143 and "vessa evaluate: interrupted (SIGTERM)" in capsys.readouterr().err
    assert plot.read_bytes() == b"old plot" and scores.read_text() == "old scores"  # neither half of the set
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert signal.getsignal(signal.SIGTERM) is handler  # put back
