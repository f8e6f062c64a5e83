"""Where large things live outside Redis: an object store on a local disk or S3-compatible,
written whole or not at all (`objects`), and the media clips kept in it (`clips`)."""

from router.storage.objects import ObjectInfo, ObjectStore, Staged

__all__ = ["ObjectInfo", "ObjectStore", "Staged"]
