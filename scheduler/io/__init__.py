"""Reading spec files: YAML through PyYAML's libyaml loader, JSON Lines through msgspec.

Both give ``Document``s (plain data and where it came from) for ``scheduler.loading`` to
validate against the spec models; ``load_documents`` picks the format by the file's suffix.
"""

from scheduler.io.documents import JSON_LINES_SUFFIXES, MAX_DOCUMENTS, MAX_SPEC_BYTES, Document, Progress, load_documents

__all__ = ["JSON_LINES_SUFFIXES", "MAX_DOCUMENTS", "MAX_SPEC_BYTES", "Document", "Progress", "load_documents"]
