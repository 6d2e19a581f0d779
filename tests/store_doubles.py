"""Object store test doubles shared by the gateway and worker tests."""

from __future__ import annotations

from shared.objectstore import LocalObjectStore


class ContentTypeRecordingStoreDouble(LocalObjectStore):
    """The local store (which keeps no content types), recording the type each object was put with: what S3 would
    serve it as."""

    def __init__(self, root):
        super().__init__(root)
        self.content_types: dict[str, str] = {}

    def put(self, key, data, content_type="application/octet-stream"):
        self.content_types[key] = content_type
        super().put(key, data, content_type)
