"""`tagscale catalog mtt|jamendo`: small files in the datasets' exact formats -> Parquet catalogs with splits."""

import collections
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from infra.cli import main as cli
from pipelines import catalog
from pipelines import catalog_datasets as datasets
from pipelines.catalog_datasets import DatasetError

# annotations_final.csv: tab-separated, every field quoted, clip_id first and mp3_path last.
MTT_TAGS = ["guitar", "classical", "slow", "techno", "no voice"]
MTT_ROWS = [  # clip_id, flags per tag, mp3_path
    ("2", [1, 1, 0, 0, 1], "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-30-59.mp3"),
    ("6", [0, 1, 1, 0, 0], "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-88-117.mp3"),
    ("10", [1, 0, 1, 0, 1], "c/a_man_and_his_plane-some_album-01-track-0-29.mp3"),
    ("11", [0, 0, 0, 1, 0], "c/a_man_and_his_plane-some_album-01-track-30-59.mp3"),
    ("12", [1, 1, 1, 0, 0], "0/jacob_heringman-josquin_des_prez_lute_settings-19-gintzler__pater_noster-204-233.mp3"),
]


def write_mtt(tmp_path):
    path = tmp_path / "annotations_final.csv"
    header = "\t".join(f'"{name}"' for name in ["clip_id", *MTT_TAGS, "mp3_path"])
    lines = [header] + [
        "\t".join([f'"{clip}"', *(f'"{flag}"' for flag in flags), f'"{mp3}"']) for clip, flags, mp3 in MTT_ROWS
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def read(path):
    return sorted(
        pq.read_table(path).to_pylist(),
        key=lambda row: int(row["track_id"]) if row["track_id"].isdigit() else row["track_id"],
    )


def test_mtt_top_k_by_count_with_split_lists_of_ids_and_npy_paths(tmp_path):
    annotations = write_mtt(tmp_path)
    (tmp_path / "train.txt").write_text("2\n6\n")  # clip ids
    (tmp_path / "valid.txt").write_text(MTT_ROWS[2][2] + "\n")  # an mp3 path
    # the widely used split arrays: "index<TAB>path", the index pointing into their own label array
    np.save(tmp_path / "test.npy", np.array([f"0\t{MTT_ROWS[4][2]}"]))
    output = tmp_path / "out" / "mtt.parquet"
    lists = {
        "train": str(tmp_path / "train.txt"),
        "valid": str(tmp_path / "valid.txt"),
        "test": str(tmp_path / "test.npy"),
    }
    rows = datasets.mtt_catalog(annotations, "/data/mtt", split="lists", lists=lists, top_k=3)
    datasets.write_catalog(rows, str(output))
    got = read(str(output))
    # counts: guitar 3, classical 3, slow 3, no voice 2, techno 1 -> top 3 keeps the file order on ties
    assert [row["track_id"] for row in got] == ["2", "6", "10", "12"]  # clip 11 is in no list
    assert [row["split"] for row in got] == ["train", "train", "valid", "test"]
    assert got[0] == {
        "track_id": "2",
        "uri": f"/data/mtt/{MTT_ROWS[0][2]}",
        "tags": ["guitar", "classical"],
        "split": "train",
    }
    assert got[3]["tags"] == ["guitar", "classical", "slow"]
    assert pq.read_schema(str(output)).names == ["track_id", "uri", "tags", "split"]
    # the catalog reader takes it, split included
    tracks = catalog.read_catalog(str(output))
    assert [(t.track_id, t.split) for t in tracks] == [("2", "train"), ("6", "train"), ("10", "valid"), ("12", "test")]
    assert tracks[0].tags == ("guitar", "classical")


# musicnn's 50 tags (its output order); the file's other 138 columns are rarer tags.
TOP50 = (
    "guitar, classical, slow, techno, strings, drums, electronic, rock, fast, piano, ambient, beat, violin, "
    "vocal, synth, female, indian, opera, male, singing, vocals, no vocals, harpsichord, loud, quiet, flute, "
    "woman, male vocal, no vocal, pop, soft, sitar, solo, man, classic, choir, voice, new age, dance, "
    "male voice, female vocal, beats, harp, cello, no voice, weird, country, metal, female voice, choral"
).split(", ")
RARE = [f"rare tag {index:03d}" for index in range(188 - len(TOP50))]


def write_full_mtt(tmp_path, clips_per_folder=4):
    """annotations_final.csv as MagnaTagATune ships it: every field quoted, tab-separated, 188 tag
    columns (rare ones first, as the file does not sort by count), mp3_path ``F/name-A-B.mp3``.

    Clip ``n`` sits in folder ``n % 16``; every 5th clip has no top-50 tag (a few rare ones only).
    musicnn's three broken clip ids are added in train folders 6, 8 and 9, as in the real file.
    Returns ``(path, {clip_id: folder})``.
    """
    columns = RARE[:69] + TOP50 + RARE[69:]
    rng = np.random.default_rng(0)
    rows, folders = [], {}
    clips = [(str(n), "0123456789abcdef"[n % 16]) for n in range(16 * clips_per_folder)]
    clips += [("35644", "6"), ("55753", "8"), ("57881", "9")]
    for number, (clip, folder) in enumerate(clips):
        flags = np.zeros(len(columns), int)
        flags[rng.choice(len(columns), 3, replace=False)] = 1
        for index, tag in enumerate(columns):
            if tag in TOP50:  # top-50 tags: common, except on the all-negative clips
                flags[index] = 0 if number % 5 == 0 else int(rng.random() < 0.3 + 0.01 * TOP50.index(tag))
            elif number % 5 != 0:
                flags[index] = 0
        rows.append((clip, flags, f"{folder}/artist_{number}-album-01-title_{number}-30-59.mp3"))
        folders[clip] = folder
    path = tmp_path / "annotations_final.csv"
    lines = ["\t".join(f'"{name}"' for name in ["clip_id", *columns, "mp3_path"])]
    lines += ["\t".join([f'"{clip}"', *(f'"{flag}"' for flag in flags), f'"{mp3}"']) for clip, flags, mp3 in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path), folders


def test_mtt_folder_split_is_musicnns(tmp_path):
    path, folders = write_full_mtt(tmp_path)
    rows = datasets.mtt_catalog(path, "/data/mtt")  # the folder split is the default
    # 64 clips, 4 per folder: 12 train folders (0-b), 1 valid (c), 3 test (d-f); broken clips dropped
    assert collections.Counter(row["split"] for row in rows) == {"train": 48, "valid": 4, "test": 12}
    assert not {"35644", "55753", "57881"} & {row["track_id"] for row in rows}
    for row in rows:
        folder = folders[row["track_id"]]
        assert row["split"] == ("train" if folder in "0123456789ab" else "valid" if folder == "c" else "test")
        assert row["uri"].startswith(f"/data/mtt/{folder}/")
    # every 5th clip has no top-50 tag and is kept, in test as elsewhere
    untagged = [row for row in rows if not row["tags"]]
    assert {row["track_id"] for row in untagged} == {str(n) for n in range(0, 64, 5)}
    assert sum(row["split"] == "test" for row in untagged) == len([n for n in range(0, 64, 5) if n % 16 >= 13])
    assert {tag for row in rows for tag in row["tags"]} == set(TOP50)  # the top 50 by count, not the rare columns
    # the command says so and writes it
    output = tmp_path / "mtt.parquet"
    assert cli(["catalog", "mtt", "--annotations", path, "--audio-root", "/m", "--output", str(output)]) == 0
    assert collections.Counter(pq.read_table(output).column("split").to_pylist()) == {
        "train": 48,
        "valid": 4,
        "test": 12,
    }


def test_mtt_split_lists_of_musicnn_training_are_keyed_by_clip_id(tmp_path):
    path, folders = write_full_mtt(tmp_path, clips_per_folder=1)
    # musicnn-training's train_gt_mtt.tsv / val_gt_mtt.tsv / test_gt_mtt.tsv: "id<TAB>[50 floats]"
    vector = "[" + ", ".join(["0.0"] * 49 + ["1.0"]) + "]"
    by_split = {"train": ["0", "1", "2", "11"], "valid": ["12"], "test": ["13", "15"]}
    lists = {}
    for split, clips in by_split.items():
        lists[split] = str(tmp_path / f"{split}_gt_mtt.tsv")
        (tmp_path / f"{split}_gt_mtt.tsv").write_text("".join(f"{clip}\t{vector}\n" for clip in clips))
    assert datasets.read_split_list(lists["test"]) == {"13", "15"}
    rows = datasets.mtt_catalog(path, "/m", split="lists", lists=lists)
    assert {row["track_id"]: row["split"] for row in rows} == {
        clip: split for split, clips in by_split.items() for clip in clips
    }
    # the same files on the command line: lists given means --split lists
    output = tmp_path / "lists.parquet"
    flags = [f"--{split}={file}" for split, file in lists.items()]
    assert cli(["catalog", "mtt", "--annotations", path, "--audio-root", "/m", "--output", str(output), *flags]) == 0
    assert pq.read_table(output).num_rows == 7
    assert (
        cli(
            ["catalog", "mtt", "--split", "folder", "--annotations", path, "--audio-root", "/m"]
            + flags[:1]
            + ["--output", str(output)]
        )
        == 2
    )


def test_mtt_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id\tguitar\tpath\n1\t1\tx.mp3\n")
    with pytest.raises(DatasetError, match="clip_id"):
        datasets.mtt_catalog(str(bad), "/a")
    annotations = write_mtt(tmp_path)
    (tmp_path / "a.txt").write_text("2\n")
    (tmp_path / "b.txt").write_text("2\n")
    (tmp_path / "c.txt").write_text("6\n")
    with pytest.raises(DatasetError, match="both the train and the valid"):
        datasets.mtt_catalog(
            annotations,
            "/a",
            split="lists",
            lists={"train": str(tmp_path / "a.txt"), "valid": str(tmp_path / "b.txt"), "test": str(tmp_path / "c.txt")},
        )
    with pytest.raises(DatasetError, match="all three"):
        datasets.mtt_catalog(annotations, "/a", split="lists", lists={"train": str(tmp_path / "a.txt")})
    bad_folder = tmp_path / "bad_folder.csv"
    bad_folder.write_text('"clip_id"\t"guitar"\t"mp3_path"\n"1"\t"1"\t"g/x.mp3"\n')
    with pytest.raises(DatasetError, match="folder 0-9 or a-f"):
        datasets.mtt_catalog(str(bad_folder), "/a")
    np.save(tmp_path / "numbers.npy", np.arange(3))
    with pytest.raises(DatasetError, match="strings"):
        datasets.read_split_list(str(tmp_path / "numbers.npy"))


JAMENDO = {
    "train": [
        ("track_0000214", "artist_000014", "album_000031", "14/214.mp3", "124.6", ["genre---punkrock"]),
        (
            "track_0000215",
            "artist_000014",
            "album_000031",
            "15/215.mp3",
            "98.0",
            ["genre---rock", "mood/theme---happy"],
        ),
        (
            "track_0000216",
            "artist_000015",
            "album_000032",
            "16/216.mp3",
            "200.1",
            ["genre---rock", "instrument---guitar"],
        ),
    ],
    "valid": [
        ("track_0000300", "artist_000020", "album_000040", "00/300.mp3", "60.0", ["genre---rock", "genre---jazz"])
    ],
    "test": [("track_0000400", "artist_000021", "album_000041", "00/400.mp3", "61.5", ["mood/theme---happy"])],
}


def write_jamendo(tmp_path):
    paths = {}
    for split, rows in JAMENDO.items():
        path = tmp_path / f"autotagging-{split}.tsv"
        lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"] + [
            "\t".join([*row[:5], *row[5]]) for row in rows
        ]
        path.write_text("\n".join(lines) + "\n")
        paths[split] = str(path)
    return paths


