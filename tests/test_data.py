"""Data: torchvision's real CIFAR10 reader on a CIFAR-format fixture, the uint8 cache file,
device-resident reuse, and whole-batch augmentation (crop, flip, random erasing) checked
against what each transform is defined to do."""

import shutil
import subprocess
import sys

import pytest
import torch

from agent.params import validate
from conftest import ROOT, subprocess_env
from util.datasets import cache_path, load_decoded
from util.device_cache import (
    ERASE_AREA,
    Augmentation,
    DeviceLoader,
    apply_crop_flip,
    device_splits,
    forget_device_data,
    random_crop,
    random_crop_flip,
    random_erasing,
    random_flip,
)


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


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_cache_the_storage_refuses_is_a_note_and_the_data_is_used(tmp_path):
    """A file-size limit below the cache (digits: about 130 kB; the disk refuses it as a full
    one would): torch.save writing the file itself raised a C++ RuntimeError, which failed
    every run; now one note names the folder and the cause, the decoded set is returned, and
    no partial file is left. A process of its own: the limit applies to all it writes."""
    script = ("import resource, signal, sys\n"
              "from util.datasets import load_decoded\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails: EFBIG\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
              "print(tuple(load_decoded('digits', sys.argv[1]).train_x.shape))\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=100)
    assert result.returncode == 0 and result.stdout == "(1438, 1, 8, 8)\n", result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: dataset='digits' not cached in {tmp_path / 'cache'} (File too "
                     "large); it is decoded again next time"], result.stderr
    assert list((tmp_path / "cache").iterdir()) == []


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


@pytest.mark.parametrize("padding", [0, 1, 2, 4])
@pytest.mark.parametrize("shape", [(5, 3, 7, 9), (4, 1, 8, 8)])
def test_the_one_gather_crop_and_flip_is_the_transforms_definition(padding, shape):
    generator = torch.Generator().manual_seed(padding)
    images = torch.randint(1, 256, shape, dtype=torch.uint8, generator=generator)
    n, _, h, w = shape
    shift = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator)
    flip = torch.arange(n) % 2 == 1
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    for flips in (None, flip):
        expected = torch.stack([
            padded[i, :, int(shift[0, i]):int(shift[0, i]) + h,
                   int(shift[1, i]):int(shift[1, i]) + w] for i in range(n)])
        if flips is not None:
            expected = torch.stack([e.flip(2) if f else e for e, f in zip(expected, flips)])
        out = apply_crop_flip(images, padding, shift if padding else None, flips)
        assert torch.equal(out, expected)


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


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_crop_is_a_window_of_the_zero_padded_image(padding):
    images = torch.randint(1, 256, (16, 2, 7, 7), dtype=torch.uint8)
    out = random_crop(images, padding, torch.Generator().manual_seed(padding))
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = set()
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                 if torch.equal(out[i], padded[i, :, dy:dy + 7, dx:dx + 7])]
        assert found, i
        offsets.add(found[0])
    assert len(offsets) > 3  # the offsets vary between images


def test_flip_mirrors_about_half_of_the_images():
    images = torch.randint(0, 256, (400, 1, 5, 5), dtype=torch.uint8)
    out = random_flip(images, torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, images)]
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, images)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 150 < sum(mirrored) < 250


def test_random_erasing_blanks_one_rectangle_of_the_drawn_size():
    n, h, w = 2000, 28, 28
    images = torch.ones(n, 1, h, w)
    out = random_erasing(images, 1.0, torch.Generator().manual_seed(0))
    erased = out[:, 0] == 0
    assert erased.flatten(1).any(1).all()  # probability 1: every image
    fractions = []
    for mask in erased[:200]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all()  # one solid rectangle, nothing outside it
        fractions.append(mask.sum().item() / (h * w))
    # Zhong et al.'s area range; clipping the sides to the image only makes it smaller.
    assert max(fractions) <= ERASE_AREA[1] + 0.03 and min(fractions) >= 0.01
    assert 0.08 < sum(fractions) / len(fractions) < ERASE_AREA[1]
    assert torch.equal(random_erasing(images, 0.0, torch.Generator()), images)
    half = random_erasing(images, 0.5, torch.Generator().manual_seed(1))
    assert 900 < (half == 0).flatten(1).any(1).sum() < 1100


