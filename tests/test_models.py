"""The MODELS registry (nn/models.py): every architecture names its layers (fc1, conv2, bn2,
head...), so state-dict keys, per-layer metrics and histograms say which layer they are."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agent.params import validate
from agent.trial.metering import GradientMeter, member_weight_histograms, parameters_by_layer
from nn.gradcam import last_conv_layer
from nn.models import MODELS
from nn.packed import pack_models
from packed_cases import MODEL_CASES, digits

# The layers that own parameters, per model kind, for the small cases of packed_cases.
EXPECTED_LAYERS = {
    "dense": ["fc1", "fc2", "fc3"],
    "cnn": ["conv1", "bn1", "conv2", "bn2", "head"],
    "skip_mlp": ["stem", "block1.norm", "block1.fc1", "block1.fc2",
                 "block2.norm", "block2.fc1", "block2.fc2", "block2.skip", "norm", "head"],
    "resnet": (["conv1", "bn1"]
               + [f"stage{s}.block{b}.{layer}" for s in range(1, 5) for b in (1, 2)
                  for layer in ("conv1", "bn1", "conv2", "bn2")
                  + (("shortcut.conv", "shortcut.bn") if s > 1 and b == 1 else ())]
               + ["head"]),
}


def _model(kind: str, **extra):
    return MODELS[kind](validate({**MODEL_CASES[kind], **extra}), (1, 8, 8), 10)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_layers_have_names_not_indices(kind):
    model = _model(kind, dropout=0.1)
    assert list(parameters_by_layer(model)) == EXPECTED_LAYERS[kind]
    for name, _ in model.named_modules():
        assert not any(part.isdigit() for part in name.split(".")), name
    assert all(key.split(".")[-1] in ("weight", "bias", "running_mean", "running_var",
                                      "num_batches_tracked") for key in model.state_dict())
    dropouts = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(n.rpartition(".")[2].startswith("drop") for n in dropouts)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_metrics_and_histograms_carry_layer_names(kind):
    model = _model(kind)
    x, y = digits()
    x, y = x[:32].float(), y[:32]
    pack = pack_models([model])  # the trial meters its members through their pack
    meter = GradientMeter(pack)
    F.cross_entropy(pack(x.unsqueeze(1))[:, 0], y).backward()
    meter.sample()
    (metrics,) = meter.epoch_metrics()
    assert {f"grad_norm/{n}" for n in EXPECTED_LAYERS[kind]} <= set(metrics)
    (histograms,) = member_weight_histograms(pack)
    first = EXPECTED_LAYERS[kind][0]
    assert f"weights/{first}" in histograms
    assert all(not key.rpartition("/")[2].split(".")[-1].isdigit() for key in histograms)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_models_map_images_to_logits(kind):
    model = _model(kind)
    x, _ = digits()
    assert model(x[:5].float()).shape == (5, 10)


def test_conv_models_expose_their_last_convolution_by_name():
    cnn = _model("cnn")
    assert last_conv_layer(cnn) is cnn.conv2
    resnet = _model("resnet")
    assert last_conv_layer(resnet) is resnet.stage4.block2.conv2


def test_weight_histograms_bin_every_member_as_numpy_does():
    """Each member's histogram, computed for the whole pack at once, equals np.histogram of
    that member's finite weights: a spread one, a constant one, one with NaN and infinities;
    a member whose layer has no finite value has no histogram of it."""
    np = pytest.importorskip("numpy")
    torch.manual_seed(0)
    pack = pack_models([MODELS["dense"](validate({"hidden": 8}), (1, 4, 4), 10)
                        for _ in range(5)])
    weight = pack.fc1.weight  # (5, 8, 16)
    with torch.no_grad():
        weight[1].mul_(100.0)
        weight[2].fill_(0.25)
        weight[3].view(-1)[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"),
                                               float("nan")])
        weight[4].fill_(float("nan"))
    histograms = member_weight_histograms(pack, bins=16)
    assert len(histograms) == 5 and "weights/fc1" not in histograms[4]
    assert {"weights/fc1", "weights/fc2", "weights/fc3"} <= set(histograms[0])
    for k in range(4):
        values = weight[k].detach().double().flatten().numpy()
        finite = values[np.isfinite(values)]
        counts, edges = np.histogram(finite, bins=16)
        got = histograms[k]["weights/fc1"]
        assert got.counts == counts.tolist(), k
        np.testing.assert_allclose(got.edges, edges, rtol=1e-6, atol=1e-7)
        assert (got.num, got.min, got.max) == (len(finite), finite.min(), finite.max())
        assert got.sum == pytest.approx(finite.sum(), rel=1e-5, abs=1e-6)
        assert got.sum_squares == pytest.approx(np.square(finite).sum(), rel=1e-5)
