"""Data: torchvision's real CIFAR10 reader on a CIFAR-format fixture, the uint8 cache file,
device-resident reuse, and whole-batch augmentation."""

import shutil

import pytest
import torch

from util.datasets import cache_path, load_decoded
from util.device_cache import DeviceLoader, device_splits, forget_device_data, random_crop_flip


def test_cifar_fixture_goes_through_torchvision_and_into_the_cache(cifar_root):
    import torchvision

    real = torchvision.datasets.CIFAR10(str(cifar_root), train=True, download=False)
    decoded = load_decoded("cifar10", cifar_root)
    assert decoded.train_x.dtype == torch.uint8 and decoded.train_x.shape == (200, 3, 32, 32)
    assert decoded.test_x.shape == (60, 3, 32, 32)
    assert decoded.classes[0] == "airplane" and len(decoded.classes) == 10
    # Same pixels as torchvision's own decoding (HWC there, CHW here).
    assert torch.equal(decoded.train_x[7].permute(1, 2, 0), torch.as_tensor(real.data[7]))
    assert decoded.train_y.tolist() == list(real.targets)
    assert cache_path("cifar10", cifar_root).exists()

    # A second process reads the cache: it no longer needs the original files at all.
    shutil.rmtree(cifar_root / "cifar-10-batches-py")
    again = load_decoded("cifar10", cifar_root)
    assert torch.equal(again.train_x, decoded.train_x)


def test_missing_dataset_without_network_is_a_user_error(tmp_path):
    from util.errors import UserError

    with pytest.raises(UserError, match="dataset='mnist'"):
        load_decoded("mnist", tmp_path / "nothing-here")  # the download fails offline


def test_second_trial_in_a_process_reuses_the_device_tensors(tmp_path):
    forget_device_data()
    first = device_splits("digits", str(tmp_path), torch.device("cpu"), 0.1)
    second = device_splits("digits", str(tmp_path), torch.device("cpu"), 0.1)
    assert second.train_x.data_ptr() == first.train_x.data_ptr()
    other_split = device_splits("digits", str(tmp_path), torch.device("cpu"), 0.2)
    assert other_split.test_x.data_ptr() == first.test_x.data_ptr()  # raw tensors shared


def test_validation_split_is_fixed_and_disjoint(tmp_path):
    forget_device_data()
    splits = device_splits("digits", str(tmp_path), torch.device("cpu"), 0.1)
    assert len(splits.val_y) == round(1438 * 0.1)
    assert len(splits.train_y) + len(splits.val_y) == 1438
    flat = lambda x: {bytes(row.numpy()) for row in x.flatten(1)}  # noqa: E731
    assert len(flat(splits.val_x) & flat(splits.train_x)) < 5  # digits has a few duplicates


def test_crop_and_flip_move_pixels_within_the_padding():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6) + 1
    generator = torch.Generator().manual_seed(3)
    seen_shift = False
    for _ in range(20):
        out = random_crop_flip(images, generator)
        assert out.shape == images.shape and out.dtype == torch.uint8
        for i in range(2):
            values = set(out[i].unique().tolist()) - {0}  # 0 is the zero padding
            assert values <= set(images[i].unique().tolist())
            seen_shift |= not torch.equal(out[i], images[i]) and not torch.equal(
                out[i], images[i].flip(2))
    assert seen_shift


def test_loader_normalises_with_train_statistics_and_covers_every_image(tmp_path):
    forget_device_data()
    splits = device_splits("digits", str(tmp_path), torch.device("cpu"), 0.1)
    loader = DeviceLoader(splits.train_x, splits.train_y, splits.mean, splits.std, 100,
                          shuffle=True, generator=torch.Generator().manual_seed(0))
    images = torch.cat([x for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == len(splits.train_y)
    assert abs(images.mean().item()) < 0.05 and abs(images.std().item() - 1) < 0.05
    assert torch.equal(labels.sort().values, splits.train_y.sort().values)
    dropping = DeviceLoader(splits.train_x, splits.train_y, splits.mean, splits.std, 100,
                            drop_last=True)
    assert len(dropping) == len(splits.train_y) // 100
