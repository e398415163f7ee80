"""from_torch: a torchvision-style map-style Dataset of PIL images (RGB, grayscale) or
tensors into an ImageDataset (checked against PIL and NumPy), in parallel, optionally
straight into a cache; then into an EpisodeSampler as a user would."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import metarobust as mr


class PilDataset(torch.utils.data.Dataset):
    """As torchvision's datasets without a transform: (PIL image, int label)."""

    def __init__(self, n=60, classes=6, size=(20, 14), mode="RGB", seed=0):
        rng = np.random.default_rng(seed)
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        self.arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]
        self.targets = [i % classes for i in range(n)]
        self.classes = [f"class{c}" for c in range(classes)]
        self.mode = mode

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return Image.fromarray(self.arrays[i], mode=self.mode), self.targets[i]


def _pil_reference(ds, size):
    out = []
    for a in ds.arrays:
        im = Image.fromarray(a, mode=ds.mode).resize((size, size), Image.Resampling.BOX)
        arr = np.asarray(im)
        out.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    return np.stack(out)


def test_rgb_pil_dataset_into_an_episode_sampler(tmp_path):
    source = PilDataset()
    ds = mr.data.from_torch(source, image_size=16, progress=False, workers=3)
    np.testing.assert_array_equal(ds.images, _pil_reference(source, 16))
    np.testing.assert_array_equal(ds.labels, source.targets)
    assert ds.class_names == source.classes and ds.image_shape == (3, 16, 16)
    sampler = mr.EpisodeSampler(ds, ways=3, shots=2, queries=4, seed=0)
    ep = sampler.sample(5)
    assert ep.support_x.shape == (6, 3, 16, 16)
    # each support image is the float view of the image of its class
    for x, y in zip(ep.support_x, ep.support_y):
        cls = int(ep.classes[y])
        matches = [i for i in np.flatnonzero(ds.labels == cls)
                   if np.array_equal(ds.images[i] / np.float32(255), x.numpy())]
        assert matches


def test_threads_do_not_change_the_result_and_cache_is_memory_mapped(tmp_path):
    source = PilDataset(n=150, mode="L")
    one = mr.data.from_torch(source, image_size=8, progress=False, workers=1)
    cached = mr.data.from_torch(source, image_size=8, progress=False, workers=4,
                                cache=tmp_path / "c")
    np.testing.assert_array_equal(one.images, cached.images)
    np.testing.assert_array_equal(one.images, _pil_reference(source, 8))
    assert isinstance(cached.images, np.memmap) and one.image_shape == (1, 8, 8)
    again = mr.data.load(tmp_path / "c")
    np.testing.assert_array_equal(again.labels, one.labels)


def test_tensor_items_float_and_uint8_and_mode_forcing():
    class Tensors(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            x = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(3, 4, 4) / 255 * (i % 3)
            return x, torch.tensor(i % 2)

    ds = mr.data.from_torch(Tensors(), progress=False)
    ref = np.stack([np.rint((np.arange(48, dtype=np.float32).reshape(3, 4, 4) / 255
                             * (i % 3)).astype(np.float64) * 255) for i in range(8)])
    np.testing.assert_array_equal(ds.images, ref.astype(np.uint8))
    assert ds.class_names == ["0", "1"]
    rgb = PilDataset(n=4, classes=2)
    gray = mr.data.from_torch(rgb, grayscale=True, progress=False)
    ref_l = np.stack([np.asarray(Image.fromarray(a).convert("L"))[None] for a in rgb.arrays])
    np.testing.assert_array_equal(gray.images, ref_l)


def test_bad_datasets_are_named():
    with pytest.raises(TypeError, match="dataset: expected a map-style Dataset"):
        mr.data.from_torch(iter([]))

    class Mixed(PilDataset):
        def __getitem__(self, i):
            im, y = super().__getitem__(i)
            return (im.resize((5, 5)) if i == 3 else im), y

    with pytest.raises(ValueError, match=r"dataset\[3\]: image of shape .*image_size"):
        mr.data.from_torch(Mixed(n=8), progress=False, workers=1)

    class BadLabel(PilDataset):
        def __getitem__(self, i):
            return super().__getitem__(i)[0], "cat"

    with pytest.raises(TypeError, match=r"dataset\[0\]: the label must be an int"):
        mr.data.from_torch(BadLabel(n=3), progress=False)

    class OutOfRange(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.full((1, 2, 2), 2.0), 0

    with pytest.raises(ValueError, match=r"dataset\[0\]: float images must lie in \[0, 1\]"):
        mr.data.from_torch(OutOfRange(), progress=False)
    with pytest.raises(ValueError, match="image_size"):
        mr.data.from_torch(PilDataset(n=2), image_size=0, progress=False)


def test_a_torchvision_dataset_with_and_without_to_tensor():
    tv = pytest.importorskip("torchvision")
    plain = tv.datasets.FakeData(size=12, image_size=(3, 10, 12), num_classes=3, random_offset=5)
    tensors = tv.datasets.FakeData(size=12, image_size=(3, 10, 12), num_classes=3,
                                   random_offset=5, transform=tv.transforms.ToTensor())
    a = mr.data.from_torch(plain, progress=False)
    b = mr.data.from_torch(tensors, progress=False, workers=2)
    # ToTensor's k / 255 comes back as k: both routes give the PIL bytes
    ref = np.stack([np.asarray(plain[i][0]).transpose(2, 0, 1) for i in range(12)])
    np.testing.assert_array_equal(a.images, ref)
    np.testing.assert_array_equal(b.images, ref)
    np.testing.assert_array_equal(a.labels, [int(plain[i][1]) for i in range(12)])


def test_a_pil_dataset_and_a_users_backbone_train_through_the_trainer(tmp_path):
    """As a user with a torchvision-style dataset and a network of their own would do."""
    from metarobust.config import TrainConfig
    from metarobust.train import Trainer

    classes = 8
    source = PilDataset(n=8 * classes, classes=classes)
    train_set = mr.data.from_torch(source, image_size=12, progress=False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    before = [p.detach().clone() for p in net.parameters()]
    cfg = TrainConfig(learner="protonet", ways=3, shots=2, queries=2, test_queries=2, steps=4,
                      val_every=2, val_episodes=2, device="cpu", seed=0)
    result = Trainer(cfg, tmp_path, progress=False, dataset=train_set, model=net).fit()
    assert result["steps"] == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert "image_size = 12" in (tmp_path / "config.toml").read_text()
