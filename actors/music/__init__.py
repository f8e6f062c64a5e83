"""Music-streaming interactions: a durable log in the lake, and the analytics over it.

`LakeArchiver` reads each batch of interactions into lake rows and writes them as Parquet
segments; `MusicAnalytics` answers the brief's questions over the lake with DuckDB.
"""

from actors.music.archive import LakeArchiver

__all__ = ["LakeArchiver"]
