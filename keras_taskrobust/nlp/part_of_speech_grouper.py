"""Words to part-of-speech groups, offline, for part-of-speech-grouped MLM."""

import functools
import gzip
import os
import pathlib
import re

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
LEXICON_PATH = DATA_DIR / "pos_lexicon.tsv.gz"

# Penn Treebank tags of each default group. `PUNCT` stands for every
# punctuation tag of the lexicon.
DEFAULT_GROUPS = {
    "noun": ("NN", "NNS", "NNP", "NNPS"),
    "verb": ("VB", "VBD", "VBG", "VBN", "VBP", "VBZ"),
    "adjective": ("JJ", "JJR", "JJS"),
    "adverb": ("RB", "RBR", "RBS"),
    "function": (
        "DT", "IN", "CC", "TO", "PRP", "PRP$", "WDT", "WP", "WP$", "WRB", "MD",
        "EX", "PDT", "POS", "RP",
    ),
    "other": ("CD", "PUNCT", "SYM", "FW", "UH", "LS"),
}

_NUMBER = re.compile(r"[-+]?(\d[\d,]*\.?\d*|\.\d+)(st|nd|rd|th|s)?")


@functools.lru_cache(maxsize=4)
def load_lexicon(path=None):
    """Reads a lexicon file: `{word: {tag: probability}}`.

    The file is a (possibly gzipped) TSV with one line per lower-cased
    word: `word<TAB>TAG:p TAG:p ...`. The default is the lexicon that ships
    with the package (`keras_taskrobust/nlp/data/pos_lexicon.tsv.gz`, 100k
    words, derived from festlex-poslex and WordNet 3.0; see the `NOTICE`
    file beside it).

    Args:
        path: the file. Defaults to the packaged lexicon.

    Returns:
        A dict from word to a dict of tag probabilities.
    """
    path = pathlib.Path(path or LEXICON_PATH)
    if not path.exists():
        raise FileNotFoundError(
            f"No part-of-speech lexicon at {path}. The packaged lexicon is "
            "installed with keras-taskrobust (reinstall with `pip install "
            "-e .`); a lexicon of your own is a TSV of `word<TAB>TAG:p ...`."
        )
    opener = gzip.open if path.suffix == ".gz" else open
    lexicon = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                word, tags = line.split("\t")
                lexicon[word] = {t: float(p) for t, p in (item.rsplit(":", 1) for item in tags.split())}
            except ValueError as error:
                raise ValueError(
                    f"{path}, line {number}: {line!r} is not `word<TAB>TAG:p TAG:p ...`."
                ) from error
    return lexicon


