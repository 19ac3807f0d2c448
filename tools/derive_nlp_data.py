"""Derives the NLP package data of `keras_taskrobust.nlp` from Debian packages.

Run once, by hand; the outputs are committed under
`keras_taskrobust/nlp/data/` so that nothing is downloaded at run time:

    mkdir -p /tmp/nlpdata && cd /tmp/nlpdata
    apt-get download festlex-poslex wordnet-base python3.11-doc
    for f in *.deb; do dpkg -x "$f" root; done
    python tools/derive_nlp_data.py /tmp/nlpdata/root

Outputs:

- `pos_lexicon.tsv.gz`: `word<TAB>TAG:p TAG:p ...`, the probability of each
  part-of-speech tag (Penn Treebank tags, upper case) given the lower-cased
  word. From festlex-poslex (Wall Street Journal, 33k words): `P(tag | word)`
  is proportional to the lexicon's `P(word | tag)` times the tag frequency,
  read from the unigram counts of the trigram model that ships with it;
  case variants are merged. Words that festlex lacks are added from
  WordNet 3.0 (open classes only: NN, VB, JJ, RB), with probabilities in
  proportion to 1 + the tagged sense counts of each class. The pieces of
  contractions (`CONTRACTIONS`) are tagged by hand.
- `python_docs.tsv.gz`: `section<TAB>document<TAB>sentence`, English prose
  sentences from the reST sources of the Python 3.11 documentation, cleaned
  of markup (code blocks, directives, roles, tables, headings dropped).
- `python_docs_vocab.txt`: a lower-cased WordPiece vocabulary (3.9k tokens)
  learnt on that corpus with keras-hub's `compute_word_piece_vocabulary`,
  for tiny BERT models built from config.
- `NOTICE`: the licences of the sources (festlex-poslex: Edinburgh CSTR
  permissive licence; WordNet 3.0 licence; PSF licence).
"""

import collections
import gzip
import math
import pathlib
import re
import sys

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "keras_taskrobust" / "nlp" / "data"

# The tags of festival's poslex model, in the order of its n-gram file.
FESTIVAL_TAGS = (
    "nn punc nnp dt in jj nns cd rb vbd vb prp cc of to vbz vbn vbg vbp md pos wdt "
    "jjr wp nnps wrb jjs rbr rp ex rbs pdt fw 1 uh sym ls 2"
).split()
# festival's tags -> Penn Treebank tags ("of" is its own tag there; "1"/"2"
# are sentence boundaries, never in the lexicon).
PENN = {"punc": "PUNCT", "of": "IN", "prp": "PRP"}


