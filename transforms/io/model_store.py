"""A versioned model store on any filesystem Beam supports (local, gs://, s3://, ...).

One file per version, ``<root>/model-<version>.pt``, holding a
:class:`model.artifact.ModelArtifact` as its Beam coder writes it (its factory
pickled the way Beam pickles DoFns, so factories may be closures; files of the
earlier layout, the whole artifact pickled, still load). Writes go to a temporary
name and are renamed into place, so a reader never sees half a model. The version
is in the file name, so a path alone says which version it is: paths are what
travel as model updates (and what Beam's ``RunInference(model_metadata_pcoll=...)``
passes as ``model_id``).

>>> import tempfile
>>> from model.mlp import MLPClassifier
>>> store = ModelStore(tempfile.mkdtemp())
>>> path = store.save(ModelArtifact.from_module(MLPClassifier(2, seed=0), 3))
>>> version_of_path(path), store.versions(), store.load(3).version
(3, [3], 3)
"""

from __future__ import annotations

import re

from apache_beam.internal import pickler
from apache_beam.io.filesystems import FileSystems

from model.artifact import ModelArtifact
from transforms.io.coders import ModelArtifactCoder

_NAME = re.compile(r"model-(\d{10})\.pt$")
_MAGIC = b"SMLART1\n"  # this layout; without it, a file holds the pickled artifact
_CODER = ModelArtifactCoder()


def version_of_path(path: str) -> int:
    match = _NAME.search(path)
    if match is None:
        msg = f"not a model store path (model-<10 digits>.pt): {path!r}"
        raise ValueError(msg)
    return int(match.group(1))


def read_path(path: str) -> ModelArtifact:
    """The artifact stored at ``path``; its version must match the file name."""
    with FileSystems.open(path) as f:
        raw = f.read()
    if raw.startswith(_MAGIC):
        artifact = _CODER.decode(raw[len(_MAGIC) :])
    else:
        artifact = pickler.loads(raw)
    if not isinstance(artifact, ModelArtifact) or artifact.version != version_of_path(path):
        msg = f"{path!r} does not hold model version {version_of_path(path)}"
        raise ValueError(msg)
    return artifact


class ModelStore:
    """Save, list and load model versions under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path_of(self, version: int) -> str:
        return FileSystems.join(self.root, f"model-{version:010d}.pt")

    def save(self, artifact: ModelArtifact) -> str:
        """Write ``artifact`` atomically; returns its path. Versions are immutable."""
        ensure_dir(self.root)
        final = self.path_of(artifact.version)
        if FileSystems.exists(final):
            msg = f"model version {artifact.version} already exists at {final!r}"
            raise FileExistsError(msg)
        tmp = FileSystems.join(self.root, f".tmp-model-{artifact.version:010d}.pt")
        with FileSystems.create(tmp) as f:
            f.write(_MAGIC + _CODER.encode(artifact))
        FileSystems.rename([tmp], [final])
        return final

    def versions(self) -> list[int]:
        pattern = FileSystems.join(self.root, "model-*.pt")
        found = FileSystems.match([pattern])[0].metadata_list
        return sorted(version_of_path(m.path) for m in found if _NAME.search(m.path))

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def load(self, version: int) -> ModelArtifact:
        return read_path(self.path_of(version))


def ensure_dir(directory: str) -> None:
    """Create ``directory`` unless it exists; safe when writers on several workers
    (or threads) set up at once: Beam's ``mkdirs`` raises for a folder that exists,
    so one that appeared between the check and the call is fine."""
    if FileSystems.exists(directory):
        return
    try:
        FileSystems.mkdirs(directory)
    except OSError:
        if not FileSystems.exists(directory):
            raise