def test_jamendo_splits_and_top_k_of_the_training_split(tmp_path):
    rows = datasets.jamendo_catalog(write_jamendo(tmp_path), "/data/jamendo", top_k=2)
    by_id = {row["track_id"]: row for row in rows}
    # training counts: rock 2, then punkrock / happy / guitar 1 each (first seen wins the tie)
    assert by_id["track_0000215"] == {
        "track_id": "track_0000215",
        "uri": "/data/jamendo/15/215.mp3",
        "tags": ["genre---rock"],
        "split": "train",
    }
    assert by_id["track_0000214"]["tags"] == ["genre---punkrock"]
    assert by_id["track_0000300"]["split"] == "valid" and by_id["track_0000300"]["tags"] == ["genre---rock"]
    assert by_id["track_0000400"] == {
        "track_id": "track_0000400",
        "uri": "/data/jamendo/00/400.mp3",
        "tags": [],
        "split": "test",
    }


def test_jamendo_keeps_every_tag_by_default_and_maps_low_quality_audio(tmp_path):
    paths = write_jamendo(tmp_path)
    rows = datasets.jamendo_catalog(paths, "/data/jamendo")
    assert collections.Counter(row["split"] for row in rows) == {"train": 3, "valid": 1, "test": 1}
    every = {tag for split in JAMENDO.values() for row in split for tag in row[5]}
    assert {tag for row in rows for tag in row["tags"]} == every  # genre---jazz appears only in valid
    assert {row["track_id"]: row["tags"] for row in rows} == {
        row[0]: row[5] for split in JAMENDO.values() for row in split
    }
    low = datasets.jamendo_catalog(paths, "/data/jamendo", audio_quality="low")
    assert [row["uri"] for row in low] == [
        "/data/jamendo/14/214.low.mp3",
        "/data/jamendo/15/215.low.mp3",
        "/data/jamendo/16/216.low.mp3",
        "/data/jamendo/00/300.low.mp3",
        "/data/jamendo/00/400.low.mp3",
    ]
    output = tmp_path / "low.parquet"
    flags = [f"--{split}={path}" for split, path in paths.items()]
    assert (
        cli(["catalog", "jamendo", *flags, "--audio-root", "/j", "--audio-quality", "low", "--output", str(output)])
        == 0
    )
    table = pq.read_table(output).to_pylist()
    assert table[0]["uri"] == "/j/14/214.low.mp3" and sum(len(row["tags"]) for row in table) == 8