def tag_priors(ngram_path):
    """Tag frequencies: the unigram marginal of festival's trigram counts.

    The binary n-gram holds the counts as big-endian doubles after a text
    header, a negative value `-n` standing for `n` zeros.
    """
    data = ngram_path.read_bytes()
    start = 0
    for _ in range(3):  # header, vocabulary, predicted vocabulary
        start = data.index(b"\n", start) + 1
    values = np.frombuffer(data[start : start + (len(data) - start) // 8 * 8], ">f8")
    counts = []
    for v in values:
        counts.extend([0.0] * int(-v) if v < 0 else [v])
    k = len(FESTIVAL_TAGS)
    unigram = np.asarray(counts[: k**3]).reshape(k, k, k).sum(axis=(1, 2))
    return dict(zip(FESTIVAL_TAGS, unigram / unigram.sum()))


def festival_lexicon(root):
    dicts = root / "usr/share/festival/dicts"
    priors = tag_priors(dicts / "wsj.wp39.tri.ngrambin")
    joint = collections.defaultdict(lambda: collections.defaultdict(float))
    pattern = re.compile(r'^\("((?:[^"\\]|\\.)*)" \((.*)\) \(\) \)$')
    for line in (dicts / "wsj.wp39.poslexR").read_text(encoding="latin-1").splitlines():
        match = pattern.match(line)
        if not match:
            continue
        word = match.group(1).replace('\\"', '"').lower()
        for tag, logp in re.findall(r"\((\S+) (-?[\d.]+)\)", match.group(2)):
            penn = PENN.get(tag, tag).upper()
            joint[word][penn] += math.exp(float(logp)) * priors[tag]
    return joint


def wordnet_lexicon(root):
    joint = collections.defaultdict(lambda: collections.defaultdict(float))
    for name, tag in (("noun", "NN"), ("verb", "VB"), ("adj", "JJ"), ("adv", "RB")):
        for line in (root / "usr/share/wordnet" / f"index.{name}").read_text().splitlines():
            if line.startswith(" "):
                continue
            fields = line.split()
            lemma = fields[0]
            if not re.fullmatch(r"[a-z][a-z'-]*", lemma):
                continue
            pointers = int(fields[3])
            tagged = int(fields[5 + pointers])
            joint[lemma][tag] += 1 + tagged
    return joint


# Pieces of contractions as BERT's pre-tokenizer splits them ("doesn't" ->
# "doesn", "'", "t"), which the lexicons lack: Penn tags by hand.
CONTRACTIONS = {
    "cannot": "MD", "can't": "MD", "won": "MD", "couldn": "MD", "wouldn": "MD", "shouldn": "MD",
    "mustn": "MD", "ll": "MD", "d": "MD", "t": "RB", "doesn": "VBZ", "isn": "VBZ", "hasn": "VBZ",
    "wasn": "VBD", "didn": "VBD", "hadn": "VBD", "weren": "VBD", "don": "VBP", "aren": "VBP",
    "haven": "VBP", "ve": "VBP", "re": "VBP", "m": "VBP", "s": "POS",
}


def write_gzip(path, lines):
    """Writes lines, gzipped with a fixed time stamp (the same bytes every run)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))


def write_lexicon(root):
    lexicon = festival_lexicon(root)
    added = 0
    for word, tags in wordnet_lexicon(root).items():
        if word not in lexicon:
            lexicon[word] = tags
            added += 1
    for word, tag in CONTRACTIONS.items():
        lexicon[word] = {tag: 1.0}
    lines = []
    for word in sorted(lexicon):
        if not word or any(c.isspace() for c in word):
            continue
        tags = lexicon[word]
        total = sum(tags.values())
        probs = sorted(((t, p / total) for t, p in tags.items()), key=lambda x: -x[1])
        probs = [(t, p) for t, p in probs if p >= 0.001] or probs[:1]
        lines.append(word + "\t" + " ".join(f"{t}:{p:.3f}" for t, p in probs))
    write_gzip(OUT / "pos_lexicon.tsv.gz", lines)
    print(f"lexicon: {len(lines)} words ({added} from WordNet)")


# --- The corpus -------------------------------------------------------------

SECTIONS = ("tutorial", "howto", "library", "reference", "whatsnew", "faq", "c-api", "using")
# Sentences kept per section at most (whole documents, in sorted order of path).
SECTION_CAP = {"library": 12000, "whatsnew": 6000, "c-api": 3000}
CODE_DIRECTIVES = {
    "code-block", "sourcecode", "code", "testcode", "testoutput", "testsetup", "testcleanup",
    "doctest", "productionlist", "literalinclude", "toctree", "highlight", "index", "image",
    "figure", "raw", "csv-table", "table", "list-table", "parsed-literal", "grammar-snippet",
    "opcodesection", "include", "only", "tabularcolumns", "availability", "audit-event",
    "c:macro", "rubric", "sectionauthor", "moduleauthor", "literalinclude", "math",
}
UNDERLINE = re.compile(r"^([=\-~^*#+`'\".:_])\1{2,}\s*$")


def _strip_inline(text):
    text = re.sub(r":[\w:.+-]+:`~?!?([^`<]*?)\s*(<[^`>]*>)?`", lambda m: m.group(1).split(".")[-1] if "~" in m.group(0)[:m.start(1) - m.start(0)] else m.group(1), text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`<]*?)\s*<[^`>]*>`_{1,2}", r"\1", text)
    text = re.sub(r"`([^`]*)`_{0,2}", r"\1", text)
    text = re.sub(r"\[#?\w*\]_", "", text)
    text = re.sub(r"\|[\w-]+\|", "", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"(?<!\w)\*([^*\s][^*]*)\*(?!\w)", r"\1", text)
    text = text.replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def prose_paragraphs(source):
    """Paragraphs of prose from a reST document (code, tables and headings dropped)."""
    lines = source.splitlines()
    paragraphs, current = [], []
    skip_indent = None  # inside a block to skip, deeper than this indent
    literal_next = False

    def flush():
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for i, raw in enumerate(lines):
        line = raw.rstrip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        if literal_next and line.strip():
            literal_next = False
            if indent > literal_base:
                skip_indent = literal_base
                continue
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        nxt = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
        if UNDERLINE.match(stripped) or (UNDERLINE.match(nxt.strip()) and len(nxt.strip()) >= len(stripped) > 0):
            flush()
            continue
        if stripped.startswith(("+-", "+=", "|", ">>>", "...", "$ ", "% ")) or re.match(r"^=+( +=+)+$", stripped):
            flush()
            continue
        directive = re.match(r"^\.\.\s+([\w:-]+)::(.*)$", stripped)
        if directive:
            flush()
            name = directive.group(1)
            if name in CODE_DIRECTIVES or name.startswith(("code", "test")):
                skip_indent = indent
            # Other directives (function, note, versionchanged, ...): drop the
            # signature line, keep the indented prose.
            continue
        if stripped.startswith(".."):
            flush()  # a comment or a target: skip its indented body too
            skip_indent = indent
            continue
        if stripped.startswith(":") and re.match(r"^:[\w ]+:", stripped) and not re.match(r"^:[\w:.+-]+:`", stripped):
            # A field list entry (":param x:", ":noindex:") or an option.
            stripped = re.sub(r"^:[\w ]+:\s*", "", stripped)
            if not stripped:
                continue
        stripped = re.sub(r"^([*+-]|#\.|\d+\.|\(\w\))\s+", "", stripped)
        if stripped.endswith("::"):
            literal_base = indent
            literal_next = True
            stripped = stripped[:-2].rstrip() + ("" if stripped[:-2].rstrip().endswith(":") else ":")
            if stripped == ":":
                continue
        current.append(stripped)
    flush()
    return paragraphs


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


def clean_sentences(paragraph):
    text = _strip_inline(paragraph)
    for sentence in SENTENCE_END.split(text):
        sentence = sentence.strip()
        words = sentence.split()
        if not 6 <= len(words) <= 50 or not sentence[0].isupper() or sentence[-1] not in ".!?":
            continue
        if re.search(r"[`=<>{}\[\]\\|@#$]|::|\(\)|\w\.\w+\(|__\w+", sentence):
            continue
        alphabetic = sum(bool(re.fullmatch(r"[A-Za-z][a-z'-]*[.,;:!?)]*", w)) for w in words)
        if alphabetic < 0.85 * len(words):
            continue
        yield sentence


def write_corpus(root):
    sources = root / "usr/share/doc/python3.11/html/_sources"
    rows, per_section = [], collections.Counter()
    for section in SECTIONS:
        for path in sorted((sources / section).rglob("*.rst.txt")):
            if per_section[section] >= SECTION_CAP.get(section, 10**9):
                break
            document = str(path.relative_to(sources)).removesuffix(".rst.txt")
            seen = set()
            for paragraph in prose_paragraphs(path.read_text(encoding="utf-8")):
                for sentence in clean_sentences(paragraph):
                    if sentence not in seen:
                        seen.add(sentence)
                        rows.append(f"{section}\t{document}\t{sentence}")
                        per_section[section] += 1
    write_gzip(OUT / "python_docs.tsv.gz", rows)
    words = sum(len(r.split("\t")[2].split()) for r in rows)
    print(f"corpus: {len(rows)} sentences, {words} words; per section {dict(per_section)}")


def write_vocabulary():
    """A lower-cased WordPiece vocabulary learnt on the corpus (for tiny BERTs)."""
    import tensorflow as tf
    import keras_hub

    rows = gzip.open(OUT / "python_docs.tsv.gz", "rt", encoding="utf-8").read().splitlines()
    texts = [row.split("\t")[2] for row in rows]
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts).batch(1000), vocabulary_size=8000, lowercase=True,
        reserved_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
    )
    (OUT / "python_docs_vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    print(f"vocabulary: {len(vocabulary)} WordPiece tokens")


def write_notice(root):
    doc = root / "usr/share/doc"
    psf = (root / "usr/share/doc/python3.11/html/_sources/license.rst.txt").read_text(encoding="utf-8")
    psf = psf[psf.index(".. _PSF-license:"):]
    psf = psf[: psf.index(".. _BeOpen")] if ".. _BeOpen" in psf else psf
    psf = psf.replace("|release|", "3.11")
    notice = f"""Package data of keras_taskrobust.nlp, derived by tools/derive_nlp_data.py.

pos_lexicon.tsv.gz
==================
Modified (derived) data: tag probabilities per lower-cased word computed
from the festlex-poslex lexicon (wsj.wp39.poslexR) and the unigram counts
of its trigram model (wsj.wp39.tri.ngrambin), with open-class words added
from WordNet 3.0 (index.noun, index.verb, index.adj, index.adv), and
the pieces of English contractions ("doesn", "ll", ...) tagged by hand.

festlex-poslex (Debian package festlex-poslex 2.4-1):
{(doc / "festlex-poslex/copyright").read_text(encoding="latin-1")}
WordNet 3.0 (Debian package wordnet-base 1:3.0-37):
{(doc / "wordnet-base/copyright").read_text(encoding="utf-8").split("Files: debian/*")[0]}
python_docs.tsv.gz
==================
Sentences extracted from the reST sources of the Python 3.11.2
documentation (Debian package python3.11-doc), with the markup removed:
code blocks, directives, tables and headings dropped, inline roles and
literals reduced to their text, sentences split and filtered.
python_docs_vocab.txt is a WordPiece vocabulary learnt on these sentences.
Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.
The Python documentation is licensed under the PSF License Agreement:

{psf}"""
    (OUT / "NOTICE").write_text(notice, encoding="utf-8")


def main(root):
    root = pathlib.Path(root)
    OUT.mkdir(parents=True, exist_ok=True)
    write_lexicon(root)
    write_corpus(root)
    write_vocabulary()
    write_notice(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/nlpdata/root")
