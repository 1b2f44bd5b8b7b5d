"""The artifact's manifest as a schema: one versioned pydantic model (torch-free).

``modkit build`` writes it (:meth:`Manifest.write`, in one place: the builder) and everything
that reads an artifact reads it through :meth:`Manifest.read`: the runtime, model loading,
tokenizer loading and ``export-hf``. File names in it are relative POSIX paths inside the
artifact (``model.onnx``, ``checkpoints/stage1-step000006.safetensors``), never absolute and
never climbing out with ``..``.

``version`` is the artifact format. Raise :data:`MANIFEST_VERSION` when a change would make an
older modkit misread a new artifact (a key whose meaning changes, a file it must read); a new
optional key does not need it: readers keep keys they do not know. An artifact of a newer
format is refused with a message saying to upgrade.
"""
from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from modkit.errors import ArtifactError
from modkit.fileio import atomic_write_text, sha256_file

#: the artifact format this modkit writes and the newest it reads
MANIFEST_VERSION = 1
FILE = "manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_READ_BY_MODKIT = (".onnx", ".safetensors", ".json")  # what a listing may not leave out


def is_artifact_path(name: str) -> bool:
    """Whether ``name`` is a file inside an artifact: a relative POSIX path (``model.onnx``,
    ``checkpoints/stage1-step000006.safetensors``) that cannot climb out (no ``..``)."""
    path = PurePosixPath(name)
    return (bool(name) and "\\" not in name and not path.is_absolute() and ".." not in path.parts
            and path.as_posix() == name)


def _artifact_path(name: str) -> str:
    if not is_artifact_path(name):
        raise ValueError(f"{name!r} is not a relative POSIX path inside the artifact")
    return name


def _sha256(digest: str) -> str:
    if not _SHA256.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 (64 lowercase hex digits)")
    return digest


ArtifactPath = Annotated[str, AfterValidator(_artifact_path)]
Sha256 = Annotated[str, AfterValidator(_sha256)]


class _Record(BaseModel):
    # keys a newer modkit of the same format adds are kept, and written back as they were
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ComponentRecord(_Record):
    """One component the artifact was built with: its name, plugin, version and options."""

    name: str
    plugin: str = "?"
    version: str = "?"
    options: dict[str, Any] = Field(default_factory=dict)
    from_: str | None = Field(None, alias="from")  # a checkpoint or tokenizer it was loaded from


class ObjectiveRecord(ComponentRecord):
    weight: float = 1.0  # its share of the stage's summed loss


class PeftRecord(ComponentRecord):
    kept: bool = False  # modules of it remain in the model (the artifact reloads them)
    merged: bool = False  # it was merged (a kept method then has its merged shape)


class StageRecord(_Record):
    objective: ComponentRecord  # the stage's task objective
    objectives: list[ObjectiveRecord] = Field(default_factory=list)  # all of them (absent in older artifacts)
    peft: list[PeftRecord] = Field(default_factory=list)

    def all_objectives(self) -> list[ObjectiveRecord]:
        """Every objective of the stage, the task's first (artifacts written before stages had
        several list only ``objective``)."""
        return self.objectives or [ObjectiveRecord.model_validate(self.objective.model_dump(by_alias=True))]


class BackboneRecord(ComponentRecord):
    #: how many positions input tokens may take (the backbone's declared maximum less an input
    #: prompt's virtual tokens); None: no limit (relative positions)
    max_positions: int | None = None

    def position_limit(self) -> int | None:
        """``max_positions``; for artifacts written before it was recorded, the learned
        positions' option (``n_positions``)."""
        return self.max_positions if "max_positions" in self.model_fields_set else self.options.get("n_positions")


class Components(_Record):
    tokenizer: ComponentRecord
    backbone: BackboneRecord
    stages: list[StageRecord] = Field(min_length=1)


class CheckpointRecord(_Record):
    """A weight snapshot kept with ``keep_checkpoints``."""

    file: ArtifactPath
    stage: int
    step: int
    eval_loss: float | None = None
    best: bool = False


