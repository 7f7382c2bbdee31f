"""Distillation: the loss, and one tiny student distilled from a tiny teacher on labelled and
unlabelled cells, with the teacher's outputs cached for the next student run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from morph.classify import load_model
from tests.training.test_train import _args, _config, _dataset
from training.train import distillation_loss, main, masked_cross_entropy
from training.unlabelled import UnlabelledSource, list_fields


def test_distillation_loss_is_zero_kl_when_student_copies_teacher() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    mask = torch.zeros_like(logits)
    target = torch.tensor([-1, -1])  # unlabelled: the teacher alone
    assert float(distillation_loss(logits, target, mask, logits.clone(), 0.0, 0.7, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.tensor([[-1.0, 0.5, 2.0], [0.3, 0.2, 0.1]])
    assert float(distillation_loss(logits, target, mask, other, 0.0, 0.7, 2.0)) > 0.1


def test_distillation_loss_ignores_labels_the_cell_cannot_take() -> None:
    logits = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[0.0, 0.0, -1e4]])  # the third label is not allowed (kind or stain)
    teacher = torch.tensor([[1.0, 0.0, 50.0]])  # the teacher's vote for it does not count
    target = torch.tensor([0])
    kd_only = distillation_loss(logits, target, mask, teacher, 0.0, 1.0, 1.0)
    assert float(kd_only) == pytest.approx(0.0, abs=1e-5)
    # weight 0: plain cross-entropy on the label
    ce = distillation_loss(logits, target, mask, teacher, 0.0, 0.0, 1.0)
    assert float(ce) == pytest.approx(float(masked_cross_entropy(logits, target, mask, 0.0)), rel=1e-5)


def test_unlabelled_fields_skip_the_held_out_part(tmp_path: Path) -> None:
    folder = tmp_path / "bcd"
    folder.mkdir()
    for n in range(1, 10):
        (folder / f"image-{n}.png").write_bytes(b"")
    src = UnlabelledSource(name="bcd", format="images", path=str(folder), holdout_every=3, max_fields=100)
    assert [p.stem for p in list_fields(src, tmp_path, set())] == [f"image-{n}" for n in (1, 2, 4, 5, 7, 8)]
    assert [p.stem for p in list_fields(src, tmp_path, {"image-1"})][0] == "image-2"


def test_a_tiny_student_is_distilled_and_the_teacher_cache_is_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _dataset(tmp_path / "d" / "toy")
    main(_args(_config(tmp_path, data), tmp_path / "teacher", "--max-steps", "1"))
    teacher = tmp_path / "teacher" / "model"
    unl = {"name": "toy-fields", "format": "images", "path": str(data / "images"), "max_fields": 2}
    cfg = _config(tmp_path, data, name="student", teacher={"model": str(teacher), "unlabelled": [unl]},
                  weights_dtype="float16")
    m = main(_args(cfg, tmp_path / "student", "--max-steps", "2"))
    run = tmp_path / "student" / "run"
    assert (run / "teacher_logits.npz").is_file() and (run / "unlabelled_cells.json").is_file()
    assert m["distillation"]["teacher"] == load_model(teacher).name
    student = load_model(tmp_path / "student" / "model")
    assert all("distilled from model" in p for p in student.provenance.values())
    assert next(student.net.parameters()).dtype == torch.float32  # float16 on disk, float32 in use
    with caplog.at_level(logging.INFO, logger="training.train"):
        main(_args(cfg, tmp_path / "student", "--max-steps", "1"))
    assert any("teacher logits read from" in r.getMessage() for r in caplog.records)