def test_augmentation_parameters_reach_the_loader(tmp_path):
    plain = Augmentation.from_config(validate({"random_erasing": 0.25}))
    assert plain == Augmentation(crop_padding=0, flip=False, erasing=0.25)
    clothes = Augmentation.from_config(validate({"augment": True, "crop_padding": 2}))
    assert clothes == Augmentation(crop_padding=2, flip=True, erasing=0.0)
    no_flip = Augmentation.from_config(validate({"augment": True, "flip": False}))
    assert no_flip == Augmentation(crop_padding=4, flip=False) and not Augmentation()

    forget_device_data()
    splits = device_splits("digits", str(tmp_path), torch.device("cpu"), 0.1)
    loader = DeviceLoader(splits.train_x, splits.train_y, splits.mean, splits.std, 64,
                          augment=Augmentation(erasing=1.0),
                          generator=torch.Generator().manual_seed(0))
    images, _ = next(iter(loader))
    plain_images, _ = next(iter(DeviceLoader(splits.train_x, splits.train_y, splits.mean,
                                             splits.std, 64)))
    changed = (images != plain_images).flatten(1).any(1)
    assert changed.all() and (images[images != plain_images] == 0).all()


def test_a_pack_loaders_members_get_their_own_loaders_batches_bit_for_bit():
    """Members erasing or not, cropping by different paddings: member k's batches in a pack
    are those a DeviceLoader with its generator and augmentation gives it alone."""
    from util.device_cache import DeviceLoader, PackLoader

    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    labels = torch.arange(40) % 10
    mean, std = torch.tensor([0.4]), torch.tensor([0.3])
    for augmentations in ([Augmentation(erasing=0.5)] * 3,
                          [Augmentation(4, True, 0.3), Augmentation(2, False, 0.0),
                           Augmentation(0, False, 0.5)]):
        seeds = range(len(augmentations))
        pack = PackLoader(images, labels, mean, std, 16,
                          [torch.Generator().manual_seed(s) for s in seeds], augmentations)
        batches = list(pack)
        for k, augmentation in enumerate(augmentations):
            alone = DeviceLoader(images, labels, mean, std, 16, shuffle=True,
                                 augment=augmentation, drop_last=True,
                                 generator=torch.Generator().manual_seed(seeds[k]))
            alone_batches = list(alone)
            assert len(alone_batches) == len(batches) == 2
            for (x, y), (xk, yk) in zip(batches, alone_batches):
                assert torch.equal(x[:, k], xk) and torch.equal(y[:, k], yk)


def test_class_counts_known_without_files_are_those_the_files_decode_to(cifar_root, tmp_path):
    """util.datasets.class_count (what the report and agent.repeat use when a dataset's
    files are not on the machine) agrees with the classes decoded from the files where
    they are here (digits, Debian's Fashion-MNIST, the CIFAR-10-format fixture), and with
    the publishers' pages where they are not (MNIST 10, CIFAR-100 100)."""
    from util.datasets import DATASETS, class_count

    assert class_count("cifar10") == len(load_decoded("cifar10", cifar_root).classes) == 10
    here = {"digits": tmp_path, "fashion_mnist": tmp_path}
    for name, data_dir in here.items():
        assert class_count(name) == len(load_decoded(name, data_dir).classes) == 10, name
    assert (class_count("mnist"), class_count("cifar100")) == (10, 100)
    assert set(DATASETS) == set(here) | {"cifar10", "mnist", "cifar100"}
    assert class_count("imagenet") is None


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_run_on_a_cut_short_cache_decodes_the_set_again(tmp_path):
    """A run whose data_dir holds a cache cut short (a copy of data/ interrupted): the run
    failed with torch.load's traceback, exit code 1, and so did every later one; now it
    trains (exit 0) after one note naming the file, and leaves a whole cache."""
    command = [sys.executable, "-m", "agent.train", "--dataset", "digits", "--model", "dense",
               "--hidden", "8", "--epochs", "1", "--sinks", "[]", "--device", "cpu",
               "--data_dir", str(tmp_path / "data"), "--run_dir", str(tmp_path / "runs")]
    first = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                           text=True, timeout=100)
    assert first.returncode == 0, first.stderr
    cache = cache_path("digits", tmp_path / "data")
    cache.write_bytes(cache.read_bytes()[:1000])
    again = subprocess.run(command + ["--run_id", "again"], cwd=ROOT, env=subprocess_env(),
                           capture_output=True, text=True, timeout=100)
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith(f"note: dataset='digits': the cache {cache} "), again.stderr
    assert "Traceback" not in again.stderr
    assert load_decoded("digits", tmp_path / "data").train_x.shape == (1438, 1, 8, 8)
