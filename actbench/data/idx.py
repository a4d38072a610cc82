"""The IDX image sets, Fashion-MNIST and MNIST: find, verify and decode their four files, and
cache the decoded arrays; the splits and batches are every dataset's (actbench.data.memory)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from actbench.data.memory import InMemoryData, cached
from actbench.errors import DataError

SPLITS = {"train": "train", "test": "t10k"}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
INPUT_SHAPE, N_CLASSES = (1, 28, 28), 10
# sha256 of the decoded (not gzipped) files: distributors recompress the .gz, the content is what matters.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FULL_SIZE = {"train": 60000, "t10k": 10000}
MISSING_HINT = "{name} not found in {where}. Get it with {get} or let torchvision download it with `data.download=true`."


@dataclass(frozen=True)
class IdxSet:
    """What tells one IDX image set from another."""

    name: str  # as messages say it
    folder: str  # torchvision's class and its ROOT/<folder>/raw/
    sha256: dict[str, str] | None  # the full set's decoded files; None: format checks only
    get: str  # how to get the files without torchvision's download
    mean_std: tuple[float, float]  # the training pixels' in [0, 1], for normalize=standardize


FASHION = IdxSet("Fashion-MNIST", "FashionMNIST", FASHION_MNIST_SHA256, "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu)", (0.2860, 0.3530))
MNIST_SET = IdxSet("MNIST", "MNIST", None, "its four .gz files from an MNIST mirror put into data.root", (0.1307, 0.3081))


# ---------------------------------------------------------------- files


def _stem(prefix: str, kind: str) -> str:
    return f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def candidate_dirs(root: str | None, system_dirs, spec: IdxSet = FASHION) -> list[Path]:
    """Where to look, in order: the configured root (torchvision's layout, then a plain folder),
    then system folders such as Debian's dataset-fashion-mnist."""
    dirs = []
    if root:
        r = Path(root).expanduser()
        dirs += [r / spec.folder / "raw", r]
    dirs += [Path(d) for d in system_dirs or ()]
    return dirs


def find_files(dirs: list[Path]) -> dict[str, Path] | None:
    """The first folder holding all four files (unpacked or .gz) wins."""
    for d in dirs:
        found = {}
        for prefix in SPLITS.values():
            for kind in ("images", "labels"):
                stem = _stem(prefix, kind)
                path = next((p for p in (d / stem, d / f"{stem}.gz") if p.is_file()), None)
                if path is None:
                    break
                found[stem] = path
        if len(found) == 4:
            return found
    return None


def read_idx(path: Path, expect_magic: int) -> np.ndarray:
    """Decode one IDX file (optionally gzipped), checking magic number and size."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: unreadable or truncated ({e})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expect_magic:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    header = 4 + 4 * ndim
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: size {len(raw)} bytes does not match its header {dims} (truncated?)")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def check_content(path: Path, stem: str, array: np.ndarray, spec: IdxSet = FASHION) -> None:
    prefix = stem.split("-")[0]
    if array.shape[0] == FULL_SIZE[prefix]:
        digest = hashlib.sha256(idx_header(array) + array.tobytes()).hexdigest()
        if spec.sha256 and digest != spec.sha256[stem]:
            raise DataError(f"{path}: right size but its content is not {spec.name}'s (sha256 {digest[:12]}...)")
        if spec is not FASHION and digest == FASHION.sha256[stem]:  # the same file names: a folder of the other set
            raise DataError(f"{path}: holds Fashion-MNIST, not {spec.name}")


def idx_header(array: np.ndarray) -> bytes:
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)


def decode(files: dict[str, Path], verify_checksum: bool = True, spec: IdxSet = FASHION) -> dict[str, np.ndarray]:
    """Read and verify the four files into {train_x, train_y, test_x, test_y} uint8 arrays."""
    out = {}
    for split, prefix in SPLITS.items():
        img_stem, lab_stem = _stem(prefix, "images"), _stem(prefix, "labels")
        x = read_idx(files[img_stem], IMAGE_MAGIC)
        y = read_idx(files[lab_stem], LABEL_MAGIC)
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{files[img_stem]}: images are {tuple(x.shape)}, expected (N, 28, 28)")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{files[lab_stem]}: {len(y)} labels for {len(x)} images")
        if y.size and int(y.max()) >= N_CLASSES:
            raise DataError(f"{files[lab_stem]}: label {int(y.max())} outside 0..{N_CLASSES - 1}")
        if verify_checksum:
            check_content(files[img_stem], img_stem, x, spec)
            check_content(files[lab_stem], lab_stem, y, spec)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def _cache_path(cache_dir: Path, files: dict[str, Path], verified: bool = True, spec: IdxSet = FASHION) -> Path:
    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files.values())
    # arrays decoded without the checksum are cached apart: a run that asks for it never gets them
    key += "" if verified else "|unverified"
    return cache_dir / f"{spec.name.lower()}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def load_arrays(root=None, system_dirs=(), download=False, cache_dir=None, verify_checksum=True, spec: IdxSet = FASHION) -> dict[str, np.ndarray]:
    """Find, verify and decode an IDX set; decoded arrays are cached so later runs skip gunzip."""
    dirs = candidate_dirs(root, system_dirs, spec)
    files = find_files(dirs)
    if files is None and download:
        if not root:
            raise DataError("data.download=true needs data.root to say where to put the files")
        files = _download(Path(root).expanduser(), dirs, spec)
    if files is None:
        raise DataError(MISSING_HINT.format(name=spec.name, get=spec.get, where=", ".join(str(d) for d in dirs) or "no folder (data.root unset)"))
    cache = _cache_path(Path(cache_dir).expanduser(), files, verify_checksum, spec) if cache_dir else None
    return cached(cache, lambda: decode(files, verify_checksum, spec))


def _download(root: Path, dirs: list[Path], spec: IdxSet = FASHION) -> dict[str, Path]:
    import torchvision.datasets

    dataset = getattr(torchvision.datasets, spec.folder)
    try:
        dataset(str(root), train=True, download=True)
        dataset(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        reason = " ".join(str(e).split())  # torchvision puts the cause on the lines after the first
        raise DataError(
            f"{spec.name} could not be downloaded into {root} ({type(e).__name__}: {reason[:240]}). Get it with "
            f"{spec.get}, or put its four .gz files into data.root."
        ) from None
    files = find_files(dirs)
    if files is None:
        raise DataError(MISSING_HINT.format(name=spec.name, get=spec.get, where=", ".join(str(d) for d in dirs)))
    return files


# ---------------------------------------------------------------- tensors and batches


def to_float(x: np.ndarray, normalize: str, mean_std: tuple[float, float] = FASHION.mean_std) -> torch.Tensor:
    """uint8 images [N, 28, 28] -> float32 [N, 1, 28, 28] (one channel), scaled once for the whole run."""
    t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).float().div_(255.0)
    if normalize == "standardize":  # by the training pixels' mean and std
        t.sub_(mean_std[0]).div_(mean_std[1])
    elif normalize != "scale":
        raise ValueError(f"data.normalize must be 'scale' or 'standardize', got {normalize!r}")
    return t


class FashionMNIST(InMemoryData):
    """Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images of clothing,
    28x28 grey, 10 classes; found in `root` (torchvision's layout or a plain folder, .gz or
    unpacked), then in `system_dirs`, then downloaded by torchvision where `download` allows."""

    INPUT_SHAPE = INPUT_SHAPE
    N_CLASSES = N_CLASSES
    SPEC = FASHION

    @classmethod
    def sizes(cls, cfg_data) -> dict[str, int]:
        return {"train": FULL_SIZE["train"], "test": FULL_SIZE["t10k"]}

    def __init__(self, seeds: list[int], root: str | None = None, system_dirs=(), download: bool = False,
                 cache_dir: str | None = None, verify_checksum: bool = True, normalize: str = "scale", **common):
        super().__init__(seeds, **common)
        self.source = dict(root=root, system_dirs=system_dirs, download=download, cache_dir=cache_dir, verify_checksum=verify_checksum)
        self.normalize = normalize

    def load(self) -> dict[str, torch.Tensor]:
        arrays = load_arrays(**self.source, spec=self.SPEC)
        return {"train_x": to_float(arrays["train_x"], self.normalize, self.SPEC.mean_std), "train_y": torch.from_numpy(arrays["train_y"].astype(np.int64)),
                "test_x": to_float(arrays["test_x"], self.normalize, self.SPEC.mean_std), "test_y": torch.from_numpy(arrays["test_y"].astype(np.int64))}

    def describe(self, arrays: dict[str, torch.Tensor]) -> str:
        files = find_files(candidate_dirs(self.source["root"], self.source["system_dirs"], self.SPEC))
        where = next(iter(files.values())).parent if files else self.source["root"]
        checked = "verified" if self.source["verify_checksum"] and self.SPEC.sha256 else "checked (content not verified)"
        return f"{self.SPEC.name}: {len(arrays['train_x'])} train + {len(arrays['test_x'])} test images, {checked}, in {where}"


class MNIST(FashionMNIST):
    """MNIST (LeCun et al. 1998): 60,000 training and 10,000 test images of handwritten digits,
    28x28 grey, 10 classes; the same files, folders and download as Fashion-MNIST's. Its content
    is checked for format, not against a checksum."""

    SPEC = MNIST_SET
