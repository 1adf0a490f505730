"""The report's figures and Grad-CAM on real data: every figure function writes a PNG that
reads back, edge cases included; Grad-CAM maps are well-formed, localise the evidence, and
leave the model as they found it."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import pytest
import torch
from torch import nn

from agent.report import figures
from agent.params import validate
from nn.gradcam import grad_cam, last_conv_layer
from nn.models import MODELS
from util.datasets import DATASETS
from util.device_cache import DeviceLoader

pytestmark = pytest.mark.timeout(60)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_size: int = 150) -> None:
    assert path.exists() and path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert min_size <= height <= 4000 and min_size <= width <= 4000, pixels.shape
    assert pixels.std() > 0.01  # something was drawn, not a blank canvas


@pytest.fixture(scope="module")
def digits():
    return DATASETS["digits"](Path("unused"))  # scikit-learn's copy: no files, no network


@pytest.fixture(scope="module")
def trained_cnn(digits):
    """A cnn from the registry, trained for a few dozen steps on the digits set."""
    torch.manual_seed(0)
    cfg = validate({"channels": [8, 16]})
    model = MODELS["cnn"](cfg, (1, 8, 8), 10)
    pixels = digits.train_x.float() / 255
    mean, std = pixels.mean().view(1), pixels.std().view(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(3):
        for images, labels in DeviceLoader(digits.train_x, digits.train_y, mean, std, 64,
                                           shuffle=True, drop_last=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    test_images, test_labels = next(iter(DeviceLoader(digits.test_x, digits.test_y, mean, std,
                                                      len(digits.test_y))))
    return model, test_images, test_labels


# ---------------------------------------------------------------- figures

def test_class_histograms_of_digits(digits, tmp_path):
    train = [int((digits.train_y == c).sum()) for c in range(10)]
    test = [int((digits.test_y == c).sum()) for c in range(10)]
    path = figures.class_histograms(train, test, digits.classes, tmp_path / "hist.png")
    assert path == tmp_path / "hist.png"
    assert_png(path)


RUNS = [  # a sweep's rows: categorical (str, bool, list), a log-range lr, a linear one
    {"optimizer": "sgd", "lr": 1e-1, "batch_size": 32, "augment": True, "channels": [8, 16],
     "val/acc": 0.91},
    {"optimizer": "adam", "lr": 1e-3, "batch_size": 128, "augment": False,
     "channels": [16, 32], "val/acc": 0.95},
    {"optimizer": "sam", "lr": 1e-5, "batch_size": 64, "augment": True, "channels": [8, 16],
     "val/acc": 0.42},
    {"optimizer": "adam", "lr": 3e-4, "batch_size": None, "val/acc": 0.88},  # missing values
    {"optimizer": "sgd", "lr": 2.0, "batch_size": 256, "augment": False, "channels": [8, 16],
     "val/acc": math.nan},  # no metric: skipped
]
AXES = ["optimizer", "lr", "batch_size", "augment", "channels"]


def test_parallel_axes_scale_categories_and_decades():
    categorical = figures._Axis("optimizer", [r.get("optimizer") for r in RUNS])
    assert categorical.categorical and categorical.categories == ["adam", "sam", "sgd"]
    assert [categorical.position(v) for v in ("adam", "sam", "sgd")] == [0.0, 0.5, 1.0]
    log = figures._Axis("lr", [1e-1, 1e-3, 1e-5])
    assert log.log and log.label == "lr (log)" and log.position(1e-3) == pytest.approx(0.5)
    assert [text for _, text in log.ticks()] == ["1e-05", "0.0001", "0.001", "0.01", "0.1"]
    linear = figures._Axis("batch_size", [32, 128, None, 64])
    assert not linear.log and linear.position(32) == 0 and linear.position(128) == 1
    assert math.isnan(linear.position(None))
    flags = figures._Axis("augment", [True, False, None])
    assert flags.categories == [False, True] and flags.position(True) == 1.0


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_parallel_coordinates_mixed_axes(tmp_path, goal):
    path = figures.parallel_coordinates(RUNS, AXES, "val/acc", goal, tmp_path / "pc.png",
                                        "all runs")
    assert_png(path)


@pytest.mark.parametrize("rows", [[], [RUNS[0]], [{"lr": 0.1}]], ids=["none", "one", "no-metric"])
def test_parallel_coordinates_with_zero_or_one_row(tmp_path, rows):
    path = figures.parallel_coordinates(rows, AXES, "val/acc", "maximize", tmp_path / "pc.png",
                                        "edge")
    assert_png(path)


def test_metric_curves_by_group(tmp_path):
    series = {
        "convergent": [([1, 2, 3, 4], [2.3, 1.1, 0.6, 0.4]), ([1, 2, 3], [2.2, 0.9, 0.5])],
        "divergent": [([1, 2, 3], [2.3, 40.0, math.inf]), ([1, 2], [2.3, math.nan])],
        "empty": [],
    }
    assert_png(figures.metric_curves(series, "validation loss", tmp_path / "curves.png",
                                     "validation loss by group"))
    assert_png(figures.metric_curves({}, "validation loss", tmp_path / "none.png", "empty"))


def test_training_curves_two_runs(tmp_path):
    def history(rate: float) -> list[dict]:
        return [{"epoch": e, "train/loss": 2.3 * math.exp(-rate * e),
                 "val/loss": 2.3 * math.exp(-rate * e) + 0.1, "train/acc": 1 - math.exp(-rate * e),
                 "val/acc": 0.95 - math.exp(-rate * e), "lr": 0.1} for e in range(1, 6)]

    runs = [("abc123 (0.95)", history(0.8)), ("def456 (0.90)", history(0.4)),
            ("no-history", [])]
    assert_png(figures.training_curves(runs, tmp_path / "training.png"))


def test_confusion_and_per_class_from_a_trained_cnn(trained_cnn, digits, tmp_path):
    model, images, labels = trained_cnn
    predicted = model.eval()(images).argmax(1)
    matrix = [[int(((labels == t) & (predicted == p)).sum()) for p in range(10)]
              for t in range(10)]
    assert sum(map(sum, matrix)) == len(labels)
    accuracies = [row[i] / max(sum(row), 1) for i, row in enumerate(matrix)]
    assert_png(figures.confusion_matrix_figure(matrix, digits.classes, tmp_path / "cm.png",
                                               "confusion matrix (test set)"))
    assert_png(figures.per_class_accuracy_figure(accuracies, digits.classes,
                                                 tmp_path / "per_class.png"))


def test_confusion_matrix_many_classes_without_counts(tmp_path):
    k = 30
    matrix = [[5 if i == j else (1 if j == (i + 1) % k else 0) for j in range(k)]
              for i in range(k)]
    matrix[3] = [0] * k  # a class absent from the test set: its row stays zero
    assert_png(figures.confusion_matrix_figure(matrix, [f"class {i}" for i in range(k)],
                                               tmp_path / "cm.png", "30 classes"))


def test_weight_norms_best_against_worst(trained_cnn, tmp_path):
    from agent.trial.metering import weight_norms

    model = trained_cnn[0]
    norms = {k[len("weight_norm/"):]: v for k, v in weight_norms(model).items()
             if k != "weight_norm/global"}
    best = [norms, {k: v * 1.1 for k, v in norms.items()}]
    worst = [{k: v * 3 for k, v in norms.items()}, {}]  # a run without norms adds nothing
    assert_png(figures.weight_norms_figure(best, worst, tmp_path / "norms.png"))
    assert_png(figures.weight_norms_figure([], [], tmp_path / "empty.png"))


# ---------------------------------------------------------------- Grad-CAM

def test_grad_cam_maps_of_a_trained_cnn(trained_cnn, digits, tmp_path):
    model, images, labels = trained_cnn
    images = images[:6]
    model.train()
    layer = last_conv_layer(model)
    hooks = len(layer._forward_hooks)
    cams = grad_cam(model, images)
    assert cams.shape == (6, 8, 8) and cams.dtype == torch.float32
    assert cams.min() >= 0 and cams.max() <= 1 and torch.isfinite(cams).all()
    assert all(m.max() == 1 or m.max() == 0 for m in cams)
    assert len(layer._forward_hooks) == hooks
    assert model.training and all(m.training for m in model.modules())
    predicted = model.eval()(images).argmax(1)
    titles = [f"true {digits.classes[t]} / pred {digits.classes[p]}"
              for t, p in zip(labels[:6].tolist(), predicted.tolist())]
    assert_png(figures.gradcam_grid(digits.test_x[:6].float() / 255, cams, titles,
                                    tmp_path / "gradcam.png"))


def test_grad_cam_same_under_channels_last(trained_cnn):
    model, images, _ = trained_cnn
    images = images[:8]
    plain = grad_cam(model, images)
    model_cl = MODELS["cnn"](validate({"channels": [8, 16]}), (1, 8, 8), 10)
    model_cl.load_state_dict(model.state_dict())
    model_cl = model_cl.to(memory_format=torch.channels_last)
    cams = grad_cam(model_cl, images.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(plain, cams, atol=1e-5)


def test_gradcam_grid_colour_images(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 32, 32, generator=generator)
    cams = torch.rand(10, 32, 32, generator=generator)
    titles = [f"true airplane / pred automobile {i}" for i in range(10)]
    assert_png(figures.gradcam_grid(images, cams, titles, tmp_path / "colour.png"))


class TwoDetectors(nn.Module):
    """Feature k is input channel k (a 1x1 conv with identity weights, then an in-place ReLU);
    class k's score is feature k's spatial mean. So only where channel k is bright drives
    class k, and Grad-CAM for class k must light up exactly there."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x):
        return self.relu(self.conv(x)).mean(dim=(2, 3))