def test_catalog_command_writes_parquet_and_bad_input_exits_2(tmp_path):
    paths = write_jamendo(tmp_path)
    output = tmp_path / "jamendo.parquet"
    command = [
        sys.executable,
        "-m",
        "infra.cli",
        "catalog",
        "jamendo",
        "--train",
        paths["train"],
        "--valid",
        paths["valid"],
        "--test",
        paths["test"],
        "--audio-root",
        "/data",
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "5 tracks (test 1, train 3, valid 1)" in done.stdout
    assert sorted(row["split"] for row in pq.read_table(output).to_pylist()) == [
        "test",
        "train",
        "train",
        "train",
        "valid",
    ]
    (tmp_path / "broken.tsv").write_text("TRACK_ID\tPATH\n")
    command[command.index("--train") + 1] = str(tmp_path / "broken.tsv")
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2 and "expected the header" in done.stderr and "Traceback" not in done.stderr


def test_catalog_split_column_is_checked(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("track_id,uri,tags,split\na,/a.wav,x,valid\nb,/b.wav,,\n")
    assert [(t.track_id, t.split) for t in catalog.read_catalog(str(path))] == [("a", "valid"), ("b", None)]
    path.write_text("track_id,uri,tags,split\na,/a.wav,x,holdout\n")
    with pytest.raises(catalog.CatalogError, match="split must be one of"):
        catalog.read_catalog(str(path))


@pytest.mark.slow
def test_featurize_honours_the_catalog_split_column(tmp_path, write_audio):
    import json

    from pipelines import featurize

    splits = ["train", "train", "train", "valid", "test", ""]  # the last: no split, the hash decides
    lines = ["track_id,uri,tags,split"]
    for index, split in enumerate(splits):
        path = write_audio(f"t{index}.wav", seconds=3.5, sample_rate=16000, channels=1, seed=index)
        lines.append(f"t{index},{path},{'a' if index % 2 else 'b'},{split}")
    (tmp_path / "catalog.csv").write_text("\n".join(lines) + "\n")
    output = tmp_path / "features"
    featurize.run(["--catalog", str(tmp_path / "catalog.csv"), "--output", str(output), "--top-k", "4"])
    metadata = json.loads((output / "metadata.json").read_text())
    hashed = featurize.split_of("t5")
    expected = {name: splits[:5].count(name) + (hashed == name) for name in ("train", "valid", "test")}
    assert {name: counts["tracks"] for name, counts in metadata["splits"].items()} == expected
    assert {name: counts["examples"] for name, counts in metadata["splits"].items()} == expected  # one patch each
    assert metadata["split_source"] == "catalog split column (5 tracks; others by hash)"
