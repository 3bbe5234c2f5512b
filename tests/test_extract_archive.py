"""Archive extraction: whole folders or one member, and refusal of members that escape."""

import io
import tarfile
import zipfile

import pytest
from extract_archive import extract
from helpers import error_lines, run_script

from detbench.common import StageError


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_tar(path, members=(), links=()):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target, kind in links:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            archive.addfile(info)
    return path


def test_folder_is_extracted_without_its_prefix(tmp_path):
    archive = make_zip(tmp_path / "val2017.zip", {"val2017/a.jpg": b"a", "val2017/b.jpg": b"b", "other.txt": b"x"})
    output = tmp_path / "coco" / "val2017"
    assert extract(archive, "val2017", output) == 2
    assert sorted(p.name for p in output.iterdir()) == ["a.jpg", "b.jpg"]
    assert [p.name for p in output.parent.iterdir()] == ["val2017"]  # no temporary left


def test_single_member_from_tarball(tmp_path):
    archive = make_tar(tmp_path / "model.tar.gz", [("rfcn/frozen_inference_graph.pb", b"graph"), ("rfcn/ckpt", b"c")])
    output = tmp_path / "frozen_inference_graph.pb"
    extract(archive, "rfcn/frozen_inference_graph.pb", output)
    assert output.read_bytes() == b"graph"


def test_missing_member_is_named(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"annotations/captions_val2017.json": b"{}"})
    with pytest.raises(StageError, match="no member 'annotations/instances_val2017.json'"):
        extract(archive, "annotations/instances_val2017.json", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("evil", ["../escape.jpg", "val2017/../../escape.jpg", "/etc/escape.jpg"])
def test_zip_member_leaving_the_folder_is_refused(tmp_path, evil):
    archive = make_zip(tmp_path / "val2017.zip", {"val2017/a.jpg": b"a", evil: b"evil"})
    output = tmp_path / "out" / "val2017"
    with pytest.raises(StageError, match="leaves the target folder"):
        extract(archive, "val2017", output)
    assert not output.exists()
    assert not (tmp_path / "escape.jpg").exists()


def test_zip_symlink_out_of_the_folder_is_refused(tmp_path):
    archive_path = tmp_path / "links.zip"
    with zipfile.ZipFile(archive_path, "w") as archive:
        archive.writestr("val2017/a.jpg", b"a")
        link = zipfile.ZipInfo("val2017/passwd")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "../../../etc/passwd")
    with pytest.raises(StageError, match="points outside"):
        extract(archive_path, "val2017", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "members, links",
    [
        ([("../frozen_inference_graph.pb", b"x")], []),
        ([("/tmp/frozen_inference_graph.pb", b"x")], []),
        ([], [("rfcn/frozen_inference_graph.pb", "/etc/passwd", tarfile.SYMTYPE)]),
        ([], [("rfcn/frozen_inference_graph.pb", "../../outside", tarfile.SYMTYPE)]),
        ([("rfcn/a", b"x")], [("rfcn/frozen_inference_graph.pb", "../../../etc/passwd", tarfile.LNKTYPE)]),
    ],
)
def test_tar_members_and_links_leaving_the_folder_are_refused(tmp_path, members, links):
    archive = make_tar(tmp_path / "model.tar.gz", [("rfcn/ok.txt", b"ok"), *members], links)
    output = tmp_path / "frozen_inference_graph.pb"
    with pytest.raises(StageError, match="refusing"):
        extract(archive, "rfcn/ok.txt", output)
    assert not output.exists()


def test_not_an_archive(tmp_path):
    path = tmp_path / "val2017.zip"
    path.write_bytes(b"<html>404</html>")
    with pytest.raises(StageError, match="not a zip or tar archive"):
        extract(path, "val2017", tmp_path / "out")


