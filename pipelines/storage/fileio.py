"""Small file helpers over Beam's FileSystems, so local paths and gs:// behave the same."""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if "://" in base else "/".join([base.rstrip("/"), *parts])


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_text(path: str) -> str:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return handle.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type="uncompressed") as handle:
        handle.write(text.encode("utf-8"))


def glob(pattern: str) -> list[str]:
    return sorted(meta.path for meta in FileSystems.match([pattern])[0].metadata_list)


def delete_tree(path: str) -> None:
    """Delete a directory and everything under it (on object stores: every object under the prefix)."""
    if "://" in path and not path.endswith("/"):
        path += "/"
    if FileSystems.exists(path) or "://" in path:
        try:
            FileSystems.delete([path])
        except Exception:  # nothing there on an object store: nothing to delete
            if "://" not in path:
                raise