class PartOfSpeechGrouper:
    """Maps words to part-of-speech groups: noun, verb, adjective, ...

    Each word gets the group with the largest probability mass among its
    part-of-speech tags: a word's tags and their probabilities come from a
    lexicon (by default the one that ships with the package: 100k
    lower-cased English words with Penn Treebank tag probabilities, from
    the Wall Street Journal lexicon of festlex-poslex, completed with the
    open-class words of WordNet 3.0), and `groups` says which tags belong
    to which group. Lookups ignore case. The grouping is per word type, not
    in context: "returns" is a noun in the WSJ lexicon, so always a noun.

    A word the lexicon lacks is, in order:
    - an inflection of a word it knows, when `guess_inflections` (the
      default): `-s`/`-es`/`-ies` (plural or third person), `-ed`/`-d`
      (past), `-ing`, `-er`/`-est` (comparative of an adjective) and `-ly`
      (an adverb from an adjective), with doubled final consonants undone
      ("debugged"); a hyphenated word takes the tags of
      its last part;
    - a number (`CD`) or punctuation (`PUNCT`);
    - otherwise it falls into `unknown_group` (by default `"other"`).
      Tags that belong to no group go there too.

    A tagger of your own replaces the lexicon: `tagger(words)` takes the
    words of one sentence (so a contextual tagger can use the context) and
    returns one label per word, a group name, a tag of `groups`, or `None`
    (for `unknown_group`).

    Args:
        groups: an ordered dict `{group name: [tags]}`, or a list of group
            names when the tagger returns group names. Defaults to
            `DEFAULT_GROUPS` (noun, verb, adjective, adverb, function,
            other).
        lexicon: `None` (the packaged lexicon), a path to a TSV of
            `word<TAB>TAG:p TAG:p ...`, or a dict `{word: tag}` or
            `{word: {tag: probability}}`. Defaults to `None`.
        tagger: a callable `tagger(words) -> labels` used instead of the
            lexicon. Defaults to `None`.
        unknown_group: the group of words nobody knows. Defaults to
            `"other"`.
        guess_inflections: look up the stem of an unknown inflected word.
            Defaults to `True`.

    Example:

    >>> grouper = PartOfSpeechGrouper()
    >>> grouper.group_names
    ['noun', 'verb', 'adjective', 'adverb', 'function', 'other']
    >>> [grouper.group_name(w) for w in ["the", "dog", "quickly", "ran", "xyzzy"]]
    ['function', 'noun', 'adverb', 'verb', 'other']
    """

    def __init__(self, groups=None, lexicon=None, tagger=None, unknown_group="other", guess_inflections=True):
        # === Config ===
        if groups is None:
            groups = DEFAULT_GROUPS
        if isinstance(groups, (list, tuple)):
            groups = {str(name): () for name in groups}
        if not isinstance(groups, dict) or not groups:
            raise ValueError(
                "`groups` must be a non-empty dict `{group name: [tags]}` (or a "
                f"list of group names for a tagger that returns them); got {groups!r}."
            )
        if tagger is not None and not callable(tagger):
            raise TypeError(f"`tagger` must be a callable `tagger(words) -> labels`; got {tagger!r}.")
        if unknown_group not in groups:
            raise ValueError(
                f"`unknown_group={unknown_group!r}` is not one of the groups "
                f"{list(groups)}; name the group that unknown words fall into."
            )
        tag_group = {}
        for k, (name, tags) in enumerate(groups.items()):
            for tag in tags:
                if tag.upper() in tag_group:
                    raise ValueError(
                        f"Tag {tag!r} is in two groups ({list(groups)[tag_group[tag.upper()]]!r} "
                        f"and {name!r}); give every tag one group."
                    )
                tag_group[tag.upper()] = k
        self.groups = {name: tuple(tags) for name, tags in groups.items()}
        self.group_names = list(groups)
        self.unknown_group = unknown_group
        self.unknown_id = self.group_names.index(unknown_group)
        self.tagger = tagger
        self.guess_inflections = bool(guess_inflections)
        self._tag_group = tag_group

        # === State ===
        if tagger is None:
            self.lexicon = self._standardize_lexicon(lexicon)
        else:
            self.lexicon = None
        self._cache = {}

    @property
    def num_groups(self):
        return len(self.group_names)

    @staticmethod
    def _standardize_lexicon(lexicon):
        if lexicon is None or isinstance(lexicon, (str, os.PathLike)):
            return load_lexicon(None if lexicon is None else os.fspath(lexicon))
        if not isinstance(lexicon, dict):
            raise TypeError(
                "`lexicon` must be None (the packaged lexicon), a path, or a dict "
                f"`{{word: tag}}` / `{{word: {{tag: probability}}}}`; got {type(lexicon).__name__}."
            )
        standard = {}
        for word, tags in lexicon.items():
            tags = {tags: 1.0} if isinstance(tags, str) else dict(tags)
            standard[str(word).lower()] = {t.upper(): float(p) for t, p in tags.items()}
        return standard

    # --- Lookups ----------------------------------------------------------

    def tag_probabilities(self, word):
        """The tag probabilities of `word` (`{}` if unknown), after the fallbacks."""
        lexicon = self.lexicon
        if lexicon is None:
            raise ValueError("This grouper uses a tagger, not a lexicon: it has no tag probabilities.")
        word = word.lower()
        if word in lexicon:
            return lexicon[word]
        if self.guess_inflections:
            guess = self._inflection(word)
            if guess:
                return guess
        if _NUMBER.fullmatch(word):
            return {"CD": 1.0}
        if not any(c.isalnum() for c in word):
            return {"PUNCT": 1.0}
        return {}

    def _inflection(self, word):
        lexicon = self.lexicon

        def classes(stem):
            tags = lexicon.get(stem)
            if not tags:
                return None
            mass = lambda prefix: sum(p for t, p in tags.items() if t.startswith(prefix))
            return {"noun": mass("NN"), "verb": mass("VB"), "adjective": mass("JJ")}

        if "-" in word.strip("-"):
            last = word.strip("-").rsplit("-", 1)[1]
            return self.tag_probabilities(last) if last else {}
        rules = (
            ("ies", ("y",), {"noun": "NNS", "verb": "VBZ"}),
            ("es", ("", "e"), {"noun": "NNS", "verb": "VBZ"}),
            ("s", ("",), {"noun": "NNS", "verb": "VBZ"}),
            ("ied", ("y",), {"verb": "VBN"}),
            ("ed", ("", "e"), {"verb": "VBN"}),
            ("ing", ("", "e"), {"verb": "VBG"}),
            ("ier", ("y",), {"adjective": "JJR"}),
            ("er", ("", "e"), {"adjective": "JJR"}),
            ("iest", ("y",), {"adjective": "JJS"}),
            ("est", ("", "e"), {"adjective": "JJS"}),
            ("ily", ("y",), {"adjective": "RB"}),
            ("ly", ("", "le"), {"adjective": "RB"}),
        )
        for suffix, replacements, outcome in rules:
            if not word.endswith(suffix) or len(word) - len(suffix) < 2:
                continue
            stem = word[: -len(suffix)]
            candidates = [stem + r for r in replacements]
            if stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
                candidates.append(stem[:-1])  # debugged -> debug
            for candidate in candidates:
                found = classes(candidate)
                if not found:
                    continue
                tags = {tag: found[cls] for cls, tag in outcome.items() if found[cls] > 0}
                total = sum(tags.values())
                if total > 0:
                    return {t: p / total for t, p in tags.items()}
        return {}

    def group_id(self, word):
        """The group id of one word (cached), from the lexicon."""
        if self.tagger is not None:
            return self.group_ids([word])[0]
        key = word.lower()
        if key not in self._cache:
            mass = [0.0] * self.num_groups
            for tag, p in self.tag_probabilities(key).items():
                mass[self._tag_group.get(tag.upper(), self.unknown_id)] += p
            self._cache[key] = max(range(self.num_groups), key=mass.__getitem__) if any(mass) else self.unknown_id
        return self._cache[key]

    def group_name(self, word):
        """The group name of one word."""
        return self.group_names[self.group_id(word)]

    def group_ids(self, words):
        """Group ids of the words of one sentence (a list of ints)."""
        words = list(words)
        if self.tagger is None:
            return [self.group_id(w) for w in words]
        labels = list(self.tagger(words))
        if len(labels) != len(words):
            raise ValueError(
                f"The tagger returned {len(labels)} labels for {len(words)} words "
                f"({words[:8]}...); it must return one label per word."
            )
        return [self._label_id(label, word) for label, word in zip(labels, words)]

    def _label_id(self, label, word):
        if label is None:
            return self.unknown_id
        if isinstance(label, str):
            if label in self.groups:
                return self.group_names.index(label)
            if label.upper() in self._tag_group:
                return self._tag_group[label.upper()]
        raise ValueError(
            f"The tagger labelled {word!r} as {label!r}, which is neither a group "
            f"({self.group_names}) nor a tag of one ({sorted(self._tag_group)}). "
            "Return a group name, a tag listed in `groups`, or None."
        )

    def __call__(self, words):
        """Group ids of the words of one sentence."""
        return self.group_ids(words)

    def __repr__(self):
        source = "tagger" if self.tagger is not None else f"lexicon of {len(self.lexicon)} words"
        return f"PartOfSpeechGrouper(groups={self.group_names}, {source})"
