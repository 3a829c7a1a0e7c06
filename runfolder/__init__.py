"""The tag run folder: what ``tagscale tag`` (and ``probe apply``) writes and every later command reads.

A run folder holds ``tags/`` (the track table's Parquet shards, a segments table's shards and
``manifest.json``, the list readers go by), ``dead_letter/``, ``summary.json``; the manifest
records the run's provenance. This package is its one home:

- :mod:`runfolder.layout`: the names of those entries, where a track's row is placed;
- :mod:`runfolder.schema`: the track table's schema and row builder (no Beam: readers import it);
- :mod:`runfolder.manifest`: reading and writing the manifest, the files it lists;
- :mod:`runfolder.segments`: the segments table (tags in time);
- :mod:`runfolder.provenance`: where a run's scores came from;
- :mod:`runfolder.writer`: the one writer of tag Parquet files (the tag job's sink and probe apply);
- :mod:`runfolder.reader`: the one reader and its rule, used by every command that reads a run.

The Beam parts of writing a run (``WriteTags``) stay in :mod:`pipelines.tag_output` and call
into this package; nothing here is a Beam job.
"""
