"""Write data/ for the tiny-t5 and tiny-bart examples: restore the capitals and punctuation of
sentences from the Python library docs.

    source: "the socket module provides access to the bsd socket interface"
    target: "The socket module provides access to the BSD socket interface."

Run from this folder: python make_data.py ../../../shared/data/pydoc-library.txt
"""
import json
import random
import re
import sys
from pathlib import Path

SENTENCE = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,.;:?!]?$")  # plain prose words, no markup
PUNCTUATION = re.compile(r"[,.;:?!]")


def sentences(text: str):
    for paragraph in text.split("\n\n"):
        if paragraph.startswith((" ", "..", ":")):  # code, directives, fields
            continue
        for s in SENTENCE.split(" ".join(paragraph.split())):
            words = s.split()
            if 4 <= len(words) <= 14 and all(WORD.match(w) for w in words):
                yield " ".join(words)


def main(source: str, out: Path = Path("data"), n_valid: int = 150) -> None:
    rng = random.Random(0)
    pairs = [{"source": PUNCTUATION.sub("", s).lower(), "target": s}
             for s in dict.fromkeys(sentences(Path(source).read_text(encoding="utf-8")))]
    rng.shuffle(pairs)
    out.mkdir(exist_ok=True)
    train, valid = pairs[n_valid:], pairs[:n_valid]
    for name, rows in (("train.jsonl", train), ("valid.jsonl", valid)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    # the tokenizer learns from both sides, so lower-cased words are in its vocabulary too
    (out / "corpus.txt").write_text("".join(f"{r['source']}\n{r['target']}\n" for r in train), encoding="utf-8")
    print(f"{len(train)} training and {len(valid)} held-out pairs")


if __name__ == "__main__":
    main(sys.argv[1])
