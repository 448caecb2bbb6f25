"""Resolvers: turn an AdapterRef into a local folder plus a pinned revision.

Only the adapter files are fetched (``adapter_config.json`` and the weights); the folder is
confined and staged (local: every file, see local.py), pinned (Hub commit sha, S3 ETag, sha256)
and recorded for provenance.
"""

from __future__ import annotations

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
PICKLE_FILE = "adapter_model.bin"
