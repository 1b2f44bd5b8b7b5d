"""Derive a small topic-classification set from the Python library documentation.

Each prose paragraph of pydoc-library.txt is labelled with the area of the module whose
page it comes from (the last ``.. module::`` directive seen). The module's own name is
masked as ``MODULE`` so the model has to read the prose. Writes data/train.jsonl and
data/test.jsonl: one ``{"text": ..., "label": ...}`` per line, classes balanced.

    python make_data.py ../../../shared/data/pydoc-library.txt
"""
from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

AREAS = {
    "text": ["re", "string", "textwrap", "difflib", "unicodedata", "stringprep", "codecs", "locale",
             "gettext", "shlex", "html", "html.parser", "readline"],
    "files": ["os.path", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "filecmp", "fileinput",
              "stat", "io", "zipfile", "tarfile", "gzip", "bz2", "lzma", "zlib", "os", "mmap"],
    "concurrency": ["threading", "multiprocessing", "multiprocessing.managers", "multiprocessing.pool",
                    "multiprocessing.shared_memory", "concurrent.futures", "asyncio", "subprocess",
                    "queue", "sched", "_thread", "contextvars", "signal", "selectors"],
    "network": ["socket", "ssl", "http", "http.client", "http.server", "http.cookies", "http.cookiejar",
                "urllib.request", "urllib.parse", "urllib.error", "smtplib", "ftplib", "poplib",
                "imaplib", "socketserver", "ipaddress", "xmlrpc.client", "xmlrpc.server", "email",
                "email.message", "email.parser", "wsgiref", "webbrowser", "uuid"],
}
AREA_OF = {module: area for area, modules in AREAS.items() for module in modules}
PER_CLASS, TEST_PER_CLASS = 250, 80


def paragraphs(text: str):
    """(module, paragraph) for prose paragraphs, top-level or in a directive's body (the
    description of a function or class); code, directives, tables and titles are skipped."""
    module, after_code_marker = None, False
    for block in re.split(r"\n\s*\n", text):
        title = re.search(r"^(.*)\n=+\s*$", block.strip(), re.M)
        if title:  # a page's title: a new page starts (the file's module if it names one)
            named = re.search(r":mod:`([\w.]+)`", title.group(1))
            module = named.group(1) if named else None
        found = re.search(r"^\.\. (?:current)?module:: ([\w.]+)", block, re.M)
        if found:
            module = found.group(1)
        lines = block.strip("\n").splitlines()
        code = after_code_marker or not lines or block.startswith("    " * 2)
        after_code_marker = bool(lines) and lines[-1].rstrip().endswith("::")
        if code or found or title or lines[0].lstrip().startswith(("..", "+", "=", "-", "*", ">>>", "|", ":")):
            continue
        prose = " ".join(line.strip() for line in lines)
        if module in AREA_OF and 80 <= len(prose) <= 400 and not after_code_marker:
            yield module, prose


def clean(prose: str, module: str) -> str:
    prose = re.sub(r":\w+:`~?([^`<]*?)(?: <[^>]*>)?`", r"\1", prose)  # :func:`x` -> x
    prose = prose.replace("``", "")
    names = sorted({module, module.split(".")[-1]}, key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", "MODULE", prose)


def main(source: str) -> None:
    by_area: dict[str, list[str]] = {area: [] for area in AREAS}
    for module, prose in paragraphs(Path(source).read_text(encoding="utf-8")):
        by_area[AREA_OF[module]].append(clean(prose, module))
    rng = random.Random(0)
    train, test = [], []
    for area, texts in by_area.items():
        texts = sorted(set(texts))
        rng.shuffle(texts)
        if len(texts) < PER_CLASS + TEST_PER_CLASS:
            raise SystemExit(f"only {len(texts)} paragraphs for {area}")
        test += [{"text": t, "label": area} for t in texts[:TEST_PER_CLASS]]
        train += [{"text": t, "label": area} for t in texts[TEST_PER_CLASS:TEST_PER_CLASS + PER_CLASS]]
    rng.shuffle(train)
    rng.shuffle(test)
    out = Path(__file__).parent / "data"
    for name, rows in (("train", train), ("test", test)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../../../shared/data/pydoc-library.txt")
