"""discover: class folders, unlabeled folders and CSV manifests, with links and odd names."""

from __future__ import annotations

import builtins
import csv
import os
from pathlib import Path

import pytest

from featurestore.sources import IMAGE_EXTENSIONS, Source, SourceError, discover


def touch(path: Path) -> Path:
    """An empty file: discovery never opens images, so content does not matter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def relpaths(source: Source) -> list[str]:
    """The images' relpaths, checking the invariants every source keeps."""
    keys = [image.relpath for image in source.images]
    assert keys == sorted(set(keys))  # sorted and unique
    assert not set(keys) & {rel for rel, _ in source.skipped}  # never both kept and skipped
    assert all(image.path.is_absolute() for image in source.images)
    return keys


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("path", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- folders --------------------------------------------------------------------------------


def test_class_folders(tiny_tree: Path) -> None:
    source = discover(tiny_tree)
    assert source.root == tiny_tree and source.root.is_absolute()
    assert source.class_names == ("cats", "dogs")
    assert len(source.images) == 12 and source.skipped == ()
    assert relpaths(source) == sorted(relpaths(source))
    first = source.images[0]
    assert first.relpath == "cats/cats_0.jpg" and first.label == "cats"
    assert first.path == tiny_tree / "cats" / "cats_0.jpg"
    assert {image.label for image in source.images[6:]} == {"dogs"}


def test_relative_source_gives_absolute_paths(tiny_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_tree.parent)
    source = discover(tiny_tree.name)
    assert source.root == tiny_tree
    assert all(image.path.is_absolute() and image.path.is_file() for image in source.images)


def test_nested_folders_take_their_class_folders_label(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "x" / "y" / "deep.png")
    touch(tmp_path / "b" / "top.jpg")
    touch(tmp_path / "c" / "nothing.txt")  # no image: no class (issue 14, item 9), unlike Keras
    source = discover(tmp_path)
    assert source.class_names == ("a", "b")
    assert [(i.relpath, i.label) for i in source.images] == [
        ("a/x/y/deep.png", "a"),
        ("b/top.jpg", "b"),
    ]


def test_extensions_hidden_entries_and_root_files(tmp_path: Path) -> None:
    for name in ["a.JPG", "b.Jpeg", "c.png", "d.bmp", "e.gif", "f.WEBP", "g.tiff", "h.txt", "i"]:
        touch(tmp_path / "cls" / name)
    touch(tmp_path / "cls" / ".hidden.jpg")
    touch(tmp_path / "cls" / ".cache" / "thumb.jpg")
    touch(tmp_path / ".git" / "x.jpg")  # a hidden folder is not a class either
    touch(tmp_path / "stray.jpg")  # an image next to class folders has no class
    source = discover(tmp_path)
    assert source.class_names == ("cls",)
    names = [Path(rel).name for rel in relpaths(source)]
    assert names == ["a.JPG", "b.Jpeg", "c.png", "d.bmp", "e.gif", "f.WEBP"]
    assert source.skipped == (("stray.jpg", "image directly in the root of a class-folder source"),)
    assert ".webp" in IMAGE_EXTENSIONS and ".tiff" not in IMAGE_EXTENSIONS


def test_unlabeled_when_asked_or_when_images_are_at_the_root(tmp_path: Path) -> None:
    touch(tmp_path / "cats" / "1.jpg")
    touch(tmp_path / "dogs" / "sub" / "2.jpg")
    unlabeled = discover(tmp_path, labels=None)
    assert unlabeled.class_names == ()
    assert [(i.relpath, i.label) for i in unlabeled.images] == [
        ("cats/1.jpg", None),
        ("dogs/sub/2.jpg", None),
    ]
    flat = tmp_path / "flat"
    touch(flat / "b.png")
    touch(flat / "a.jpg")
    source = discover(flat)
    assert source.class_names == () and relpaths(source) == ["a.jpg", "b.png"]
    assert {i.label for i in source.images} == {None}


def test_bad_labels_argument(tiny_tree: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        discover(tiny_tree, labels="folders")


def test_symlinked_file_and_folder_are_followed_not_resolved(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "far.jpg")
    touch(outside / "more" / "deeper.png")
    root = tmp_path / "root"
    touch(root / "cats" / "real.jpg")
    (root / "cats" / "linked.jpg").symlink_to(outside / "far.jpg")
    (root / "cats" / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "dogs").symlink_to(outside / "more", target_is_directory=True)  # a class via a link
    source = discover(root)
    assert source.class_names == ("cats", "dogs")
    assert [(i.relpath, i.label) for i in source.images] == [
        ("cats/linked.jpg", "cats"),
        ("cats/linked_dir/far.jpg", "cats"),
        ("cats/linked_dir/more/deeper.png", "cats"),
        ("cats/real.jpg", "cats"),
        ("dogs/deeper.png", "dogs"),
    ]
    assert source.images[0].path == root / "cats" / "linked.jpg"  # the link, as found
    assert source.images[4].path == root / "dogs" / "deeper.png"


def test_symlink_loops_end_and_are_reported(tmp_path: Path) -> None:
    touch(tmp_path / "cats" / "a" / "1.jpg")
    (tmp_path / "cats" / "a" / "up").symlink_to(tmp_path / "cats", target_is_directory=True)
    (tmp_path / "cats" / "self").symlink_to(".", target_is_directory=True)
    (tmp_path / "cats" / "root").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "dogs").symlink_to(tmp_path, target_is_directory=True)  # a class that is the root
    source = discover(tmp_path)
    assert relpaths(source) == ["cats/a/1.jpg"]
    assert dict(source.skipped) == {
        "cats/a/up": "symbolic link loop",
        "cats/root": "symbolic link loop",
        "cats/self": "symbolic link loop",
        "dogs": "symbolic link loop",
    }


def test_folder_reached_twice_without_a_loop_is_listed_twice(tmp_path: Path) -> None:
    touch(tmp_path / "shared" / "x.jpg")
    root = tmp_path / "root"
    for name in ["cats", "dogs"]:
        (root / name).mkdir(parents=True)
        (root / name / "shared").symlink_to(tmp_path / "shared", target_is_directory=True)
    source = discover(root)
    assert [(i.relpath, i.label) for i in source.images] == [
        ("cats/shared/x.jpg", "cats"),
        ("dogs/shared/x.jpg", "dogs"),
    ]


def test_broken_links_and_non_files_with_image_names_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path / "ok.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "pipe.png")
    source = discover(tmp_path)
    assert relpaths(source) == ["ok.jpg"]
    assert source.skipped == (
        ("broken.jpg", "broken symbolic link"),
        ("pipe.png", "not a regular file"),
    )


ODD_NAMES = ["with space.jpg", "ünïcödé 猫.png", 'quote\'s "q".jpg', "-leading-dash.jpg", "a,b.jpg"]


def test_odd_names(tmp_path: Path) -> None:
    for name in ODD_NAMES:
        touch(tmp_path / "odd class ✓" / name)
    source = discover(tmp_path)
    assert source.class_names == ("odd class ✓",)
    assert relpaths(source) == sorted(f"odd class ✓/{name}" for name in ODD_NAMES)
    assert all(image.path.is_file() for image in source.images)


def test_non_utf8_names_are_skipped_not_fatal(tmp_path: Path) -> None:
    base = os.fsencode(tmp_path)
    os.makedirs(os.path.join(base, b"cats"))
    os.makedirs(os.path.join(base, b"bad\xffclass"))
    for name in [b"cats/good.jpg", b"cats/bad\xfe.jpg", b"bad\xffclass/x.jpg"]:
        open(os.path.join(base, name), "wb").close()
    source = discover(tmp_path)
    assert source.class_names == ("cats",)  # a class name that cannot be stored is not one
    assert relpaths(source) == ["cats/good.jpg"]
    reason = "file name is not valid UTF-8"
    assert source.skipped == (("bad\\xffclass/x.jpg", reason), ("cats/bad\\xfe.jpg", reason))
    for rel, _ in source.skipped:
        rel.encode("utf-8")  # printable and storable


def test_discovery_opens_no_file(tiny_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"discover opened {args[0]}")

    monkeypatch.setattr(builtins, "open", no_open)
    assert len(discover(tiny_tree).images) == 12


# --- missing and empty sources --------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope: does not exist$"):
        discover(tmp_path / "nope")


@pytest.mark.parametrize("contents", [[], ["notes.txt"], ["cats/"], [".hidden.jpg"]])
def test_source_without_images(tmp_path: Path, contents: list[str]) -> None:
    for name in contents:
        (tmp_path / name).mkdir() if name.endswith("/") else touch(tmp_path / name)
    with pytest.raises(SourceError, match="no images found"):
        discover(tmp_path)


def test_source_whose_only_images_were_skipped(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(SourceError, match=r"no images found \(1 skipped, first: broken symbolic"):
        discover(tmp_path)


def test_a_file_that_is_not_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"not a folder or a \.csv manifest"):
        discover(touch(tmp_path / "a.jpg"))


# --- CSV manifests --------------------------------------------------------------------------


def test_manifest_relative_absolute_and_missing(tmp_path: Path) -> None:
    touch(tmp_path / "imgs" / "cat1.jpg")
    touch(tmp_path / "imgs" / "dog1.png")
    elsewhere = touch(tmp_path.parent / f"{tmp_path.name}_elsewhere" / "far.jpg")
    manifest = write_csv(
        tmp_path / "list.csv",
        [
            ["imgs/dog1.png", "dog"],
            ["./imgs/cat1.jpg", " cat "],
            [str(tmp_path / "imgs" / "dog1.png"), "dog"],  # absolute, same file and label: once
            [str(elsewhere), "cat"],
            ["imgs/missing.jpg", "cat"],
            ["imgs", "cat"],
            ["notes.txt", "cat"],
        ],
    )
    source = discover(manifest)
    assert source.root == tmp_path and len(relpaths(source)) == 3
    assert source.class_names == ("cat", "dog")
    assert [(i.relpath, i.label) for i in source.images] == sorted(
        [("imgs/cat1.jpg", "cat"), ("imgs/dog1.png", "dog"), (elsewhere.as_posix(), "cat")]
    )
    assert source.images[-1].path == tmp_path / "imgs" / "dog1.png"
    assert dict(source.skipped) == {
        "imgs/missing.jpg": "file not found",
        "imgs": "not an image extension ('')",
        "notes.txt": "not an image extension ('.txt')",
    }


def test_manifest_unlabeled_rows_columns_and_bom(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "b.jpg")
    touch(tmp_path / "c.jpg")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\ufeffpath, label ,extra\na.jpg,x,1\nb.jpg,,2\n", encoding="utf-8")
    source = discover(manifest)
    # A labeled manifest's row with an empty label is a failure (issue 14, item 9), not a row
    # without a label in a labeled store.
    assert [(i.relpath, i.label) for i in source.images] == [("a.jpg", "x")]
    assert source.skipped == (("b.jpg", "empty label (line 3)"),)
    assert source.class_names == ("x",)
    assert {i.label for i in discover(manifest, labels=None).images} == {None}
    write_csv(tmp_path / "paths.csv", [["c.jpg"]], header=("path",))
    assert discover(tmp_path / "paths.csv").images[0].label is None


def test_manifest_listing_a_file_with_two_labels_keeps_it_out(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "b.jpg")
    rows = [["a.jpg", "x"], ["b.jpg", "x"], ["./a.jpg", "y"], ["a.jpg", "x"]]
    source = discover(write_csv(tmp_path / "m.csv", rows))
    assert [(i.relpath, i.label) for i in source.images] == [("b.jpg", "x")]
    assert source.skipped == (("a.jpg", "listed with different labels (lines 2, 4, 5)"),)


def test_manifest_odd_names(tmp_path: Path) -> None:
    for name in ODD_NAMES:
        touch(tmp_path / name)
    source = discover(write_csv(tmp_path / "m.csv", [[name, "k"] for name in ODD_NAMES]))
    assert relpaths(source) == sorted(ODD_NAMES)
    assert all(image.path.is_file() for image in source.images)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,label\na.jpg,x\n", r"no 'path' column \(header: file,label\)"),
        ("", r"no 'path' column \(header: empty file\)"),
        ("path,label\n,x\n", "line 2 has an empty path"),
    ],
)
def test_malformed_manifest(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "m.csv").write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=match) as info:
        discover(tmp_path / "m.csv")
    assert str(info.value).startswith(str(tmp_path / "m.csv"))


def test_manifest_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_bytes(b"path,label\n\xff\xfe.jpg,x\n")
    with pytest.raises(SourceError, match="not UTF-8"):
        discover(tmp_path / "m.csv")


def test_manifest_listing_only_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no images found \(1 skipped, first: file not found"):
        discover(write_csv(tmp_path / "m.csv", [["gone.jpg", "x"]]))
