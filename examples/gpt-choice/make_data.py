"""Derive the gpt-choice example's data from the Python library docs (shared/data).

choices.jsonl   a sentence of a prose paragraph (`text`), four candidate next sentences
                (`choices`): the one that really follows it and three drawn from paragraphs
                far away in the docs, in random order; `label` is the true one's index.

The sentences come from the part of pydoc-library.txt after the first ~900 KB, which
`../tiny-gpt/corpus.txt` holds and the spec pretrains on, so no held-back answer was seen
in pretraining.

Run: python examples/gpt-choice/make_data.py ../shared/data/pydoc-library.txt
"""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
EXAMPLES = 2000
MAX_WORDS = 30


def prose_paragraphs(text: str):
    """Blocks of unindented text that are not directives, headings, tables or lists."""
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if lines and not lines[0].startswith((" ", "..", "=", "-", "+", "*", "|", ":", "#")):
            yield " ".join(block.split())


def sentences(paragraph: str) -> list[str]:
    return [s for s in SENTENCE_END.split(paragraph) if 4 <= len(s.split()) <= MAX_WORDS]


def main(source: str) -> None:
    here = Path(__file__).parent
    text = Path(source).read_text(encoding="utf-8")
    text = text[text.rfind("\n", 0, 900_000) + 1:]  # past what ../tiny-gpt/corpus.txt holds
    paragraphs = [sentences(p) for p in prose_paragraphs(text)]
    paragraphs = [p for p in paragraphs if p]
    rng = random.Random(0)
    starts = [(i, k) for i, p in enumerate(paragraphs) for k in range(len(p) - 1)]
    rng.shuffle(starts)
    records = []
    for i, k in starts[:EXAMPLES]:
        far = [j for j in (rng.randrange(len(paragraphs)) for _ in range(20)) if abs(j - i) > 200][:3]
        choices = [rng.choice(paragraphs[j]) for j in far]
        label = rng.randrange(4)
        choices.insert(label, paragraphs[i][k + 1])
        records.append({"text": paragraphs[i][k], "choices": choices, "label": label})
    with open(here / "choices.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"choices.jsonl: {len(records)} examples from {len(paragraphs)} paragraphs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/pydoc-library.txt")
