"""Where large things live outside Redis: an object store on a local disk or S3-compatible,
written whole or not at all (`objects`), the media clips kept in it (`clips`), and the lakes
of Parquet segments by date and hour built on it (`lake`), compacted and expired
(`compaction`)."""

from router.storage.objects import ObjectInfo, ObjectStore, Staged

__all__ = ["ObjectInfo", "ObjectStore", "Staged"]
