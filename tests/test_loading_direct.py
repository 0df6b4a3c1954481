"""``validate_document`` calls each kind's pydantic validator directly, not ``model_validate``:
on every bad-input case and on well-formed documents of every kind, it must give the model
(with its set fields) or the error lines that ``model_validate`` gives."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from scheduler.errors import SpecError, SpecErrors
from scheduler.io import Document
from scheduler.io.yamldocs import parse_documents
from scheduler.loading import SPEC_KINDS, Loaded, _field, _reason, validate_document
from scheduler.paths import examples_dir
from tests.bad_inputs import CASES


def _reference(doc: Document) -> Loaded | list[str]:
    """The outcome ``validate_document`` had with ``model_validate`` (models, or error lines)."""
    data = doc.data
    try:
        return Loaded(SPEC_KINDS[data["kind"]].model_validate(data), doc)
    except ValidationError as exc:
        return [
            SpecError(doc.file, _reason(dict(e)), line=doc.line_of(tuple(e["loc"])), field=_field(e["loc"]) or "kind").one_line()
            for e in exc.errors()
        ]


def _outcome(doc: Document) -> Loaded | list[str]:
    try:
        return validate_document(doc)
    except SpecErrors as exc:
        return [e.one_line() for e in exc.errors]


def _documents() -> list[Document]:
    docs = []
    for case in CASES:
        try:
            docs += parse_documents(case.content.decode("utf-8"), f"{case.id}.yaml")
        except (SpecError, UnicodeDecodeError):
            continue
    for path in sorted(Path(examples_dir()).rglob("*.yaml")):
        docs += parse_documents(path.read_text(), str(path))
    return [d for d in docs if isinstance(d.data, dict) and d.data.get("kind") in SPEC_KINDS]


def test_direct_validation_is_model_validate() -> None:
    docs = _documents()
    outcomes = [(_outcome(d), _reference(d)) for d in docs]
    assert sum(isinstance(got, list) for got, _ in outcomes) > 50  # bad inputs are among them
    assert {type(got.model).__name__ for got, _ in outcomes if isinstance(got, Loaded)} >= {"JobDoc", "CloudCatalog", "Contract"}
    for got, want in outcomes:
        assert got == want
        if isinstance(got, Loaded) and isinstance(want, Loaded):
            assert got.model.model_fields_set == want.model.model_fields_set
            assert got.model.model_dump() == want.model.model_dump()
