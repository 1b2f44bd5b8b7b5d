"""Write data/ for this example: sentences of the Python library docs, words shuffled -> restored.

Run from this folder: python make_data.py ../../../shared/data/pydoc-library.txt
"""
import json
import random
import re
import sys
from pathlib import Path

SENTENCE = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,.;:]?$")  # plain prose words, no markup


def sentences(text: str):
    for paragraph in text.split("\n\n"):
        if paragraph.startswith((" ", "..", ":")):  # code, directives, fields
            continue
        for s in SENTENCE.split(" ".join(paragraph.split())):
            words = s.split()
            if 4 <= len(words) <= 10 and all(WORD.match(w) for w in words):
                yield words


def main(source: str, out: Path = Path("data"), n_valid: int = 100) -> None:
    rng = random.Random(0)
    pairs = []
    for words in dict.fromkeys(map(tuple, sentences(Path(source).read_text(encoding="utf-8")))):
        shuffled = list(words)
        rng.shuffle(shuffled)
        pairs.append({"source": " ".join(shuffled), "target": " ".join(words)})
    rng.shuffle(pairs)
    out.mkdir(exist_ok=True)
    train, valid = pairs[n_valid:], pairs[:n_valid]
    for name, rows in (("train.jsonl", train), ("valid.jsonl", valid)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (out / "corpus.txt").write_text("".join(r["target"] + "\n" for r in train), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