class TaskRecord(_Record):
    """What a runtime :class:`~modkit.interfaces.Task` is told of the task (``artifact.task``):
    the task name plus what serving it needs (labels, special ids, lengths...), as the task
    objective's ``Export.task_record`` gave it. Fields beyond the common ones are kept as they
    are (a task may subclass this model to type its own); ``record["name"]`` and
    ``record.get("name", default)`` read any field, as they read the plain dict older tasks
    were given."""

    task: str
    #: the longest input, in tokens, the model was trained on; serving truncates to it
    max_length: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that were given (what the manifest stores)."""
        return self.model_dump(exclude_unset=True)

    def typed(self, record_type: type[TaskRecord], where: str) -> TaskRecord:
        """This record read as ``record_type``, the model of the task that serves it (its
        ``Task.record``): a field that task needs and the record lacks, or holds as the wrong
        type, is an :class:`ArtifactError` naming ``where`` and the field."""
        try:
            return record_type.model_validate(self.as_dict())
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ArtifactError(f"{where}: task.{field}: {first['msg']} (the {self.task!r} task's record, "
                                f"{record_type.__name__})") from None

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.as_dict()


class RankMemory(_Record):
    """One process's peak memory during a stage's training (from its first step's setup to the
    weights gathered at its end), as that process measured it."""

    rank: int
    device: str  # the training device: "cpu", "cuda:0"...
    #: the process's peak resident set size (Linux VmHWM, reset when the stage starts; elsewhere
    #: the peak since the process started, see ``rss_since``): everything in CPU memory, the
    #: Python interpreter and torch's libraries included
    peak_rss_bytes: int | None = None
    rss_since: Literal["stage start", "process start"] | None = None
    start_rss_bytes: int | None = None  # the resident set size when the stage started
    #: on CUDA: the most tensor memory torch had allocated on the device during the stage
    #: (torch.cuda.max_memory_allocated, reset when the stage starts)
    peak_allocated_bytes: int | None = None


class StageReport(_Record):
    """One stage's report: losses, figures, data (the builder writes its keys, and readers
    keep those they do not know)."""

    #: one record per process, by rank (absent in artifacts written before it was measured)
    peak_memory: list[RankMemory] | None = None


class Manifest(_Record):
    format: Literal["modkit-artifact"]
    version: StrictInt = Field(ge=1)
    modkit_version: str = "?"
    name: str
    seed: int = 0
    spec: dict[str, Any] = Field(default_factory=dict)  # the spec as resolved (every option's value)
    components: Components
    task: TaskRecord
    generation: dict[str, Any] | None = None  # generation defaults (modkit.generation_config)
    training: dict[str, Any] | None = None  # device, precision, processes...
    stages: list[StageReport] = Field(default_factory=list)  # each stage's report: losses, figures, peak memory
    merge: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None  # ONNX against torch
    graphs: list[ArtifactPath] = Field(default_factory=list)
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)
    files: dict[ArtifactPath, Sha256] = Field(min_length=1)  # every file of the artifact -> its sha256
    build_seconds: float | None = None
    resources: dict[str, Any] | None = None

    @classmethod
    def read(cls, folder: str | Path, *, verify: bool = True) -> Manifest:
        """The manifest of the artifact ``folder``; with ``verify``, every listed file's sha256
        is checked and a file modkit reads that the listing leaves out is refused.

        ``version`` and ``files`` are required: an artifact of a newer format is refused with a
        clear message, and a manifest cannot switch the checks off by leaving ``files`` out.
        """
        folder = Path(folder)
        path = folder / FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{folder}: not a modkit artifact (no {FILE})") from None
        except ValueError as e:
            raise ArtifactError(f"{path}: corrupt manifest ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != "modkit-artifact":
            raise ArtifactError(f"{path}: not a modkit artifact manifest")
        _check_version(doc, path)  # first: a newer format may not fit this schema
        try:
            manifest = cls.model_validate(doc)
        except ValidationError as e:
            raise ArtifactError(_problem(path, e)) from None
        if verify:
            manifest.verify(folder)
        return manifest

    def verify(self, folder: Path, names: list[str] | None = None) -> None:
        """Check the sha256 of the listed files ``names`` (default: all of them, and that no
        file modkit reads is left out of the listing)."""
        for name in self.files if names is None else names:
            f = folder / name
            if name not in self.files:
                raise ArtifactError(f"{f}: not listed in the manifest's files; the artifact was changed after it was built")
            if not f.is_file():
                raise ArtifactError(f"{f}: missing (listed in the manifest)")
            if sha256_file(f) != self.files[name]:
                raise ArtifactError(f"{f}: sha256 does not match the manifest; the file is corrupt or was changed")
        if names is not None:
            return
        unlisted = sorted(name for name in (f.relative_to(folder).as_posix() for f in folder.rglob("*")
                                            if f.is_file() and f.suffix in _READ_BY_MODKIT)
                          if name != FILE and name not in self.files)
        if unlisted:
            raise ArtifactError(f"{folder}: {', '.join(unlisted)} not listed in the manifest's files; the "
                                "artifact was changed after it was built")

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object ``manifest.json`` holds."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def write(self, folder: Path) -> None:
        atomic_write_text(Path(folder) / FILE, json.dumps(self.to_json(), indent=2))


def _check_version(doc: dict[str, Any], path: Path) -> None:
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{path}: no valid format 'version' (got {version!r}); the manifest is corrupt")
    if version > MANIFEST_VERSION:
        made_by = doc.get("modkit_version", "a newer modkit")
        raise ArtifactError(f"{path}: artifact format version {version} (written by modkit {made_by}); this "
                            f"modkit reads up to version {MANIFEST_VERSION}: upgrade modkit to use it")


def _problem(path: Path, error: ValidationError) -> str:
    """The first schema problem of a manifest, by key path."""
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    if first["loc"][:1] == ("files",):
        return (f"{path}: 'files' must map every file of the artifact to its sha256 ({loc}: {first['msg']}); "
                "the manifest is corrupt or was edited")
    return f"{path}: {loc}: {first['msg']}; the manifest is corrupt or was edited"