def test_grad_cam_localises_the_class_evidence():
    images = torch.zeros(1, 2, 16, 16)
    images[0, 0, 2:6, 2:6] = 1.0  # class 0's evidence: top left
    images[0, 1, 10:14, 9:15] = 0.5  # class 1's evidence: bottom right, weaker
    top_left = torch.zeros(16, 16, dtype=torch.bool)
    top_left[:8, :8] = True
    model = TwoDetectors()
    predicted = grad_cam(model, images)[0]  # class 0 wins (16 vs 12 on the mean)
    assert predicted[top_left].sum() / predicted.sum() > 0.95
    class_1 = grad_cam(model, images, target=torch.tensor([1]))[0]
    assert class_1[~top_left].sum() / class_1.sum() > 0.95
    assert class_1[10:14, 9:15].min() == 1.0 and predicted[2:6, 2:6].min() == 1.0


def test_grad_cam_without_evidence_is_zero():
    assert grad_cam(TwoDetectors(), torch.zeros(2, 2, 8, 8)).eq(0).all()


def test_grad_cam_removes_its_hook_and_restores_mode_on_error(trained_cnn):
    model, images, _ = trained_cnn
    model.train()
    model[-1].eval()  # a mixed-mode model: each module's own mode comes back
    layer = last_conv_layer(model)
    hooks = len(layer._forward_hooks)
    with pytest.raises((RuntimeError, IndexError)):
        grad_cam(model, images[:2], target=torch.tensor([3, 99]))  # no class 99
    assert len(layer._forward_hooks) == hooks
    assert model.training and not model[-1].training
    model[-1].train()


def test_last_conv_layer_needs_a_convolution():
    cnn = MODELS["cnn"](validate({"channels": [8, 16]}), (1, 8, 8), 10)
    assert last_conv_layer(cnn) is [m for m in cnn if isinstance(m, nn.Conv2d)][-1]
    dense = MODELS["dense"](validate({"hidden": 16}), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv_layer(dense)
