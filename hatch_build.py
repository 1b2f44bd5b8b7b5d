"""Compiles modkit's one C extension, SentencePiece's Unigram Viterbi pass and normaliser
fast path (plugins/modkit_plugins/tokenizers/_unigram_native.c), while hatchling builds a
wheel.

It is optional: where no C compiler works, the build says so and goes on, and modkit runs
the same passes in Python, with the same ids (about seven times slower: docs/benchmarks.md).
An editable install compiles it next to its source, where the installed path finds it; a
wheel carries it and is tagged for this interpreter and platform."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODULE = "modkit_plugins.tokenizers._unigram_native"
SOURCE = Path("plugins/modkit_plugins/tokenizers/_unigram_native.c")


def compile_extension(root: Path, out: Path) -> Path:
    """The compiled module, built under ``out`` by setuptools' build_ext."""
    from setuptools import Distribution, Extension

    extension = Extension(MODULE, [str(root / SOURCE)], extra_compile_args=["-O3"])
    dist = Distribution({"name": "modkit-native", "ext_modules": [extension]})
    command = dist.get_command_obj("build_ext")
    command.build_lib = str(out / "lib")
    command.build_temp = str(out / "temp")
    command.ensure_finalized()
    command.run()
    return Path(command.get_ext_fullpath(MODULE))


class NativeBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        root = Path(self.root)
        work = self._work = Path(tempfile.mkdtemp(prefix="modkit-native-"))
        from setuptools.errors import BaseError, CCompilerError

        try:
            built = compile_extension(root, work)
        except (BaseError, CCompilerError, OSError) as e:  # no compiler, no headers: the Python pass serves
            print(f"modkit: the compiled SentencePiece passes were not built ({type(e).__name__}: {e}); "
                  "modkit will run them in Python (same ids, about seven times slower)", file=sys.stderr)
            return
        if version == "editable":  # next to its source, where the editable path imports it from
            shutil.copyfile(built, root / SOURCE.parent / built.name)
        else:
            build_data["force_include"][str(built)] = f"modkit_plugins/tokenizers/{built.name}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        shutil.rmtree(self._work, ignore_errors=True)
