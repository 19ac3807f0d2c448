"""A real English corpus that ships with the package: Python documentation prose."""

import functools
import gzip
import zlib

from keras_taskrobust.nlp.part_of_speech_grouper import DATA_DIR

CORPUS_PATH = DATA_DIR / "python_docs.tsv.gz"
SPLITS = ("train", "held_out", "all")


@functools.lru_cache(maxsize=1)
def _rows():
    if not CORPUS_PATH.exists():
        raise FileNotFoundError(
            f"The corpus file {CORPUS_PATH} is missing: it ships with "
            "keras-taskrobust as package data; reinstall with `pip install -e .`."
        )
    with gzip.open(CORPUS_PATH, "rt", encoding="utf-8") as f:
        return tuple(tuple(line.rstrip("\n").split("\t")) for line in f if line.strip())


def held_out(document, fraction=0.1):
    """Whether `document` belongs to the held-out split: a fixed hash of its name."""
    return zlib.crc32(document.encode("utf-8")) % 1000 < fraction * 1000


def load_python_docs(split="train", sections=None, held_out_fraction=0.1):
    """English sentences from the Python 3.11 documentation, offline.

    26.5k sentences (453k words) of prose from the reST sources of the
    Python documentation (Debian's `python3.11-doc`), cleaned of markup:
    code blocks, directives, tables and headings are dropped, inline roles
    and literals reduced to their text. They ship with the package (PSF
    licence: see `keras_taskrobust/nlp/data/NOTICE`); the derivation is
    `tools/derive_nlp_data.py`.

    The split is by document (a fixed hash of the document's path), so
    held-out sentences come from pages the model never saw in training.

    Args:
        split: `"train"`, `"held_out"` or `"all"`. Defaults to `"train"`.
        sections: the documentation sections to keep (some of `"tutorial"`,
            `"howto"`, `"library"`, `"reference"`, `"whatsnew"`, `"faq"`,
            `"c-api"`, `"using"`), or `None` for all. Defaults to `None`.
        held_out_fraction: the fraction of documents held out. Defaults to
            `0.1`.

    Returns:
        A dict of equal-length lists: `"text"` (the sentences), `"section"`
        and `"document"` (e.g. `"tutorial/classes"`), in corpus order.

    Example:

    >>> data = load_python_docs("held_out", sections=["tutorial"])
    >>> sorted(data), all(s == "tutorial" for s in data["section"])
    (['document', 'section', 'text'], True)
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {list(SPLITS)}.")
    rows = _rows()
    known = sorted({r[0] for r in rows})
    if sections is not None:
        sections = [sections] if isinstance(sections, str) else list(sections)
        unknown = sorted(set(sections) - set(known))
        if unknown:
            raise ValueError(f"Unknown sections {unknown}; the corpus has {known}.")
    out = {"text": [], "section": [], "document": []}
    for section, document, text in rows:
        if sections is not None and section not in sections:
            continue
        if split != "all" and held_out(document, held_out_fraction) != (split == "held_out"):
            continue
        out["text"].append(text)
        out["section"].append(section)
        out["document"].append(document)
    return out