def test_zip_with_a_bad_crc_is_named(tmp_path):
    archive = tmp_path / "val2017.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as writer:
        writer.writestr("val2017/a.jpg", b"\xff\xd8" + b"pixels" * 1000)
    data = bytearray(archive.read_bytes())
    data[data.index(b"pixels") + 10] ^= 0xFF
    archive.write_bytes(bytes(data))
    output = tmp_path / "out"
    with pytest.raises(
        StageError,
        match=r"val2017.zip: corrupt or truncated archive \(Bad CRC-32 for file 'val2017/a.jpg'\): download it again$",
    ):
        extract(archive, "val2017", output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val2017.zip"]


def test_truncated_tar_gz_is_named(tmp_path):
    import os

    archive = make_tar(tmp_path / "graph.tar.gz", [("rfcn/frozen_inference_graph.pb", os.urandom(300_000))])
    archive.write_bytes(archive.read_bytes()[:150_000])
    with pytest.raises(StageError, match=r"graph.tar.gz: corrupt or truncated archive \(.*\): download it again$"):
        extract(archive, "rfcn/frozen_inference_graph.pb", tmp_path / "graph.pb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.tar.gz"]


def test_full_disk_during_extraction_is_one_line_and_leaves_nothing(tmp_path, small_tmpfs):
    import os

    archive = make_zip(tmp_path / "val2017.zip", {f"val2017/{i}.jpg": os.urandom(400_000) for i in range(4)})
    disk = small_tmpfs("1m")
    with pytest.raises(StageError, match=r"No space left on device: free some space, then run again$"):
        extract(archive, "val2017", disk / "val2017")
    assert list(disk.iterdir()) == []


def test_read_only_folder_during_extraction_is_one_line(tmp_path, small_tmpfs):
    archive = make_zip(tmp_path / "val2017.zip", {"val2017/a.jpg": b"a"})
    folder = small_tmpfs(readonly=True)
    with pytest.raises(StageError, match=r"Read-only file system: choose a writable folder$"):
        extract(archive, "val2017", folder / "val2017")


def archive_with(kind, path, members):
    """A zip or tar.gz archive of `members` ({name: bytes})."""
    if kind == "zip":
        return make_zip(path.with_suffix(".zip"), members)
    return make_tar(path.with_suffix(".tar.gz"), list(members.items()))


# Each member climbs out of the folder it is extracted into once the prefix is dropped,
# though it may stay inside the archive's root.
@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize(
    "prefix, evil",
    [
        ("val2017", "val2017/../x"),
        ("val2017", "val2017/../annotations/instances_val2017.json"),
        ("val2017", "val2017/a/../../x"),
        ("val2017", "val2017\\..\\x"),
        ("val2017", "val2017/..\\x"),
        ("a/b/c", "a/b/c/../../../x"),
        ("a/b/c", "a/b/c/d/../../../../x"),
    ],
)
def test_member_climbing_out_through_its_prefix_is_refused(tmp_path, kind, prefix, evil):
    work = tmp_path / "work"
    good = work / "annotations" / "instances_val2017.json"
    good.parent.mkdir(parents=True)
    good.write_bytes(b"the real annotations")
    archive = archive_with(kind, tmp_path / "val2017", {f"{prefix}/a.jpg": b"a", evil: b"evil"})
    output = work / "coco" / "val2017"
    with pytest.raises(StageError, match="refusing member .*: it leaves the target folder"):
        extract(archive, prefix, output)
    assert good.read_bytes() == b"the real annotations"
    written = sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    assert written == ["annotations", "annotations/instances_val2017.json"]
    assert not (tmp_path / "x").exists()


def test_destination_is_checked_inside_the_output_folder(tmp_path):
    """The last guard: whatever the name checks let through, no path resolves outside."""
    from extract_archive import destination_inside

    assert destination_inside(tmp_path, "a/b.jpg", "z.zip") == (tmp_path / "a" / "b.jpg").resolve()
    for relative in ("../x", "a/../../x", "/etc/x", "", "."):
        with pytest.raises(StageError, match="leaves the target folder"):
            destination_inside(tmp_path, relative, "z.zip")


def test_links_inside_the_archive_are_allowed_and_not_extracted(tmp_path):
    archive = make_tar(
        tmp_path / "m.tar.gz", [("rfcn/a.pb", b"graph")], [("rfcn/latest", "../rfcn/a.pb", tarfile.SYMTYPE)]
    )
    assert extract(archive, "rfcn", tmp_path / "out") == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.pb"]


def test_truncated_zip_is_one_line_with_advice(tmp_path):
    archive = make_zip(tmp_path / "val2017.zip", {"val2017/a.jpg": bytes(range(256)) * 400})
    archive.write_bytes(archive.read_bytes()[:50_000])
    result = run_script("extract_archive.py", archive, "val2017", tmp_path / "out")
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {archive}: not a zip or tar archive, or a truncated one: download it again"
    ], result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_single_file_onto_a_folder_names_the_folder(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"annotations/instances_val2017.json": b"{}"})
    output = tmp_path / "instances_val2017.json"
    output.mkdir()
    result = run_script("extract_archive.py", archive, "annotations/instances_val2017.json", output)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"error: {output} is a folder, not a file: remove it or choose another output path"
    ], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "instances_val2017.json"]
